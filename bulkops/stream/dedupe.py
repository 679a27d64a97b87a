"""Which emails were seen before, and in which chunk: about 7 to 13 bytes per unique email.

A Python ``set`` of addresses costs about 100 bytes per entry; an input of 5 million
contacts would need half a gigabyte for it. :class:`EmailTable` keeps a 32-bit slot per
entry in one ``array('I')`` (an open-addressing table, linear probing, at most 60% full):

* the 32-bit fingerprint of an address is ``zlib.crc32`` of its lower-cased UTF-8 bytes
  (deterministic: the same input gives the same table in every process);
* the low 6 bits pick one of 64 shards, the top ``k`` bits the home slot in the shard;
* a slot holds the top 20 bits of the fingerprint and a 12-bit *chunk code*
  (``seq % 4095 + 1``, never 0: 0 marks an empty slot).

A hit is a *candidate*: two addresses share a fingerprint with probability about 2**-20 per
slot compared. The pipeline confirms candidates in the current chunk against the exact
addresses it still holds; a candidate in an earlier chunk only adds a dependency between
chunks, which costs ordering, never correctness. Chunk codes repeat every 4,095 chunks; a
dependency further back than that names a later chunk instead (any engine with fewer than
4,095 chunks outstanding has applied it already).

Growing doubles every shard and re-inserts every entry (home slots come from the stored
fingerprint bits, so nothing else is needed); give a ``capacity`` hint to avoid it. The
table supports up to 40 million distinct emails.
"""

from __future__ import annotations

from array import array

from bulkops.errors import InputError

__all__ = ["CODE_PERIOD", "MAX_EMAILS", "EmailTable", "chunk_code", "code_distance"]

#: Chunk codes repeat after this many chunks.
CODE_PERIOD = 4095
_SHARD_BITS = 6
_SHARDS = 1 << _SHARD_BITS
_SHARD_MASK = _SHARDS - 1
_TAG_MASK = 0xFFFFF000
_CODE_MASK = 0x00000FFF
_MIN_K = 9
_MAX_K = 20
_LOAD = 0.6
#: The most distinct emails one table holds.
MAX_EMAILS = int(_LOAD * (_SHARDS << _MAX_K))


def chunk_code(seq: int) -> int:
    """The 12-bit code stored for chunk ``seq`` (1..4095)."""
    return seq % CODE_PERIOD + 1


def code_distance(current: int, previous: int) -> int:
    """How many chunks before chunk code ``current`` the chunk code ``previous`` is (0..4094)."""
    return (current - previous) % CODE_PERIOD


class EmailTable:
    """A compact set of email fingerprints, each with the code of the chunk it was last in.

    Args:
        capacity: expected number of distinct emails (a hint: the table grows past it).
    """

    def __init__(self, capacity: int = 0) -> None:
        k = _MIN_K
        while k < _MAX_K and _LOAD * (_SHARDS << k) < capacity:
            k += 1
        self._k = k
        self._slots = array("I", bytes(4 * (_SHARDS << k)))
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held by the slots."""
        return self._slots.itemsize * len(self._slots)

    def insert(self, hashes: list[int], code: int) -> list[tuple[int, int]]:
        """Record every fingerprint as last seen in chunk ``code``; report those seen before.

        Args:
            hashes: 32-bit fingerprints (``zlib.crc32`` of lower-cased addresses), in input
                order.
            code: the :func:`chunk_code` of the chunk these rows go to.

        Returns:
            ``(i, previous_code)`` for each ``hashes[i]`` already present (in this call or
            before), in order: a candidate duplicate last seen in chunk ``previous_code``.

        Raises:
            InputError: more than :data:`MAX_EMAILS` distinct emails.
        """
        self._reserve(len(hashes))
        slots = self._slots
        k = self._k
        shift = 32 - k
        kmask = (1 << k) - 1
        hits: list[tuple[int, int]] = []
        for i, h in enumerate(hashes):
            p = ((h & _SHARD_MASK) << k) | (h >> shift)
            s = slots[p]
            if not s:
                slots[p] = (h & _TAG_MASK) | code
                continue
            while True:
                if (s ^ h) <= _CODE_MASK:  # same top 20 bits: a candidate
                    hits.append((i, s & _CODE_MASK))
                    slots[p] = (s & _TAG_MASK) | code
                    break
                p = (p & ~kmask) | ((p + 1) & kmask)
                s = slots[p]
                if not s:
                    slots[p] = (h & _TAG_MASK) | code
                    break
        self._count += len(hashes) - len(hits)
        return hits

    def _reserve(self, extra: int) -> None:
        while self._count + extra > _LOAD * len(self._slots):
            if self._k >= _MAX_K:
                raise InputError(
                    f"the input has more than {MAX_EMAILS} distinct email addresses; split it"
                )
            self._grow()

    def _grow(self) -> None:
        old, old_k = self._slots, self._k
        k = old_k + 1
        slots = array("I", bytes(4 * (_SHARDS << k)))
        shift = 32 - k
        kmask = (1 << k) - 1
        for p_old, s in enumerate(old):
            if not s:
                continue
            p = ((p_old >> old_k) << k) | (s >> shift)
            while slots[p]:
                p = (p & ~kmask) | ((p + 1) & kmask)
            slots[p] = s
        self._slots, self._k = slots, k
