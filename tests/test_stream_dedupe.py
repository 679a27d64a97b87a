"""The compact email table: every repeat found, bytes per email bounded."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.stream.dedupe import CODE_PERIOD, EmailTable, chunk_code, code_distance


def keys(emails: list[str]) -> list[bytes]:
    return [e.lower().encode() for e in emails]


@given(st.lists(st.sampled_from([f"u{i}@x.org" for i in range(40)]), max_size=300))
def test_every_repeat_is_reported_with_the_chunk_it_was_last_in(emails: list[str]) -> None:
    """No repeat is missed (false negatives would break the last-wins rule)."""
    table = EmailTable()
    last: dict[str, int] = {}
    for start in range(0, len(emails), 7):
        batch = emails[start : start + 7]
        code = chunk_code(start // 7)
        hits = dict(table.insert(keys(batch), code))
        seen_in_batch: set[str] = set()
        for i, address in enumerate(batch):
            if address in last or address in seen_in_batch:
                previous = code if address in seen_in_batch else last[address]
                assert hits.get(i) == previous
            seen_in_batch.add(address)
        for address in batch:
            last[address] = code


def test_growing_keeps_every_entry() -> None:
    """After many doublings, every address inserted is still found."""
    table = EmailTable()
    emails = [f"user{i}@example.org" for i in range(200_000)]
    assert table.insert(keys(emails), chunk_code(0)) == []
    hits = table.insert(keys(emails[::1000]), chunk_code(1))
    assert [i for i, _ in hits] == list(range(200))
    assert all(code == chunk_code(0) for _, code in hits)
    assert len(table) == 200_000


def test_the_table_costs_13_to_20_bytes_per_unique_email() -> None:
    """The measured footprint: 8-byte slots, 40% to 60% full (grown 1.5 times at a time)."""
    for n in (100_000, 400_000, 1_000_000):
        table = EmailTable()
        table.insert([b"user%d@example.org" % i for i in range(n)], chunk_code(0))
        per_email = table.nbytes / n
        assert 8 / 0.6 <= per_email <= 8 / 0.4 + 0.1, (n, per_email)
        assert len(table) >= n - 2  # at most a clash or two among a million


def test_a_capacity_hint_allocates_once() -> None:
    """Sized for the expected emails up front: no growth, same answers."""
    table = EmailTable(capacity=300_000)
    size = table.nbytes
    table.insert(keys([f"u{i}@x.org" for i in range(300_000)]), chunk_code(0))
    assert table.nbytes == size


def test_addresses_crowding_one_cluster_are_all_found() -> None:
    """Addresses whose CRCs all land in one neighbourhood: long probes, still exact."""
    table = EmailTable()
    n = len(table._slots)
    crowded = [a for a in (b"%d@x.org" % i for i in range(200_000)) if zlib.crc32(a) * n >> 32 < 64]
    assert table.insert(crowded, chunk_code(0)) == []
    assert [i for i, _ in table.insert(crowded, chunk_code(1))] == list(range(len(crowded)))


def test_reserving_sizes_the_table_to_the_expected_emails() -> None:
    """Told how many emails to expect, the table takes 13.3 bytes per email, not a power of 2."""
    table = EmailTable()
    table.reserve(5_000_000)
    assert 8 / 0.6 <= table.nbytes / 5_000_000 < 13.35


def test_chunk_codes_count_back_without_ambiguity_within_a_period() -> None:
    """Codes are never 0 and give the distance back for up to 4,094 chunks."""
    assert min(chunk_code(s) for s in range(3 * CODE_PERIOD)) == 1
    for seq in (0, 5, 4094, 4095, 10_000):
        for back in (1, 17, CODE_PERIOD - 1):
            assert code_distance(chunk_code(seq + back), chunk_code(seq)) == back


def test_a_released_table_keeps_its_counts_and_frees_its_slots() -> None:
    """After ``release`` the slots are gone, the counts stay, and an insert is refused."""
    table = EmailTable(capacity=10_000)
    table.insert([f"user{i}@example.com".encode() for i in range(5_000)], chunk_code(0))
    size = table.nbytes
    table.release()
    assert len(table) == 5_000
    assert table.nbytes == size > 0
    assert len(table._slots) == 0
    with pytest.raises(RuntimeError, match="released"):
        table.insert([b"late@example.com"], chunk_code(1))
    with pytest.raises(RuntimeError, match="released"):
        table.reserve(20_000)
