"""The run journal: plan, post states, outcomes, crash-consistent reopen."""

from __future__ import annotations

import json
from array import array
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.engine.chunks import ChunkEvent, ChunkState
from bulkops.engine.imports import ImportOptions
from bulkops.engine.journal import ChunkRecord, Journal, OutcomeRecord
from bulkops.engine.ledger import count_outcomes
from bulkops.errors import ConfigError
from bulkops.stream.options import ChunkLimits, ReadOptions


def chunk(seq: int, lines: list[int], digest: str = "d") -> ChunkRecord:
    return ChunkRecord(
        seq=seq,
        kind="add",
        rows=len(lines),
        first_line=lines[0],
        last_line=lines[-1],
        start_offset=0,
        end_offset=10,
        digest=f"{digest}{seq}",
        body_bytes=100,
        lines=array("Q", lines),
        after=None,
        state=ChunkState.PLANNED,
    )


def test_a_replayed_plan_returns_the_recorded_chunk(tmp_path: Path) -> None:
    """Planning the same chunk twice keeps the first record and its state."""
    journal = Journal(tmp_path, create=True)
    journal.plan(chunk(0, [2, 3, 4]))
    journal.apply(0, ChunkEvent.SEND, now=1.0)
    journal.apply(0, ChunkEvent.ANSWER, activity_id="a07e1abc")
    again = journal.plan(chunk(0, [2, 3, 4]))
    assert again.state == ChunkState.POSTED
    assert again.activity_id == "a07e1abc"
    assert list(again.lines) == [2, 3, 4]
    with pytest.raises(ConfigError, match="input file changed"):
        journal.plan(chunk(0, [2, 3, 4], digest="other"))


def test_outcomes_keep_the_highest_ranked_kind(tmp_path: Path) -> None:
    """A line that failed on the server and was later superseded is a duplicate."""
    journal = Journal(tmp_path, create=True)
    journal.add_outcomes(
        [OutcomeRecord(line=5, kind="duplicate", reason="replaced", replaced_by=9)]
    )
    journal.add_outcomes([OutcomeRecord(line=5, kind="failed", reason="bad state")])
    assert [o.kind for o in journal.outcomes("duplicate")] == ["duplicate"]
    assert list(journal.outcomes("failed")) == []


def test_counts_balance_and_reopen_after_a_crash(tmp_path: Path) -> None:
    """read == applied + failed + rejected + duplicate; state survives reopening."""
    journal = Journal(tmp_path, create=True)
    journal.plan(chunk(0, [2, 3, 4, 6]))
    journal.plan(chunk(1, [7, 8, 9]))
    journal.add_outcomes(
        [
            OutcomeRecord(line=5, kind="rejected", reason="bad email"),
            OutcomeRecord(line=3, kind="duplicate", reason="replaced by line 8", replaced_by=8),
        ]
    )
    for seq in (0, 1):
        journal.apply(seq, ChunkEvent.SEND, now=1.0)
        journal.apply(seq, ChunkEvent.ANSWER, activity_id=f"a{seq}")
    journal.done(
        0,
        status="COMPLETE",
        transaction_count=3,
        failures=[
            OutcomeRecord(line=6, kind="failed", reason="Unknown US/Canadian state/prov", chunk=0),
        ],
        run_start=1.0,
        run_finish=2.0,
        insert_time=0.5,
    )
    journal.close()  # as if the process died here

    reopened = Journal(tmp_path, create=False)
    counts = count_outcomes(reopened, rows_read=8)
    assert (counts.applied, counts.failed, counts.rejected, counts.duplicate, counts.pending) == (
        2,
        1,
        1,
        1,
        3,
    )
    assert counts.balanced
    reopened.done(
        1,
        status="COMPLETE",
        transaction_count=3,
        failures=[],
        run_start=2.0,
        run_finish=3.0,
        insert_time=1.0,
    )
    final = count_outcomes(reopened, rows_read=8)
    assert (final.applied, final.pending) == (5, 0)
    assert final.balanced


def test_status_needs_an_existing_run(tmp_path: Path) -> None:
    """Opening a directory without a journal for resume is a clear error."""
    with pytest.raises(ConfigError, match="not a bulkops run directory"):
        Journal(tmp_path / "nothing", create=False)


@st.composite
def import_options(draw: st.DrawFn) -> ImportOptions:
    min_rows = draw(st.integers(1, 50))
    return ImportOptions(
        kind=draw(st.sampled_from(["add", "remove"])),
        lists=tuple(draw(st.lists(st.text(min_size=1, max_size=8), max_size=3))),
        concurrency=draw(st.integers(1, 16)),
        stall_timeout=draw(st.floats(1, 1e4)),
        read=ReadOptions(
            format=draw(st.sampled_from([None, "csv", "xml"])),
            encoding=draw(st.sampled_from([None, "utf-8", "cp1252"])),
            delimiter=draw(st.sampled_from([None, ",", ";", "\t", "|"])),
            mapping=tuple(
                draw(st.lists(st.tuples(st.text(min_size=1), st.text(min_size=1)), max_size=3))
            ),
            ignore_unknown=draw(st.booleans()),
        ),
        limits=ChunkLimits(
            form=draw(st.sampled_from(["multipart", "urlencoded"])),
            min_rows=min_rows,
            max_rows=draw(st.integers(2 * min_rows, 40_000)),
            max_bytes=draw(st.integers(1, 1 << 22)),
        ),
    )


@given(import_options())
def test_import_options_survive_the_journal(options: ImportOptions) -> None:
    """to_meta/from_meta through JSON is the identity: resume repeats the run exactly."""
    assert ImportOptions.from_meta(json.loads(json.dumps(options.to_meta()))) == options


def test_stored_options_that_are_not_valid_are_a_config_error() -> None:
    """A journal whose options no longer validate is refused with a message."""
    meta = ImportOptions(lists=("a",)).to_meta()
    meta["limits"] = {"max_rows": 10}  # less than twice min_rows
    with pytest.raises(ConfigError, match="max_rows"):
        ImportOptions.from_meta(meta)
    with pytest.raises(ConfigError, match="stored options"):
        ImportOptions.from_meta({**meta, "limits": {}, "concurrency": "many"})
