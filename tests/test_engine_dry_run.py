"""The dry run finds what the real run finds, reading the input once (issue 11, acc. 5)."""

from __future__ import annotations

import csv
import io
import os
import platform
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkops.engine import planner as planner_module
from bulkops.engine import repeats as repeats_module
from bulkops.engine.client import open_client
from bulkops.engine.dry_run import dry_run
from bulkops.engine.imports import ImportOptions, run_import
from bulkops.engine.journal import Journal
from bulkops.engine.outcome_files import Span, _records_at, _records_of
from bulkops.engine.planner import Planner
from bulkops.engine.repeats import ChunkEmailLog, find_repeated_emails
from bulkops.stream.options import ChunkLimits, ReadOptions
from bulkops.stream.pipeline import Pipeline, PipelineOptions
from bulkops.stream.records import Chunk, Header
from tests.enginekit import HEADER, client_config
from tests.serverkit import make_state, start_server

LIMITS = ChunkLimits(max_rows=50)
LISTS = ["http://api.constantcontact.com/ws/customers/x/lists/1"]


@st.composite
def repeating_files(draw: st.DrawFn) -> bytes:
    """Small CSV files whose emails repeat within and across 50-row chunks (some in
    another case), with bad rows, quoted fields over two lines, CRLF or LF line ends."""
    emails = draw(st.integers(5, 120))
    count = draw(st.integers(1, 260))
    picks = draw(st.lists(st.integers(0, emails - 1), min_size=count, max_size=count))
    rows: list[list[str]] = []
    for i, k in enumerate(picks):
        email = f"r{k}@example.org"
        if draw(st.booleans()) and k % 3 == 0:
            email = email.upper()
        city = draw(st.sampled_from(["Boston", "Québec, QC", "Two\nlines", 'A "q"', "東京"]))
        rows.append([email, f"F{i}", f"L{i}", city, "MA"])
    for at in draw(st.lists(st.integers(0, len(rows)), max_size=3)):
        rows.insert(at, ["not-an-address", "Bad", "Row", "Nowhere", "MA"])
    buffer = io.StringIO()
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    csv.writer(buffer, lineterminator=ending).writerows([HEADER, *rows])
    return buffer.getvalue().encode()


def _outcome_files(run_dir: Path) -> dict[str, bytes]:
    return {
        name: (run_dir / name).read_bytes()
        for name in ("rejected.csv", "duplicates.csv")
        if (run_dir / name).exists()
    }


async def _real_run(tmp: Path, source: Path) -> tuple[dict[str, int], dict[str, bytes]]:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, make_state(tmp))
        options = ImportOptions(
            lists=("Dry",),
            create_lists=True,
            poll_min=0.05,  # type: ignore[arg-type]
            poll_max=0.5,  # type: ignore[arg-type]
            limits=LIMITS,
        )
        async with open_client(client_config(server)) as client:
            with trio.fail_after(120):
                report = await run_import(client, source, options=options, run_dir=tmp / "real")
        nursery.cancel_scope.cancel()
    counts = report.counts
    return {"rejected": counts.rejected, "duplicate": counts.duplicate}, _outcome_files(
        tmp / "real"
    )


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(data=repeating_files())
def test_the_dry_run_counts_and_writes_what_the_real_run_does(data: bytes) -> None:
    """On files with repeats across chunks, the dry run's outcome counts, rejected.csv and
    duplicates.csv equal the real run's (against the real server on 127.0.0.1)."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        source = tmp / "in.csv"
        source.write_bytes(data)
        plan = dry_run(
            source, ReadOptions(), LIMITS, kind="add", lists=["Dry"], run_dir=tmp / "dry"
        )
        counts, files = trio.run(_real_run, tmp, source)
        assert {"rejected": plan.rejected, "duplicate": plan.duplicate} == counts
        assert _outcome_files(tmp / "dry") == files
        assert not (tmp / "dry" / "emails.tmp").exists()
        assert not (tmp / "real" / "emails.tmp").exists()


@settings(max_examples=60)
@given(data=repeating_files())
def test_the_email_log_marks_what_the_replay_marks(data: bytes) -> None:
    """The rows replaced across chunks found from the chunks' emails kept while planning
    are those the replay of the input finds (the slow oracle)."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        source = tmp / "in.csv"
        source.write_bytes(data)
        log = ChunkEmailLog(tmp)
        planner = Planner(
            ReadOptions(), LIMITS, lists=LISTS, kind="add", path=str(source), emails=log
        )
        planner.decode(data)
        planner.flush()
        fast, slow = Journal(tmp / "fast", create=True), Journal(tmp / "slow", create=True)
        try:
            marked = log.mark_repeats(fast)
            log.close()
            expected = find_repeated_emails(
                slow, source, ReadOptions(), LIMITS, lists=LISTS, kind="add"
            )
            assert marked == expected
            assert list(fast.outcomes("duplicate")) == list(slow.outcomes("duplicate"))
            if not planner.repeats_across_chunks:
                assert marked == 0
        finally:
            fast.close()
            slow.close()


