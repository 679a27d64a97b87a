"""XML syntax both ways: namespaces and limits, hardened parsing, escaping, timestamps.

Invariants:

* **Hostile input costs O(bytes), bounded.** :func:`parse_xml` checks, in this order and
  before libxml2 builds anything: the size (O(1)), any ``<!DOCTYPE``/``<!ENTITY`` (one
  ``bytes.find`` each; no DTD is ever read, so no entity is ever defined or expanded), and a
  UTF-16/32 byte-order mark; libxml2 then decodes UTF-8 whatever the document declares, and
  stops by itself at depth 256; one XPath existence test enforces ``max_depth``.
  :data:`HARDENED_PARSER_OPTIONS` are the options of every parser of untrusted XML, pull
  parsers included.
* **Output is always well-formed.** Every value goes through :func:`_text` or :func:`_attr`,
  which drop characters XML 1.0 forbids (C0 controls except tab/LF/CR, lone surrogates,
  U+FFFE/U+FFFF) and escape ``& < >`` (so ``]]>`` is harmless), plus ``"``, tab, LF and CR in
  attributes, and CR in text, so attribute normalisation and line-end normalisation give back
  exactly the value that was written.
* Timestamps are written as UTC with milliseconds and ``Z`` (``2009-11-20T20:41:19.243Z``);
  that form is read back by a fast path (:func:`_canonical_time`), anything ISO-8601-like
  by the general one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

from lxml import etree

from bulkops.errors import XmlError

__all__ = [
    "APP_NS",
    "ATOM_MEDIA_TYPE",
    "ATOM_NS",
    "CTCT_MEDIA_TYPE",
    "CTCT_NS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "HARDENED_PARSER_OPTIONS",
    "XML_DECLARATION",
    "format_time",
    "hardened_parser",
    "parse_time",
    "parse_xml",
    "strip_illegal_xml_chars",
]

ATOM_NS = "http://www.w3.org/2005/Atom"
CTCT_NS = "http://ws.constantcontact.com/ns/1.0/"
APP_NS = "http://www.w3.org/2007/app"
ATOM_MEDIA_TYPE = "application/atom+xml"
CTCT_MEDIA_TYPE = "application/vnd.ctct+xml"

#: The declaration :func:`document` prepends, as the real service wrote it.
XML_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>"

DEFAULT_MAX_BYTES = 1_048_576
DEFAULT_MAX_DEPTH = 100


#: The options every parser of untrusted XML uses (whole-document and pull parsers alike):
#: no entities, no DTD, no network, no huge trees, no recovery; comments, PIs and CDATA
#: wrappers dropped; input decoded as UTF-8.
HARDENED_PARSER_OPTIONS: dict[str, str | bool] = {
    "encoding": "utf-8",
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "attribute_defaults": False,
    "huge_tree": False,
    "recover": False,
    "collect_ids": False,
    "remove_comments": True,
    "remove_pis": True,
    "strip_cdata": True,
}


def hardened_parser() -> etree.XMLParser:
    """A new lxml parser that never reads a DTD, resolves an entity or touches the network.

    Options: ``resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
    dtd_validation=False, attribute_defaults=False, recover=False, collect_ids=False``;
    comments and processing instructions are dropped, CDATA becomes text, and the input is
    always decoded as UTF-8 (a declared encoding cannot switch it). Parsers are not
    thread-safe: make one per parse, or per thread.

    Returns:
        an ``lxml.etree.XMLParser``.
    """
    return etree.XMLParser(**HARDENED_PARSER_OPTIONS)


_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


@lru_cache(maxsize=8)
def _too_deep_xpath(max_depth: int) -> str:
    # "/*/*/…" with max_depth+1 steps selects an element nested deeper than max_depth; libxml2
    # evaluates it level by level, O(elements), in C.
    return "boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")"


def parse_xml(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> etree._Element:
    """Parse untrusted XML into its root element.

    Args:
        data: the document, UTF-8 (a UTF-8 byte-order mark is allowed).
        max_bytes: reject longer documents before looking at them.
        max_depth: reject documents nesting elements deeper than this (the root is depth 1).
            libxml2 never goes beyond 256 whatever this says.

    Returns:
        the root ``lxml.etree._Element``.

    Raises:
        XmlError: the document is longer than ``max_bytes``; contains a DOCTYPE or ENTITY
            declaration; is not UTF-8 (UTF-16/32, invalid sequences, NUL); is malformed or
            not namespace-well-formed; or nests deeper than ``max_depth``.
    """
    if len(data) > max_bytes:
        raise XmlError(f"XML document of {len(data)} bytes exceeds the limit of {max_bytes}")
    # Like defusedxml's forbid_dtd, but before parsing: a DOCTYPE can only be spelled this way
    # in UTF-8, and entities can only be declared inside one.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmlError("XML with a DOCTYPE or ENTITY declaration is not accepted")
    if data.startswith(_UTF16_32_BOMS):
        raise XmlError("XML must be encoded as UTF-8")
    parser = hardened_parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"malformed XML: {exc}") from exc
    except (ValueError, TypeError) as exc:  # lxml's complaints about the input object
        raise XmlError(f"unparseable XML: {exc}") from exc
    if root is None:  # pragma: no cover - recover=False never yields an empty tree
        raise XmlError("empty XML document")
    if root.getroottree().docinfo.doctype:  # pragma: no cover - rejected above
        raise XmlError("XML with a DOCTYPE declaration is not accepted")
    if root.xpath(_too_deep_xpath(max_depth)):
        raise XmlError(f"XML nests elements deeper than {max_depth} levels")
    return root


_ZERO = timedelta(0)

_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)


def format_time(dt: datetime) -> str:
    """The wire form of a moment: UTC, milliseconds (truncated), ``Z``.

    ``format_time(datetime(2009, 11, 20, 20, 41, 19, 243999, tzinfo=UTC))
    == "2009-11-20T20:41:19.243Z"``. A naive datetime is taken to be UTC already.
    """
    offset = dt.utcoffset()
    if offset is not None and offset != _ZERO:
        dt = dt.astimezone(UTC)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


# The form every timestamp on the wire has (format_time's): datetime.fromisoformat reads it
# in ~0.1 µs, a tenth of the general path below, and to the same value (UTC, milliseconds).
# Hours are 00-23 here: some Pythons' fromisoformat accept 24:00 as the next midnight.
_CANONICAL_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z"
).fullmatch
_fromisoformat = datetime.fromisoformat


def _canonical_time(text: str) -> datetime | None:
    """``text`` read by the fast path when it has the wire's own form; None otherwise (also
    for an impossible date such as 2023-02-30: the general path then says what is wrong)."""
    if _CANONICAL_TIME(text) is None:
        return None
    try:
        return _fromisoformat(text)
    except ValueError:
        return None


def parse_time(text: str) -> datetime:
    """Parse a wire timestamp into an aware UTC datetime.

    Accepts ``2009-11-20T20:41:19.243Z``, any number of fraction digits (beyond microseconds
    they are dropped), no fraction, no seconds, offsets (``+05:00``, ``+0500``, ``-07``), no
    zone at all (taken as UTC), and a bare date (``2008-04-16``, midnight UTC), with
    surrounding whitespace.

    Raises:
        ValueError: anything else, or an impossible date or time.
    """
    fast = _canonical_time(text)
    if fast is not None:
        return fast
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = UTC
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or "0")
        if minutes > 59:
            raise ValueError(f"bad UTC offset in {text!r}")
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-delta if zone[0] == "-" else delta)  # ValueError when >= 24 h
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
        return moment if tz is UTC else moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"timestamp out of range: {text!r}") from exc


# Characters outside XML 1.0's Char production that a Python str can hold.
_ILLEGAL = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
_ILLEGAL_RE = re.compile(f"[{_ILLEGAL}]")
_TEXT_SPECIAL_RE = re.compile(f"[{_ILLEGAL}&<>\r]")
_ATTR_SPECIAL_RE = re.compile(f'[{_ILLEGAL}&<>"\t\n\r]')


def strip_illegal_xml_chars(value: str) -> str:
    """``value`` without the characters XML 1.0 cannot carry (C0 controls other than tab,
    LF and CR; lone surrogates; U+FFFE and U+FFFF). The builders apply it to every value."""
    return _ILLEGAL_RE.sub("", value)


def _text(value: str) -> str:
    """Escape element content; CR becomes ``&#13;`` so a parser does not turn it into LF."""
    if _TEXT_SPECIAL_RE.search(value) is None:
        return value
    return (
        _ILLEGAL_RE.sub("", value)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#13;")
    )


def _attr(value: str) -> str:
    """Escape a double-quoted attribute value so normalisation gives back ``value``."""
    if _ATTR_SPECIAL_RE.search(value) is None:
        return value
    return (
        _ILLEGAL_RE.sub("", value)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )
