"""The pieces every record parser shares: local names, typed values, an entry's Atom parts.

Invariants:

* **Prefix- and namespace-agnostic**: elements are matched by local name (:func:`local_name`,
  :func:`_children`); element order never matters and unknown elements are ignored.
* **Record parsers run once per feed entry**, so these keep per-process caches of what
  every entry of a feed repeats: tag → local name (:data:`LOCAL_NAMES`), and per URI prefix
  the answer of ``resource_id_from_uri`` (:func:`_resource_id`; the member edit-link pattern
  has its own in :mod:`~bulkops.wire.atom.lists`), each equal to the uncached answer
  (tests/test_atom.py compares them). The caches are bounded in entries and in key length,
  whatever the input.
* Bad values raise :class:`~bulkops.errors.XmlError` naming the element.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import urljoin

from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.atom.syntax import _canonical_time, parse_time, parse_xml
from bulkops.wire.model import Link
from bulkops.wire.uris import resource_id_from_uri

__all__ = ["LOCAL_NAMES", "links_of", "local_name", "local_name_of", "resolve_href"]


def local_name(el: etree._Element) -> str:
    """The local name of an element (``"entry"`` for ``{http://www.w3.org/2005/Atom}entry``),
    ``""`` for comments and processing instructions."""
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag[tag.rfind("}") + 1 :]


# Clark tag ("{ns}name") -> local name; "" for comments and processing instructions (whose
# .tag is a function). Tags repeat in every entry, so this replaces a slice per child by one
# dict hit. Bounded, as hostile input may use any number of names, of any length: past
# _LOCAL_NAMES_MAX tags, and for tags longer than _CACHED_KEY_MAX, names are computed but
# not kept (at most ~2 MB).
LOCAL_NAMES: dict[object, str] = {}
_LOCAL_NAMES_MAX = 4096
_CACHED_KEY_MAX = 256


def local_name_of(tag: object) -> str:
    """The local name of a tag (``""`` for a comment's or processing instruction's), kept in
    :data:`LOCAL_NAMES`: the cache's miss path. Hot loops look a tag up in
    ``LOCAL_NAMES`` first and call this only when it is missing."""
    if isinstance(tag, str):
        name = tag[tag.rfind("}") + 1 :]
        if len(tag) > _CACHED_KEY_MAX:
            return name
    else:
        name = ""
    if len(LOCAL_NAMES) < _LOCAL_NAMES_MAX:
        LOCAL_NAMES[tag] = name
    return name


def _children(el: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    """(local name, element) of the element children, in document order."""
    names = LOCAL_NAMES
    for child in el:
        tag = child.tag
        local = names.get(tag)
        if local is None:
            local = local_name_of(tag)
        if local:
            yield local, child


def _child(el: etree._Element, name: str) -> etree._Element | None:
    for local, child in _children(el):
        if local == name:
            return child
    return None


def _string(el: etree._Element) -> str:
    """All text inside an element (children's text too, for tolerance)."""
    if len(el):
        return "".join(el.itertext())
    text = el.text
    return "" if text is None else text


def _squeeze(value: str) -> str:
    # URIs carry no whitespace; the docs samples wrap long ids onto two lines, which
    # attribute normalisation turns into spaces (contacts-feed.xml).
    if value.isprintable() and " " not in value:
        return value  # (every character str.split() splits at is unprintable, or " ")
    return "".join(value.split())


_XML_WS = " \t\r\n"


def links_of(el: etree._Element) -> dict[str, str]:
    """``rel -> href`` of the element's direct ``<link>`` children.

    A link without ``rel`` is ``"alternate"`` (RFC 4287); the first link of each rel wins;
    hrefs are returned as written (possibly relative or empty), trimmed.
    """
    links: dict[str, str] = {}
    for local, child in _children(el):
        if local == "link":
            rel = (child.get("rel") or "alternate").strip() or "alternate"
            links.setdefault(rel, (child.get("href") or "").strip())
    return links


def _link_tuple(el: etree._Element) -> tuple[Link, ...]:
    found = []
    for local, child in _children(el):
        if local == "link":
            rel = (child.get("rel") or "alternate").strip() or "alternate"
            found.append(Link(rel=rel, href=(child.get("href") or "").strip()))
    return tuple(found)


def resolve_href(document_url: str, href: str) -> str | None:
    """Where a link points, as an absolute URL; None for an empty href.

    Absolute hrefs are returned as they are (``http://`` ids included: mapping them to
    https is the caller's business); root-relative (``/ws/…``) and document-relative
    (``lists?next=6``) ones are resolved against ``document_url``, the URL the document was
    fetched from (RFC 3986). Whitespace inside the href (line-wrapped samples) is removed.
    """
    cleaned = _squeeze(href)
    if not cleaned:
        return None
    return urljoin(document_url, cleaned)


def _time(text: str, what: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise XmlError(f"bad timestamp in <{what}>: {text.strip()[:40]!r}") from exc


def _optional_time_of(el: etree._Element, what: str) -> datetime | None:
    text = el.text
    if text is not None and not len(el):
        fast = _canonical_time(text)  # parse_time's fast path, without its other calls
        if fast is not None:
            return fast
    text = _string(el).strip(_XML_WS)
    return _time(text, what) if text else None


_INT_RE = re.compile(r"[+-]?[0-9]+")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _int(text: str, what: str) -> int:
    stripped = text.strip(_XML_WS)
    if _INT_RE.fullmatch(stripped) is None or len(stripped) > 18:
        raise XmlError(f"bad integer in <{what}>: {stripped[:40]!r}")
    return int(stripped)


def _optional_int(el: etree._Element, what: str) -> int | None:
    text = _string(el).strip(_XML_WS)
    return _int(text, what) if text else None


def _optional_bool(el: etree._Element, what: str) -> bool | None:
    text = _string(el).strip(_XML_WS)
    if not text:
        return None
    value = _BOOLS.get(text.lower())
    if value is None:
        raise XmlError(f"bad boolean in <{what}>: {text[:40]!r}")
    return value


class _Entry:
    """The Atom parts of one ``<entry>``, gathered in one pass over its children.

    This runs once per entry of every feed (a million times for a million members), so it
    does the least it can: each child is told by a dict hit on its tag, the title is read
    only when a record asks for it, and links stay ``(rel, href)`` pairs.
    """

    __slots__ = ("_title", "id", "kind", "link_list", "links", "payload", "updated")

    def __init__(self, entry: etree._Element) -> None:
        names = LOCAL_NAMES
        tag = entry.tag
        if (names.get(tag) or local_name_of(tag)) != "entry":
            raise XmlError(f"expected an <entry>, found <{local_name(entry) or '?'}>")
        self.id: str | None = None
        self._title: etree._Element | None = None
        self.updated: datetime | None = None
        self.links: dict[str, str] = {}
        self.link_list: list[tuple[str, str]] = []
        self.payload: etree._Element | None = None
        self.kind = ""  # the payload's local name
        for child in entry:
            tag = child.tag
            local = names.get(tag)
            if local is None:
                local = local_name_of(tag)
            if local == "id":
                if self.id is None:
                    self.id = _squeeze(_string(child))
            elif local == "updated":
                if self.updated is None:
                    self.updated = _optional_time_of(child, "updated")
            elif local == "link":
                rel = child.get("rel")
                rel = (rel.strip() or "alternate") if rel else "alternate"
                href = child.get("href")
                href = href.strip() if href else ""
                if rel not in self.links:
                    self.links[rel] = href
                self.link_list.append((rel, href))
            elif local == "title":
                if self._title is None:
                    self._title = child
            elif local == "content" and self.payload is None:
                for sub in child:  # the first element child
                    tag = sub.tag
                    local = names.get(tag)
                    if local is None:
                        local = local_name_of(tag)
                    if local:
                        self.payload, self.kind = sub, local
                        break

    @property
    def title(self) -> str:
        """The text of the first ``<title>``; ``""`` without one."""
        return "" if self._title is None else _string(self._title)

    def required_payload(self, kind: str) -> etree._Element:
        payload = self.payload
        if payload is None or self.kind != kind:
            raise XmlError(f"entry has no {kind} payload")
        return payload

    def required_updated(self) -> datetime:
        if self.updated is None:
            raise XmlError("entry has no <updated>")
        return self.updated

    def resource_id(self, payload: etree._Element, collection: str) -> str:
        """The resource id from the entry id, else the payload id, else the edit link."""
        uri = self.id  # squeezed already
        if uri:
            found = _resource_id(uri, collection)
            if found is not None:
                return found
        for uri in (payload.get("id"), self.links.get("edit")):
            if uri:
                found = _resource_id(_squeeze(uri), collection)
                if found is not None:
                    return found
        raise XmlError(f"entry has no id of a {collection} resource")


_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # wire.uris's: what an id may be
_CACHE_MAX = 1024  # entries of each per-prefix cache below (a hostile feed has any number;
# prefixes longer than _CACHED_KEY_MAX are not kept either)
# (collection, a URI up to its last "/") -> whether resource_id_from_uri reads an id in the
# last segment after it. Every entry of a feed shares that prefix, so urlsplit runs once
# per feed instead of once per entry (~2 µs).
_ID_HEADS: dict[tuple[str, str], bool] = {}


def _resource_id(uri: str, collection: str) -> str | None:
    """``wire.uris.resource_id_from_uri(uri, collection)`` for a squeezed URI.

    When the part before the last ``/`` has no query or fragment, and the last segment
    ``tail`` is an id (``_ID_RE``), the answer is ``tail`` exactly when it is ``"0"`` for
    the same URI ending in ``/0``: such a segment holds none of the characters ``urlsplit``
    or the path rules treat apart (``/ ? # [ ] :``, whitespace), so it splits the same way
    and ends the path. tests/test_atom.py compares the two on generated URIs.
    """
    head, _, tail = uri.rpartition("/")
    key = (collection, head)
    ok = _ID_HEADS.get(key)
    if ok is None:
        ok = (
            "?" not in head
            and "#" not in head
            and resource_id_from_uri(head + "/0", collection) == "0"
        )
        if len(_ID_HEADS) < _CACHE_MAX and len(head) <= _CACHED_KEY_MAX:
            _ID_HEADS[key] = ok
    if ok and _ID_RE.fullmatch(tail) is not None:
        return tail
    return resource_id_from_uri(uri, collection)


def _first_children(el: etree._Element) -> dict[str, etree._Element]:
    """Element children by local name; the first of each name wins."""
    found: dict[str, etree._Element] = {}
    names = LOCAL_NAMES
    for child in el:
        tag = child.tag
        local = names.get(tag)
        if local is None:
            local = local_name_of(tag)
        if local and local not in found:
            found[local] = child
    return found


def _request_payload(data: bytes, kind: str, max_bytes: int) -> etree._Element:
    root = parse_xml(data, max_bytes=max_bytes)
    if local_name(root) != "entry":
        raise XmlError(f"expected an <entry> with a {kind}, found <{local_name(root)}>")
    content = _child(root, "content")
    payload = None if content is None else _child(content, kind)
    if payload is None:
        raise XmlError(f"the entry has no <content> with a {kind}")
    return payload


def _ref_uri(el: etree._Element) -> str:
    """The URI a nested reference names: its ``id``, else its self link (whitespace removed)."""
    return _squeeze(el.get("id") or "") or _squeeze(links_of(el).get("self", ""))


def _id_or_uri(uri: str, collection: str) -> str:
    return resource_id_from_uri(uri, collection) or uri
