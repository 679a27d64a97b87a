"""Which emails were seen before, and in which chunk: 13 to 20 bytes per unique email.

A Python ``set`` of addresses costs about 100 bytes per entry; an input of 5 million
contacts would need half a gigabyte for it. :class:`EmailTable` is an open-addressing table
(linear probing, at most 60% full) of 64-bit slots in one ``array('Q')``::

    bits 63..32  zlib.crc32 of the lower-cased address
    bits 31..16  the high half of its zlib.adler32 (a second, unrelated hash)
    bits 15..0   the chunk code: seq % 65535 + 1 (0 marks an empty slot)

The CRC places the address: its home slot is ``crc * len(slots) >> 32`` (any table size
works, so the table is sized to the emails expected rather than to a power of two). Two
addresses are taken for one when they agree on
all 48 hash bits: among 5 million addresses about 5e6**2 / 2**49 ≈ 0.04 pairs are confused.
(A second CRC with another start value would add nothing: CRCs of equal-length inputs differ
by the same amount whatever the start value. And a 32-bit slot that also holds the code
leaves 26 bits that tell addresses apart: thousands of confusions per million.)

A hit is therefore a *candidate*. The chunker finds repeats inside a chunk exactly (a dict
of the chunk's emails) and gives the table each chunk's distinct emails once, when the chunk
is cut: a hit there is an email last seen in an earlier chunk and adds a dependency
between chunks, which costs ordering, never correctness (a clash adds one too many).
Chunk codes repeat every 65,535 chunks; a dependency further back than that names a later
chunk instead (any engine with fewer chunks outstanding has applied it already).

Everything is deterministic (no ``hash()``; its seed changes per process), so the same
input gives the same table, hits and chunks in every process. Growing makes the table 1.5
times bigger and re-inserts every entry (home from the stored CRC); a
``capacity`` hint, or :meth:`EmailTable.reserve` once the size of the input is known,
avoids it.
"""

from __future__ import annotations

import zlib
from array import array

from bulkops.errors import InputError

__all__ = ["CODE_PERIOD", "MAX_EMAILS", "SLOT_BYTES", "EmailTable", "chunk_code", "code_distance"]

#: Chunk codes repeat after this many chunks.
CODE_PERIOD = 65535
_MIN_SLOTS = 1 << 15
_MAX_SLOTS = 1 << 30
_LOAD = 0.6
_GROWTH = 1.5
#: The most distinct emails one table holds.
MAX_EMAILS = int(_LOAD * _MAX_SLOTS)
#: Bytes per slot.
SLOT_BYTES = 8
_CODE_MASK = 0xFFFF
_ADLER_HIGH = 0xFFFF0000
_PROBE_INLINE = 8


def chunk_code(seq: int) -> int:
    """The 16-bit code stored for chunk ``seq`` (1..65535)."""
    return seq % CODE_PERIOD + 1


def code_distance(current: int, previous: int) -> int:
    """How many chunks before chunk code ``current`` the chunk code ``previous`` is."""
    return (current - previous) % CODE_PERIOD


def _zeros(n: int) -> array[int]:
    """``n`` empty slots, allocated once (``array("Q", bytes(...))`` would copy them)."""
    return array("Q", (0,)) * n


def _slots_for(count: int) -> int:
    """Slots to hold ``count`` emails at most 60% full."""
    return min(_MAX_SLOTS, max(_MIN_SLOTS, int(count / _LOAD) + 1))


class EmailTable:
    """A compact set of email fingerprints, each with the code of the chunk it was last in.

    Args:
        capacity: expected number of distinct emails (a hint: the table grows past it).
    """

    def __init__(self, capacity: int = 0) -> None:
        self._slots = _zeros(_slots_for(capacity))
        self._count = 0
        self._released_bytes = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held by the slots (after :meth:`release`, what they held before it)."""
        return SLOT_BYTES * len(self._slots) or self._released_bytes

    def release(self) -> None:
        """Free the slots: the input has ended and nothing will be inserted any more.

        ``len()`` and :attr:`nbytes` keep their values (a run's statistics report them);
        :meth:`insert` must not be called afterwards. At 2 M emails this returns ~28 MB
        before a caller's next step (the dry run reads the file a second time).
        """
        self._released_bytes = self.nbytes
        self._slots = array("Q")

    def reserve(self, count: int) -> None:
        """Make room for ``count`` distinct emails in all, at once (no growth in steps)."""
        if count > _LOAD * len(self._slots):
            self._resize(_slots_for(count))

    def insert(self, emails: list[bytes], code: int) -> list[tuple[int, int]]:
        """Record every address as last seen in chunk ``code``; report those seen before.

        Args:
            emails: lower-cased addresses, UTF-8, in input order.
            code: the :func:`chunk_code` of the chunk these rows go to.

        Returns:
            ``(i, previous_code)`` for each ``emails[i]`` already present (earlier in this
            call or before), in order: a candidate duplicate last seen in chunk
            ``previous_code``.

        Raises:
            InputError: more than :data:`MAX_EMAILS` distinct emails.
        """
        if self._released_bytes:
            raise RuntimeError("the email table was released")
        self._reserve(len(emails))
        slots = self._slots
        n = len(slots)
        hits: list[tuple[int, int]] = []
        i = -1
        for crc, adler in zip(map(zlib.crc32, emails), map(zlib.adler32, emails), strict=True):
            i += 1
            p = crc * n >> 32
            s = slots[p]
            if not s:
                slots[p] = crc << 32 | (adler & _ADLER_HIGH) | code
                continue
            # Occupied: walk the cluster (a slot or two on average) inline.
            key = crc << 32 | (adler & _ADLER_HIGH)
            for _ in range(_PROBE_INLINE):
                if s >> 16 == key >> 16:
                    slots[p] = key | code
                    hits.append((i, s & _CODE_MASK))
                    break
                p = p + 1 if p + 1 < n else 0
                s = slots[p]
                if not s:
                    slots[p] = key | code
                    break
            else:  # a long cluster: the general walk
                previous = self._probe(key, code)
                if previous:
                    hits.append((i, previous))
        self._count += len(emails) - len(hits)
        return hits

    def _probe(self, key: int, code: int) -> int:
        """Find ``key`` (hash bits, no code) along its probe sequence, updating its code, or
        add it; return the previous code, or 0 when it is new."""
        slots = self._slots
        n = len(slots)
        p = (key >> 32) * n >> 32
        while True:  # never endless: the table is at most 60% full
            s = slots[p]
            if not s:
                slots[p] = key | code
                return 0
            if s >> 16 == key >> 16:
                slots[p] = key | code
                return s & _CODE_MASK
            p = p + 1 if p + 1 < n else 0

    def _reserve(self, extra: int) -> None:
        while self._count + extra > _LOAD * len(self._slots):
            if len(self._slots) >= _MAX_SLOTS:
                raise InputError(
                    f"the input has more than {MAX_EMAILS} distinct email addresses; split it"
                )
            self._resize(_slots_for(int(len(self._slots) * _GROWTH * _LOAD)))

    def _resize(self, n: int) -> None:
        if self._released_bytes:
            raise RuntimeError("the email table was released")
        old = self._slots
        slots = _zeros(n)
        for s in filter(None, old):
            p = (s >> 32) * n >> 32
            while slots[p]:
                p = p + 1 if p + 1 < n else 0
            slots[p] = s
        self._slots = slots
