"""Inputs at the engine's edges (issue 12): very wide headers, re-read records."""

from __future__ import annotations

import re
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.engine.planner import PlannedChunk, Planner
from bulkops.errors import InputError
from bulkops.stream.options import ChunkLimits, ReadOptions
from bulkops.stream.validate import _joined

WIDE = 100_000


def _wide_file(rows: int) -> bytes:
    header = ",".join(["Email Address", "First Name", *(f"Col{i}" for i in range(WIDE))])
    filler = "," * WIDE
    body = "".join(f"w{i}@example.org,W{i}{filler}\n" for i in range(rows))
    return (header + "\n" + body).encode()


def test_a_wide_unknown_header_gives_a_short_error() -> None:
    """100,000 unknown columns: the message names the first few and the count."""
    planner = Planner(ReadOptions(), ChunkLimits(), lists=["u"], kind="add", path="wide.csv")
    try:
        planner.decode(_wide_file(1))
        planner.flush()
    except InputError as exc:
        message = str(exc)
    else:
        raise AssertionError("no error")
    assert len(message) < 1500, message[:3000]
    assert '"Col0"' in message
    assert '"Col9"' in message
    assert "and 99,990 more (100,000 of 100,002 columns)" in message


def test_ignoring_a_wide_header_costs_memory_for_the_columns_used() -> None:
    """With --ignore-unknown-columns a 100,000-column header (688 KB) costs a few MiB, not
    the hundreds a pattern of 100,000 fields took (560 MiB peak, 95 s before)."""
    data = _wide_file(30)
    tracemalloc.start()
    try:
        planner = Planner(
            ReadOptions(ignore_unknown=True), ChunkLimits(), lists=["u"], kind="add", path="w"
        )
        events = planner.decode(data) + planner.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (chunk,) = [e for e in events if isinstance(e, PlannedChunk)]
    assert chunk.record.rows == 30
    assert chunk.columns == ("EMAIL ADDRESS", "FIRST NAME")
    # The input (3.4 MB) is held whole here; the rest is the header's cells and column map.
    assert peak < len(data) + 48 * 2**20, peak


_PARTS = st.lists(st.sampled_from([b"a*+", b"b", b"(?:c|dd)", b"[^,]*+"]), max_size=12)


@given(parts=_PARTS, text=st.text(alphabet="abcd,", max_size=30))
def test_a_compressed_pattern_matches_what_the_plain_join_matches(
    parts: list[bytes], text: str
) -> None:
    """Runs of equal fields written once with a count match exactly the same lines."""
    plain = re.compile(b",".join(parts))
    compact = re.compile(_joined(parts, b","))
    data = text.encode()
    assert bool(plain.fullmatch(data)) == bool(compact.fullmatch(data))
    assert len(_joined(parts, b",")) <= len(b",".join(parts)) + 16


@given(
    max_rows=st.integers(-(10**6), 10**7),
    max_bytes=st.integers(-(10**6), 10**9),
)
def test_any_limit_options_are_refused_or_within_the_api_limits(
    max_rows: int, max_bytes: int
) -> None:
    """``--max-rows``/``--max-bytes``: a usage error below the minimum, lowered (with a
    note) above the API's 40,000 rows / 4 MiB, as given in between."""
    from bulkops.cli.transfer import MIN_LIMIT_BYTES, MIN_LIMIT_ROWS, chunk_limits
    from bulkops.errors import ConfigError

    notes: list[str] = []
    if max_rows < MIN_LIMIT_ROWS or max_bytes < MIN_LIMIT_BYTES:
        with pytest.raises(ConfigError, match="must be at least"):
            chunk_limits(max_rows, max_bytes, warn=notes.append)
        return
    limits = chunk_limits(max_rows, max_bytes, warn=notes.append)
    assert limits.max_rows == min(max_rows, 40_000)
    assert limits.max_bytes == min(max_bytes, 4 * 2**20)
    assert len(notes) == (max_rows > 40_000) + (max_bytes > 4 * 2**20)
