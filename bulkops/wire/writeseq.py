"""Our server's write-sequence extension (an era server sends none of it).

``GET lists/{id}`` asked with ``X-Bulkops-Write-Seq: ?`` answers with the account's write
sequence (committed writes to its contact data), the server's clock (ms since the epoch),
both read under the write lock, and the margin (ms) by which a write committed after that
reading may stamp its contacts before that time (0 when every writer shares the reading's
clock). The server sets them (:mod:`bulkops.server.lists`); ``bulkops sync`` reads them to
prove its snapshot exact (:mod:`bulkops.engine.sync_base`).

Pure: no IO.
"""

from __future__ import annotations

__all__ = [
    "WRITE_MARGIN_HEADER",
    "WRITE_MARGIN_MAX_MS",
    "WRITE_SEQ_HEADER",
    "WRITE_TIME_HEADER",
    "parse_write_seq",
]

WRITE_SEQ_HEADER = "X-Bulkops-Write-Seq"
WRITE_TIME_HEADER = "X-Bulkops-Write-Time"
WRITE_MARGIN_HEADER = "X-Bulkops-Write-Margin"
#: The largest write margin (ms) a server may state; a larger or malformed one is not used.
WRITE_MARGIN_MAX_MS = 60_000


def _digits(value: str, longest: int) -> bool:
    return 0 < len(value) <= longest and value.isascii() and value.isdigit()


def parse_write_seq(seq: str, stamp: str, margin: str) -> tuple[int, int, int | None] | None:
    """``(write sequence, server ms, margin ms)`` of the headers' values, or None when the
    sequence or the time is absent (``""``) or not a plain non-negative integer. The margin
    is None when not stated, malformed or over :data:`WRITE_MARGIN_MAX_MS`."""
    if not (_digits(seq, 19) and _digits(stamp, 16)):
        return None
    stated = int(margin) if _digits(margin, 6) else None
    if stated is not None and stated > WRITE_MARGIN_MAX_MS:
        stated = None
    return int(seq), int(stamp), stated
