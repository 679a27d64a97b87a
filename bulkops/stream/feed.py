"""An incremental Atom feed decoder: feed bytes in, records out, the ``next`` link early.

:class:`FeedDecoder` follows the decoder protocol of :mod:`bulkops.stream`: ``decode(data)``
for each piece of a feed page as it arrives, then ``flush()`` once at the end. It hands back
the record of every ``<entry>`` as soon as its end tag has been parsed, and exposes the
feed's ``next`` link as soon as it has been read, so a walker can request the next page
while this one is still arriving.

Invariants:

* **Same answer as a whole-document parse.** For every split of a document into pieces,
  the records returned by all the ``decode`` calls and ``flush``, in order, equal
  ``wire.atom.feeds.parse_feed(document).entries``, and :attr:`FeedDecoder.links` equals its
  first-link-per-rel map (``wire.atom.reading.links_of`` of the root): each top-level ``<entry>``
  goes through ``wire.atom.feeds.record_from_entry``, the very function ``parse_feed`` uses.
  Links count wherever they are among the feed's children (before, between or after the
  entries); the first link of each ``rel`` wins. tests/test_stream_feed.py checks it with
  hypothesis (whole, every split, one byte at a time).
* **Constant memory.** lxml's pull parser builds only what has not been consumed: when an
  entry ends, its record is made, the element is cleared and every sibling before it is
  deleted; so the tree holds the feed header, the last cleared entry and what the parser
  has read ahead of the events (at most one 64 KiB slice). Input given in bigger pieces is
  fed in 64 KiB slices. The bytes between two finished entries (the header, one entry,
  anything else) are bounded by ``max_entry_bytes``; beyond it the feed is refused.
* **Hardened like** ``wire.atom.syntax.parse_xml``: no DTD is loaded, no entity resolved, no network
  touched, ``huge_tree`` is off (libxml2 bounds depth at 256 and text nodes at 10 MB); any
  ``<!DOCTYPE`` or ``<!ENTITY`` in the byte stream, across piece boundaries too, and a
  UTF-16/32 byte-order mark are refused before the parser sees them; input is decoded as
  UTF-8 whatever it declares. Comments, processing instructions and CDATA markers go.
* Per entry the decoder adds only two tag-filtered parser events and a constant amount of
  bookkeeping to ``record_from_entry``; it never rescans what it has already read.
* After an error the decoder is spent: every later call raises the same error.

Pure: no IO, no clock. Errors are :class:`~bulkops.errors.XmlError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.atom.feeds import record_from_entry
from bulkops.wire.atom.reading import links_of, local_name, resolve_href
from bulkops.wire.atom.syntax import HARDENED_PARSER_OPTIONS
from bulkops.wire.model import FeedEntry

__all__ = ["DEFAULT_MAX_ENTRY_BYTES", "FEED_SLICE_BYTES", "FeedDecoder"]

#: The pull parser is fed at most this many bytes at a time (the fastest size, design.md §4).
FEED_SLICE_BYTES = 64 * 1024
#: Default bound on the bytes between two finished entries (activity entries with 40,000
#: row errors are a few MiB).
DEFAULT_MAX_ENTRY_BYTES = 64 * 1024 * 1024

_FORBIDDEN = (b"<!DOCTYPE", b"<!ENTITY")
_OVERLAP = max(len(token) for token in _FORBIDDEN) - 1
_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_BOM_PROBE = max(len(bom) for bom in _BOMS)


def _is_entry(tag: str) -> bool:
    return tag.endswith("}entry") or tag == "entry"


def _pull_parser() -> etree.XMLPullParser:
    """A hardened pull parser reporting the start and end of ``feed`` and ``entry`` only.

    The options are those of ``wire.atom.syntax.hardened_parser``; the tag filter keeps events
    (Python objects) to two per entry whatever the entry holds.
    """
    return etree.XMLPullParser(
        events=("start", "end"),
        tag=("{*}feed", "{*}entry"),
        **HARDENED_PARSER_OPTIONS,
    )


class FeedDecoder:
    """Decode one Atom feed page incrementally into records.

    Args:
        list_id: the list whose members feed this is; passed to ``record_from_entry`` for
            member entries whose edit link names no list.
        document_url: the URL the page was fetched from, to resolve relative links in
            :attr:`next_url` (``lists?next=6``, ``/ws/...``). Without it, :attr:`next_url`
            is the href as written.
        max_entry_bytes: the most bytes accepted between two finished entries.
    """

    def __init__(
        self,
        *,
        list_id: str | None = None,
        document_url: str | None = None,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        self._list_id = list_id
        self._document_url = document_url
        self._max_entry_bytes = max_entry_bytes
        self._parser = _pull_parser()
        self._root: etree._Element | None = None
        self._current: etree._Element | None = None  # the top-level entry being read
        self._shell: etree._Element | None = None  # the last finished (cleared) entry
        self._entry_depth = 0  # entry elements open (a hostile feed may nest them)
        self._links: dict[str, str] = {}
        self._head: bytes | None = b""  # first bytes, held until a BOM is ruled out; then None
        self._tail = b""  # the last bytes fed, to find forbidden tokens across pieces
        self._pending = 0  # bytes fed since the last finished entry
        self._entries = 0
        self._bytes = 0
        self._finished = False
        self._error: XmlError | None = None

    # -- what has been read ------------------------------------------------------------------

    @property
    def links(self) -> Mapping[str, str]:
        """The feed's links read so far, ``rel -> href`` as written (first of each rel)."""
        return MappingProxyType(self._links)

    @property
    def next_href(self) -> str | None:
        """The ``next`` link's href as written, once read; None until then or without one."""
        return self._links.get("next")

    @property
    def next_url(self) -> str | None:
        """The ``next`` link resolved against ``document_url`` (absolute, ``/ws/…`` and
        relative hrefs alike); None when not read (yet), and for an empty href, which would
        only name this page again.

        After :meth:`flush`, None means this is the last page.
        """
        href = self._links.get("next")
        if href is None:
            return None
        if self._document_url is None:
            return "".join(href.split()) or None
        return resolve_href(self._document_url, href)

    @property
    def entries(self) -> int:
        """Records returned so far."""
        return self._entries

    @property
    def bytes_fed(self) -> int:
        """Bytes given to :meth:`decode` so far."""
        return self._bytes

    @property
    def finished(self) -> bool:
        """True once :meth:`flush` has returned."""
        return self._finished

    # -- the protocol ------------------------------------------------------------------------

    def decode(self, data: bytes) -> list[FeedEntry]:
        """Feed the next piece of the document; return the records it completed.

        Raises:
            XmlError: the feed is malformed or hostile, its root is not ``<feed>``, an entry
                is rejected by its record parser, the bytes between two entries exceed
                ``max_entry_bytes``, or the decoder was flushed or failed before.
        """
        self._check_usable()
        self._bytes += len(data)
        records: list[FeedEntry] = []
        try:
            if self._head is not None:
                data = self._take_head(data)
            for start in range(0, len(data), FEED_SLICE_BYTES):
                self._feed(data[start : start + FEED_SLICE_BYTES], records)
            if self._shell is None and self._root is not None:
                self._merge_links()  # still in the header: links are known the moment read
        except XmlError as exc:
            self._error = exc
            raise
        return records

    def flush(self) -> list[FeedEntry]:
        """End of the document: return the last records; :attr:`next_url` is now final.

        Raises:
            XmlError: the document is incomplete, empty, malformed, or not a feed.
        """
        self._check_usable()
        records: list[FeedEntry] = []
        try:
            if self._head is not None:
                head, self._head = self._head, None
                self._check_bom(head)
                self._feed(head, records)
            try:
                root = self._parser.close()
            except etree.LxmlError as exc:
                raise XmlError(f"malformed XML: {exc}") from exc
            self._handle_events(records)
            if self._root is None:
                self._root = self._document_root(root)
            self._merge_links()
        except XmlError as exc:
            self._error = exc
            raise
        self._finished = True
        return records

    # -- internals ---------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise XmlError("the feed decoder was already flushed")

    def _take_head(self, data: bytes) -> bytes:
        """Hold the first bytes until a UTF-16/32 byte-order mark can be ruled out."""
        assert self._head is not None
        head = self._head + data
        if len(head) < _BOM_PROBE:
            self._head = head
            return b""
        self._head = None
        self._check_bom(head)
        return head

    @staticmethod
    def _check_bom(head: bytes) -> None:
        if head.startswith(_BOMS):
            raise XmlError("XML must be encoded as UTF-8")

    def _feed(self, piece: bytes, records: list[FeedEntry]) -> None:
        if not piece:
            return
        probe = self._tail + piece[:_OVERLAP]
        for token in _FORBIDDEN:
            if token in piece or token in probe:
                raise XmlError("XML with a DOCTYPE or ENTITY declaration is not accepted")
        self._tail = (self._tail + piece)[-_OVERLAP:]
        self._pending += len(piece)
        try:
            self._parser.feed(piece)
        except etree.LxmlError as exc:
            raise XmlError(f"malformed XML: {exc}") from exc
        self._handle_events(records)
        if self._pending > self._max_entry_bytes:
            raise XmlError(f"more than {self._max_entry_bytes} bytes without a complete feed entry")

    def _handle_events(self, records: list[FeedEntry]) -> None:
        # The tag filter lets only feed and entry elements through, in any namespace.
        for event, el in self._parser.read_events():
            if event == "end":
                if el is self._current:
                    self._entry_depth -= 1
                    records.append(self._finish_entry(el))
                elif _is_entry(el.tag):
                    self._entry_depth -= 1
                continue
            root = self._root
            if root is None:
                root = self._root = self._document_root(el)
            if not _is_entry(el.tag):
                continue  # the feed itself, or a feed nested in something
            if self._entry_depth == 0 and el.getparent() is root:
                self._current = el
                previous = el.getprevious()
                if previous is not None and previous is not self._shell:
                    self._merge_links()  # something new stands between the entries
            self._entry_depth += 1

    @staticmethod
    def _document_root(el: etree._Element) -> etree._Element:
        root = el
        while (parent := root.getparent()) is not None:
            root = parent
        if local_name(root) != "feed":
            raise XmlError(f"expected a <feed>, found <{local_name(root) or '?'}>")
        return root

    def _finish_entry(self, el: etree._Element) -> FeedEntry:
        try:
            record = record_from_entry(el, list_id=self._list_id)
        except XmlError as exc:
            raise XmlError(f"feed entry {self._entries + 1}: {exc}") from exc
        self._entries += 1
        self._current = None
        self._pending = 0
        # The entry is done: empty it, and drop everything before it (the header, the
        # previous entry's shell, links read already).
        el.clear()
        root = self._root
        assert root is not None
        while el.getprevious() is not None:
            del root[0]
        self._shell = el
        return record

    def _merge_links(self) -> None:
        # Children still in the tree come after every child deleted before, so keeping the
        # first href of each rel across calls keeps the first of the whole document.
        assert self._root is not None
        for rel, href in links_of(self._root).items():
            self._links.setdefault(rel, href)
