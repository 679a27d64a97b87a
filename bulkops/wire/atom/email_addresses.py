"""The account's e-mail addresses (spec §9, settings): the entry and its record parser."""

from __future__ import annotations

from lxml import etree

from bulkops.wire.atom.reading import _XML_WS, _Entry, _first_children, _optional_time_of, _string
from bulkops.wire.atom.syntax import CTCT_NS, _attr, _text, format_time
from bulkops.wire.atom.writing import (
    _AUTHOR_CC,
    _CONTENT_OPEN,
    _ENTRY_OPEN,
    _optional_time,
    _source,
)
from bulkops.wire.model import AccountEmail, Base, FeedMeta

__all__ = ["email_address_entry", "email_address_from_entry"]


def email_address_entry(base: Base, email: AccountEmail, *, source: FeedMeta | None = None) -> str:
    """An ``Email`` entry of ``settings/emailaddresses`` (``settings-emailaddresses.xml``,
    ``settings-emailaddress-entry.xml``; spec §9).

    The title is the address; ``VerifiedTime`` is omitted while None (a ``Pending`` address).
    """
    suffix = f"settings/emailaddresses/{email.id}"
    uri = _attr(base.id(suffix))
    address = _text(email.email)
    return (
        f'{_ENTRY_OPEN}<link href="{_attr(base.href(suffix))}" rel="edit" />'
        f'<id>{uri}</id><title type="text">{address}</title>'
        f"<updated>{format_time(email.updated)}</updated>{_AUTHOR_CC}{_CONTENT_OPEN}"
        f'<Email xmlns="{CTCT_NS}" id="{uri}"><EmailAddress>{address}</EmailAddress>'
        f"<Status>{_text(email.status)}</Status>"
        f"{_optional_time('VerifiedTime', email.verified_time)}</Email></content>"
        f"{_source(base, source)}</entry>"
    )


def email_address_from_entry(el: etree._Element) -> AccountEmail:
    """The :class:`AccountEmail` of a ``settings/emailaddresses`` ``<entry>`` element.

    ``EmailAddress`` defaults to the entry title.

    Raises:
        XmlError: not an entry, no ``Email`` payload, no address id, no ``updated``, or a
            bad ``VerifiedTime``.
    """
    return _email_record(_Entry(el))


def _email_record(entry: _Entry) -> AccountEmail:
    payload = entry.required_payload("Email")
    values = _first_children(payload)
    address, status, verified = (
        values.get(key) for key in ("EmailAddress", "Status", "VerifiedTime")
    )
    return AccountEmail(
        id=entry.resource_id(payload, "emailaddresses"),
        email=entry.title.strip(_XML_WS) if address is None else _string(address).strip(_XML_WS),
        status="" if status is None else _string(status).strip(_XML_WS),
        updated=entry.required_updated(),
        verified_time=None if verified is None else _optional_time_of(verified, "VerifiedTime"),
    )
