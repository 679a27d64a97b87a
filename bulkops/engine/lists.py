"""Contact lists by name or id: lookup, and creation that survives a lost answer."""

from __future__ import annotations

import time
from collections.abc import Sequence

import attrs
from lxml import etree

from bulkops.engine.client import Client
from bulkops.errors import ConfigError, OutcomeUnknown, TransportError
from bulkops.wire.atom.lists import list_from_entry
from bulkops.wire.atom.syntax import ATOM_NS, CTCT_NS
from bulkops.wire.model import ContactList
from bulkops.wire.uris import SYSTEM_LISTS

__all__ = ["ResolvedList", "all_lists", "resolve_lists"]

# A list POST whose answer was lost is looked for, then sent again, this often.
_MAX_POSTS = 6


@attrs.frozen(kw_only=True)
class ResolvedList:
    """A list the run works on."""

    id: str
    name: str
    uri: str


async def all_lists(client: Client) -> list[ContactList]:
    """Every list of the account (the lists feed, all pages)."""
    found: list[ContactList] = []
    async for page in client.iter_feed("lists", list_from_entry):
        found.extend(page)
    return found


def _list_request(name: str) -> bytes:
    entry = etree.Element(f"{{{ATOM_NS}}}entry", nsmap={None: ATOM_NS})
    etree.SubElement(entry, f"{{{ATOM_NS}}}id").text = "data:,"
    etree.SubElement(entry, f"{{{ATOM_NS}}}title")
    etree.SubElement(entry, f"{{{ATOM_NS}}}author")
    etree.SubElement(entry, f"{{{ATOM_NS}}}updated").text = time.strftime("%Y-%m-%d")
    content = etree.SubElement(entry, f"{{{ATOM_NS}}}content", type="application/vnd.ctct+xml")
    payload = etree.SubElement(content, f"{{{CTCT_NS}}}ContactList", nsmap={None: CTCT_NS})
    etree.SubElement(payload, f"{{{CTCT_NS}}}OptInDefault").text = "false"
    etree.SubElement(payload, f"{{{CTCT_NS}}}Name").text = name
    etree.SubElement(payload, f"{{{CTCT_NS}}}SortOrder").text = "99"
    return bytes(etree.tostring(entry, xml_declaration=True, encoding="UTF-8"))


async def _create_list(client: Client, name: str) -> ContactList:
    """Create a list; when the answer is lost, look for it before trying again."""
    for _ in range(_MAX_POSTS):
        try:
            return await client.post_entry("lists", _list_request(name), list_from_entry)
        except OutcomeUnknown:
            made = [lst for lst in await all_lists(client) if lst.name == name]
            if made:
                return made[0]
    raise TransportError(f"could not create list {name!r}: answers kept getting lost")


def _named(existing: Sequence[ContactList], spec: str) -> ContactList | None:
    named = [lst for lst in existing if lst.name == spec]
    if not named:
        named = [lst for lst in existing if lst.name.casefold() == spec.casefold()]
    if len(named) > 1:
        raise ConfigError(f"list name {spec!r} is ambiguous; give its id")
    return named[0] if named else None


async def resolve_lists(
    client: Client, specs: Sequence[str], *, create: bool, allow_system: bool = False
) -> list[ResolvedList]:
    """Find the lists named by ``specs`` (names or ids); create missing names if allowed.

    Raises:
        ConfigError: a list does not exist (and ``create`` is false), a name is ambiguous,
            or a system list is named where it cannot be used.
    """
    if not specs:
        raise ConfigError("name at least one list (`lists`)")
    existing = await all_lists(client)
    by_id = {lst.id: lst for lst in existing}
    resolved: list[ResolvedList] = []
    for spec in specs:
        spec = spec.strip()
        match = by_id.get(spec) or _named(existing, spec)
        if match is None:
            if not create:
                names = ", ".join(
                    sorted(lst.name for lst in existing if lst.id not in SYSTEM_LISTS)
                )
                raise ConfigError(
                    f"no list {spec!r} (`create_lists` creates it); lists: {names or 'none'}"
                )
            match = await _create_list(client, spec)
        if match.id in SYSTEM_LISTS and not allow_system:
            raise ConfigError(f"the system list {match.name!r} cannot be used here")
        resolved.append(
            ResolvedList(id=match.id, name=match.name, uri=client.url(f"lists/{match.id}"))
        )
    return resolved
