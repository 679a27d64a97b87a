"""Feed walking: the pages of a paged collection, streamed, in order, with bounded prefetch.

Invariants:

* **Constant memory.** Bytes go from the socket through :class:`~bulkops.stream.feed.FeedDecoder`
  to the consumer; at most ``prefetch + 2`` pages (50 entries each: the one being taken and
  ``prefetch + 1`` requested ahead of it) are held, whatever the size of the collection.
* **Bounded prefetch.** The walker requests page *k+1* as soon as page *k*'s ``next`` link
  has been read (:attr:`FeedDecoder.next_url`), while *k* is still arriving; at most
  ``prefetch + 1`` pages are requested and not yet taken by the consumer
  (:class:`WalkStats`). Pages are delivered in order. A page whose body breaks off is read
  again (its successor is not requested twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from bulkops.engine.client import Client
from bulkops.errors import BodyBrokenOff, ProtocolError, TransportError, single_errors
from bulkops.stream.feed import FEED_SLICE_BYTES, FeedDecoder
from bulkops.wire.model import FeedEntry

__all__ = ["Page", "PageWalk", "RecordStream", "WalkStats", "open_pages", "open_records"]

_PAGE_ATTEMPTS = 5  # a page whose body broke off is fetched again this often


@attrs.frozen(kw_only=True)
class Page:
    """One feed page as delivered by :func:`open_pages`.

    Attributes:
        number: 1 for the first page walked.
        url: the URL it was fetched from.
        records: its entries' records, in document order.
        next_url: the next page's URL, None on the last page.
        size: bytes of the page's body.
        next_requested_after: how many bytes of this page had been read when the next page
            was requested (None on the last page); less than ``size`` when the ``next``
            link came before the end of the body, as it does on every real page.
    """

    number: int
    url: str
    records: list[FeedEntry]
    next_url: str | None
    size: int
    next_requested_after: int | None


@attrs.frozen(kw_only=True)
class WalkStats:
    """A snapshot of a walk.

    Attributes:
        started: pages whose request has been sent.
        fetched: pages fully read.
        received: pages the consumer has taken.
        max_ahead: the most pages ever requested and not yet taken by the consumer; never
            more than ``prefetch + 1`` (the page being delivered and ``prefetch`` ahead).
    """

    started: int
    fetched: int
    received: int
    max_ahead: int


class PageWalk:
    """The pages of a walk, in order (:func:`open_pages` makes it); async-iterable."""

    def __init__(
        self, client: Client, *, list_id: str | None, prefetch: int, read_size: int
    ) -> None:
        self._client = client
        self._list_id = list_id
        self._read_size = read_size
        # The page being delivered plus `prefetch` ahead hold a slot each, from just before
        # their GET until the consumer has taken them.
        self._slots = trio.Semaphore(prefetch + 1)
        self._send, self._receive = trio.open_memory_channel[Page](0)
        self._started = self._fetched = self._received = self._max_ahead = 0
        self._changed = trio.Event()

    def statistics(self) -> WalkStats:
        """Counters so far."""
        return WalkStats(
            started=self._started,
            fetched=self._fetched,
            received=self._received,
            max_ahead=self._max_ahead,
        )

    async def wait_fetched(self, count: int) -> None:
        """Return once ``count`` pages have been read (for observers and tests)."""
        while self._fetched < count:
            await self._changed.wait()

    def __aiter__(self) -> PageWalk:
        return self

    async def __anext__(self) -> Page:
        try:
            page = await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self._received += 1
        return page

    async def run(self, url: str) -> None:
        """Walk from ``url`` to the last page (the task :func:`open_pages` starts)."""
        # ``with``, not ``async with``: an async close is a checkpoint, where the consumer's
        # cancel could replace a page's error with a Cancelled the nursery swallows.
        with self._send:
            async with trio.open_nursery() as nursery:
                delivered = trio.Event()
                delivered.set()
                nursery.start_soon(self._page, nursery, url, 1, delivered)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _page(
        self, nursery: trio.Nursery, url: str, number: int, previous: trio.Event
    ) -> None:
        delivered = trio.Event()
        successor: list[str] = []

        def start_next(next_url: str) -> None:
            if next_url == url:
                raise ProtocolError(f"page {number}'s next link points back to itself")
            successor.append(next_url)
            nursery.start_soon(self._page, nursery, next_url, number + 1, delivered)

        async with self._slots:
            self._started += 1
            self._max_ahead = max(self._max_ahead, self._started - self._received)
            page = await self._fetch(number, url, successor, start_next)
            self._fetched += 1
            self._notify()
            await previous.wait()
            await self._send.send(page)
            delivered.set()

    async def _fetch(
        self, number: int, url: str, successor: list[str], start_next: Callable[[str], None]
    ) -> Page:
        for attempt in range(1, _PAGE_ATTEMPTS + 1):
            decoder = FeedDecoder(list_id=self._list_id, document_url=url)
            records: list[FeedEntry] = []
            requested_after: int | None = None
            try:
                async with self._client.stream_download(url, read_size=self._read_size) as body:
                    async for piece in body:
                        records.extend(decoder.decode(piece))
                        if not successor and decoder.next_url is not None:
                            requested_after = decoder.bytes_fed
                            start_next(decoder.next_url)
            except BodyBrokenOff as exc:
                # The body broke off after the headers: read the page again.
                if attempt == _PAGE_ATTEMPTS:
                    raise TransportError(f"reading a feed page failed: {exc}") from exc
                continue
            records.extend(decoder.flush())
            next_url = decoder.next_url
            if successor and next_url != successor[0]:
                raise ProtocolError("a feed page changed its next link when read again")
            if not successor and next_url is not None:
                requested_after = decoder.bytes_fed
                start_next(next_url)
            return Page(
                number=number,
                url=url,
                records=records,
                next_url=next_url,
                size=decoder.bytes_fed,
                next_requested_after=requested_after,
            )
        raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def open_pages(
    client: Client,
    href: str,
    *,
    list_id: str | None = None,
    prefetch: int = 2,
    read_size: int = FEED_SLICE_BYTES,
) -> AsyncIterator[PageWalk]:
    """Walk a paged collection: its pages, in order, ending after the last::

        async with open_pages(client, "lists/7/members") as pages:
            async for page in pages:
                ...

    Args:
        client: an open client.
        href: the collection (``"lists/7/members"``, ``"contacts?updatedsince=…"``) or any
            page's URL (a ``next`` link, to continue a walk).
        list_id: for members feeds, the list (see ``record_from_entry``).
        prefetch: pages fetched ahead of the one being delivered (see :class:`WalkStats`).
        read_size: bytes read from the socket at a time.

    Raises:
        XmlError, ProtocolError: a page is malformed, or its next link loops.
        ApiError, TransportError: as the client raises them.
    """
    walk = PageWalk(client, list_id=list_id, prefetch=prefetch, read_size=read_size)
    with single_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(walk.run, client.url(href))
            with walk._receive:
                yield walk
            nursery.cancel_scope.cancel()


class RecordStream:
    """The records of a walk, one by one (:func:`open_records` makes it)."""

    def __init__(self, pages: PageWalk) -> None:
        self.pages = pages
        self._buffer: list[FeedEntry] = []
        self._index = 0

    def __aiter__(self) -> RecordStream:
        return self

    async def __anext__(self) -> FeedEntry:
        while self._index >= len(self._buffer):
            page = await self.pages.__anext__()
            self._buffer, self._index = page.records, 0
        record = self._buffer[self._index]
        self._index += 1
        return record


@asynccontextmanager
async def open_records(
    client: Client, href: str, *, list_id: str | None = None, prefetch: int = 2
) -> AsyncIterator[RecordStream]:
    """The records of a paged collection, one by one, in constant memory::

        async with open_records(client, "lists/7/members") as records:
            async for member in records:
                ...

    Pages are fetched as :func:`open_pages` does (bounded prefetch); leaving the block
    early cancels what is in flight.

    Raises:
        as :func:`open_pages`.
    """
    async with open_pages(client, href, list_id=list_id, prefetch=prefetch) as pages:
        yield RecordStream(pages)
