"""The pieces every entry builder shares: entry and content openings, optional elements,
the ``<source>`` of an entry shown inside a feed, and :func:`document`.

Builders render records as ``str`` fragments with f-strings, so the server can stream a feed
entry by entry; every value goes through ``syntax._text`` or ``syntax._attr``.
"""

from __future__ import annotations

from datetime import datetime

from bulkops.wire.atom.syntax import (
    ATOM_NS,
    CTCT_MEDIA_TYPE,
    XML_DECLARATION,
    _attr,
    _text,
    format_time,
)
from bulkops.wire.model import Base, FeedMeta

__all__ = ["document"]

_ENTRY_OPEN = f'<entry xmlns="{ATOM_NS}">'
_CONTENT_OPEN = f'<content type="{CTCT_MEDIA_TYPE}">'
_AUTHOR_CC = "<author><name>Constant Contact</name></author>"


def _element(name: str, value: str) -> str:
    return f"<{name}>{_text(value)}</{name}>"


def _optional_time(name: str, value: datetime | None) -> str:
    return "" if value is None else f"<{name}>{format_time(value)}</{name}>"


def _optional_text(name: str, value: str | None) -> str:
    return "" if value is None else f"<{name}>{_text(value)}</{name}>"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _source(base: Base, meta: FeedMeta | None) -> str:
    if meta is None:
        return ""
    feed_id = _attr(base.id(meta.id_path))
    return (
        f'<source><id>{feed_id}</id><title type="text">{_text(meta.title)}</title>'
        f'<link href="{feed_id}" /><link href="{feed_id}" rel="self" />'
        f"<author><name>{_text(meta.author)}</name></author>"
        f"<updated>{format_time(meta.updated)}</updated></source>"
    )


def document(fragment: str) -> bytes:
    """A complete UTF-8 document: the XML declaration, a newline, then ``fragment``."""
    return (XML_DECLARATION + "\n" + fragment).encode("utf-8")


_ATOM_SELF = f'<link xmlns="{ATOM_NS}" href="{{href}}" rel="self" />'


def _self_ref(base: Base, element: str, suffix: str, inner: str = "") -> str:
    """``<{element} id="{abs}"><link … rel="self" />{inner}</{element}>`` (a nested reference)."""
    return (
        f'<{element} id="{_attr(base.id(suffix))}">'
        f"{_ATOM_SELF.format(href=_attr(base.href(suffix)))}{inner}</{element}>"
    )