def test_a_dry_run_reads_the_input_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Repeats across chunks are found without replaying the input (no second pipeline)."""

    def no_replay(*args: object, **kwargs: object) -> None:
        raise AssertionError("the input was replayed")

    monkeypatch.setattr(planner_module, "replay", no_replay)
    monkeypatch.setattr(repeats_module, "replay", no_replay)
    rows = [[f"p{i % 70}@example.org", f"F{i}", "L", "Boston", "MA"] for i in range(200)]
    source = tmp_path / "in.csv"
    buffer = io.StringIO()
    csv.writer(buffer).writerows([HEADER, *rows])
    source.write_text(buffer.getvalue())
    plan = dry_run(source, ReadOptions(), LIMITS, kind="add", lists=["X"], run_dir=tmp_path / "r")
    assert plan.rows_to_send == 200  # replaced in a later activity: sent, then replaced
    assert plan.duplicate == 130
    with (tmp_path / "r" / "duplicates.csv").open(newline="") as handle:
        replaced = list(csv.DictReader(handle))
    assert len(replaced) == 130
    assert all(r["Email Address"] and r["First Name"] for r in replaced)


@given(data=repeating_files())
def test_emails_kept_for_the_log_never_change_the_chunks(data: bytes) -> None:
    """``keep_emails`` adds each chunk's rows' emails (one per line) and nothing else."""

    def events(keep: bool) -> list[object]:
        pipeline = Pipeline(PipelineOptions(lists=LISTS, limits=LIMITS, keep_emails=keep))
        return pipeline.decode(data) + pipeline.flush()

    plain, kept = events(False), events(True)
    assert len(plain) == len(kept)
    for a, b in zip(plain, kept, strict=True):
        if isinstance(b, Chunk):
            assert isinstance(a, Chunk)
            assert (a.emails, a.repeated) == (None, ())
            assert b.emails is not None
            assert len(b.emails.split(b"\n")) == len(b.lines)
            assert b.emails == b.emails.lower()
            same = [f for f in Chunk.__struct_fields__ if f not in ("emails", "repeated")]
            assert [getattr(a, f) for f in same] == [getattr(b, f) for f in same]
        else:
            assert a == b


@given(
    rows=st.lists(
        st.lists(st.text(alphabet='ab,"\r\n é', max_size=6), min_size=2, max_size=2),
        min_size=1,
        max_size=12,
    ),
    ending=st.sampled_from(["\r\n", "\n", "\r"]),
    first_line=st.integers(1, 1000),
    data=st.data(),
)
def test_records_read_at_their_lines_equal_those_read_in_order(
    rows: list[list[str]],
    ending: str,
    first_line: int,
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Seeking to a record's line reads the same fields as reading the span in order
    (multi-line fields, lone CRs, non-ASCII)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=ending).writerows(rows)
    text = buffer.getvalue()
    raw = b"junk\n" + text.encode() + b"tail\n"
    source = tmp_path_factory.mktemp("span") / "in.csv"
    source.write_bytes(raw)
    in_order = dict(_records_of(text, ",", first_line))
    lines = sorted(data.draw(st.sets(st.sampled_from(sorted(in_order)))))
    header = Header(
        sources=("a", "b"), columns=(None, None), sent=(), delimiter=",", encoding="utf-8"
    )
    span = Span(first_line, max(in_order), 5, 5 + len(text.encode()))
    block = data.draw(st.sampled_from([1, 2, 3, 7, 64, 4096]))  # line breaks counted per block
    found = dict(_records_at(source, header, span, lines, block=block))
    assert found == {k: in_order[k] for k in lines}


def test_the_email_log_is_private_and_gone_when_closed(tmp_path: Path) -> None:
    """The side table holds emails: 0600 like the journal (umask 022), deleted on close."""
    old = os.umask(0o022)
    try:
        log = ChunkEmailLog(tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / "emails.tmp"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    log.close()
    assert not path.exists()


_REFAULTS = """
import resource, sys
if sys.argv[1] == "pad":
    from bulkops.engine.progress import keep_freed_memory
    keep_freed_memory()
held = [bytearray(100_000) for _ in range(100)]  # ~10 MB of heap (within the pad), freed
del held
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
held = [bytearray(100_000) for _ in range(100)]  # the same again
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc",
)
def test_a_dry_run_keeps_freed_heap_instead_of_faulting_it_in_again() -> None:
    """With the pad a dry run sets, memory freed at the heap's top and allocated again is
    not returned to the system in between: a fraction of the page faults (a work counter,
    each in a fresh process)."""

    def refaults(mode: str) -> int:
        proc = subprocess.run(
            [sys.executable, "-c", _REFAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(proc.stdout)

    # ~2,400 faults without the pad (every page again), none with it
    assert refaults("pad") * 10 < refaults("default")
