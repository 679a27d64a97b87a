"""Records the store hands to the resources and the worker (any database builds the same).

Invariants: plain values only (ints in ms since the epoch, strings); an activity's row errors
are stored as :func:`encode_errors` writes them, whatever the database.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import msgspec

__all__ = ["ActivityRow", "RowError", "decode_errors", "encode_errors"]


@attrs.frozen
class ActivityRow:
    """One stored activity, as the feed and its entries show it (times in ms since the epoch).

    ``seq`` orders the feed (newest first) and keys its pages; ``id`` is the public id.
    """

    seq: int
    id: str
    type: str
    status: str
    error_count: int
    file_name: str
    transaction_count: int
    insert_time: int
    run_start_time: int | None
    run_finish_time: int | None
    updated: int


class RowError(msgspec.Struct, frozen=True, array_like=True):
    """One row the activity did not apply: its ``LineNumber``, address and message."""

    line: int
    email: str
    message: str


_errors_encoder = msgspec.msgpack.Encoder()
_errors_decoder = msgspec.msgpack.Decoder(list[RowError])


def encode_errors(errors: Sequence[RowError]) -> bytes:
    """The stored form of an activity's row errors (``activity.errors``)."""
    return _errors_encoder.encode(list(errors))


def decode_errors(blob: bytes | None) -> list[RowError]:
    """Stored row errors back (``[]`` for NULL)."""
    return [] if not blob else _errors_decoder.decode(blob)
