"""A run's lifecycle through the real ``bulkops`` entry point, against ``bulkops serve`` on
127.0.0.1: failed starts, kills, resumes, ``status``, closed pipes, quotas, file modes."""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkops.engine import rundirs
from tests.enginekit import contact_rows, write_csv
from tests.runkit import Cli, Server, assert_balanced, no_traceback, report_of, serve

SAMPLES = Path(__file__).parent.parent / "samples"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("server"))


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    return Cli(origin=server.origin, cwd=tmp_path)


def _status(cli: Cli, run_dir: Path) -> tuple[int, dict[str, object]]:
    result = cli.run("status", str(run_dir), "--json")
    no_traceback(result)
    return result.returncode, json.loads(result.stdout)


def _many_chunks(tmp_path: Path, rows: int = 3000, name: str = "many.csv") -> Path:
    data = contact_rows(rows, seed=3, prefix=name.split(".")[0])
    data += [["bad-address", "X", "Y", "Z", "MA"]]  # one reject: the run exits 2
    return write_csv(tmp_path / name, data)


def test_a_failed_start_leaves_a_reusable_directory_that_says_it_never_started(
    cli: Cli, tmp_path: Path
) -> None:
    """Unknown list: exit 64; status and resume say "never started"; the corrected command
    reuses the same --run-dir."""
    run_dir = tmp_path / "run"
    source = str(SAMPLES / "contacts.csv")
    first = cli.run("import", source, "--list", "NoSuchList", "--run-dir", str(run_dir))
    assert first.returncode == 64, first.stderr
    no_traceback(first)
    code, status = _status(cli, run_dir)
    assert (code, status["state"]) == (64, "not-started")
    text = cli.run("status", str(run_dir))
    assert "never started" in text.stdout
    assert "None" not in text.stdout
    resumed = cli.run("resume", str(run_dir))
    assert resumed.returncode == 64
    assert "never started" in resumed.stderr
    again = cli.run(
        "import", source, "--list", "NoSuchList", "--create-lists", "--run-dir", str(run_dir)
    )
    assert again.returncode == 0, again.stderr
    code, status = _status(cli, run_dir)
    assert (code, status["state"]) == (0, "complete")


def test_default_run_directories_are_distinct_within_one_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs (or dry-runs) of one file in the same second get their own directories,
    named after the command."""
    monkeypatch.setattr(rundirs.time, "strftime", lambda _fmt: "20260101-000000")
    source = tmp_path / "contacts.csv"
    made = [rundirs.default_run_dir(source, "add", root=tmp_path / "runs") for _ in range(3)]
    made.append(rundirs.default_run_dir(source, "dry-run", root=tmp_path / "runs"))
    made.append(rundirs.default_run_dir(source, "dry-run", root=tmp_path / "runs"))
    assert len(set(made)) == 5
    assert made[0].name == "contacts-import-20260101-000000"
    assert made[1].name == "contacts-import-20260101-000000-2"
    assert all(p.is_dir() and stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in made)


def test_two_dry_runs_never_share_a_folder(cli: Cli, tmp_path: Path) -> None:
    """Dry-runs with the default directory: one folder each, each with its own advice."""
    source = str(SAMPLES / "messy.csv")
    outputs = [cli.run("import", source, "--list", "X", "--dry-run", "--json") for _ in range(2)]
    dirs = [json.loads(o.stdout.splitlines()[-1])["plan"]["run_dir"] for o in outputs]
    assert len(set(dirs)) == 2
    assert all("messy-dry-run-" in d for d in dirs)


def test_every_name_of_an_import_says_import_not_add(cli: Cli, tmp_path: Path) -> None:
    """The engine's kind ``add`` is never shown: the dry-run plan, the run directories,
    the reports, ``status`` and ``runs`` all say ``import``."""
    source = str(SAMPLES / "contacts.csv")
    dry = cli.run("import", source, "--list", "Names", "--dry-run", "--json")
    plan = json.loads(dry.stdout.splitlines()[-1])["plan"]
    assert plan["kind"] == "import"
    assert "import" in cli.run("import", source, "--list", "Names", "--dry-run").stdout
    real = cli.run("import", source, "--list", "Names", "--create-lists", "--json")
    assert real.returncode == 0, real.stderr
    report = json.loads(real.stdout.splitlines()[-1])["report"]
    assert report["command"] == "import"
    assert "contacts-import-" in Path(report["run_dir"]).name
    for run_dir in (tmp_path / plan["run_dir"], Path(report["run_dir"])):
        _, status = _status(cli, run_dir)
        assert status["command"] == "import"
    listed = cli.run("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"add"' not in listed.stdout
    assert "add" not in cli.run("runs").stdout.split()


def test_sigkilled_run_shows_as_interrupted_and_resume_agrees_with_status(
    cli: Cli, tmp_path: Path
) -> None:
    """SIGKILL right after a POST: status says interrupted (exit 3), not running; after
    resume, status shows report.json's numbers and exits with the run's code (2: a reject);
    the reconciliation is not shown without -v."""
    source = _many_chunks(tmp_path)
    run_dir = tmp_path / "run"
    killed = cli.run(
        "import",
        str(source),
        "--list",
        "Killed",
        "--create-lists",
        "--max-rows",
        "200",
        "--run-dir",
        str(run_dir),
        BULKOPS_TEST_KILL_AFTER_POST="3",
    )
    assert killed.returncode == -signal.SIGKILL
    code, status = _status(cli, run_dir)
    assert (code, status["state"]) == (3, "interrupted")
    counts = status["counts"]
    assert counts["read"] >= 400  # not `rows read 0`: at least the chunks it planned
    assert counts["read"] == sum(counts[k] for k in counts if k != "read")
    assert "bulkops resume" in cli.run("status", str(run_dir)).stdout
    resumed = cli.run("resume", str(run_dir))
    no_traceback(resumed)
    assert resumed.returncode == 2, resumed.stderr
    assert "reconciled" not in resumed.stderr
    report = report_of(run_dir)
    assert_balanced(report["counts"])
    assert report["counts"]["read"] == 3001
    code, status = _status(cli, run_dir)
    assert (code, status["state"], status["counts"]) == (2, "complete", report["counts"])
    assert report["command"] == "import"
    assert report["wall_seconds"] > 0


def test_an_exhausted_daily_quota_is_resumable_and_counters_add_up(
    cli: Cli, tmp_path: Path
) -> None:
    """--daily-quota running out: exit 3 with a report; resume finishes; requests and wall
    time are the sum over both processes."""
    source = _many_chunks(tmp_path, name="quota.csv")
    run_dir = tmp_path / "run"
    first = cli.run(
        "import",
        str(source),
        "--list",
        "Quota",
        "--create-lists",
        "--max-rows",
        "200",
        "--daily-quota",
        "6",
        "--run-dir",
        str(run_dir),
    )
    no_traceback(first)
    assert first.returncode == 3, first.stderr
    before = report_of(run_dir)
    assert before["state"] == "interrupted"
    assert before["requests"] == 6
    code, status = _status(cli, run_dir)
    assert (code, status["counts"]) == (3, before["counts"])
    resumed = cli.run("resume", str(run_dir))
    assert resumed.returncode == 2, resumed.stderr
    after = report_of(run_dir)
    assert_balanced(after["counts"])
    assert after["requests"] > before["requests"] + 10  # 16 chunks still to POST, then polls
    assert after["wall_seconds"] >= before["wall_seconds"] > 0


@pytest.mark.parametrize("command", ["import", "clear"])
def test_a_quota_exhausted_while_finding_the_lists_is_resumable(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    """The budget runs out looking up or creating the lists, before any chunk: exit 3 with
    the quota message and a report (it exited 4, "fatal"); status agrees; resume finds the
    lists and finishes."""
    run_dir = tmp_path / "run"
    if command == "import":
        args = [str(SAMPLES / "contacts.csv"), "--list", "QuotaLists", "--create-lists"]
        quota = "1"  # the lists feed, then no budget left to create the list
    else:
        made = cli.run(
            "import",
            str(SAMPLES / "contacts.csv"),
            "--list",
            "ToClear",
            "--create-lists",
            "--run-dir",
            str(tmp_path / "made"),
        )
        assert made.returncode == 0, made.stderr
        args = ["--list", "ToClear", "--yes"]
        quota = "0"
    first = cli.run(command, *args, "--daily-quota", quota, "--run-dir", str(run_dir))
    no_traceback(first)
    assert first.returncode == 3, first.stderr
    assert "request budget" in first.stderr + first.stdout
    assert f"bulkops resume {run_dir}` to finish (with a new --daily-quota)" in (
        first.stderr + first.stdout
    )
    before = report_of(run_dir)
    assert before["state"] == "interrupted"
    code, status = _status(cli, run_dir)
    assert (code, status["state"]) == (3, "interrupted")
    resumed = cli.run("resume", str(run_dir))
    no_traceback(resumed)
    assert resumed.returncode == 0, resumed.stderr
    after = report_of(run_dir)
    assert after["lists"] == ["QuotaLists" if command == "import" else "ToClear"]
    if command == "import":
        assert after["counts"]["applied"] == 120
    else:
        assert after["members_removed"] == 120
    assert _status(cli, run_dir)[0] == 0


def test_json_into_a_reader_that_goes_away(cli: Cli, tmp_path: Path) -> None:
    """`import --json | head -1`: no BrokenPipeError, the run is not left running, and it
    can be finished."""
    source = _many_chunks(tmp_path, name="pipe.csv")
    run_dir = tmp_path / "run"
    proc = cli.popen(
        "import",
        str(source),
        "--list",
        "Pipe",
        "--create-lists",
        "--max-rows",
        "100",
        "--json",
        "--run-dir",
        str(run_dir),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.readline().startswith("{")
    proc.stdout.close()
    code = proc.wait(timeout=300)
    no_traceback(proc.stderr.read())
    assert code in (2, 3)  # 2: it had finished before the pipe closed
    status_code, status = _status(cli, run_dir)
    assert status["state"] in ("interrupted", "complete")
    assert status_code == code
    if code == 3:
        assert cli.run("resume", str(run_dir)).returncode == 2
    assert_balanced(report_of(run_dir)["counts"])


def test_the_display_ends_on_the_final_numbers(cli: Cli, tmp_path: Path) -> None:
    """Duplicates across chunks: the last progress event equals the report, and never
    shows more outcomes than rows read."""
    rows = contact_rows(600, seed=5, prefix="disp")
    rows += [list(r) for r in rows[:40]]  # repeated in later chunks
    source = write_csv(tmp_path / "disp.csv", rows)
    result = cli.run(
        "import", str(source), "--list", "Disp", "--create-lists", "--max-rows", "100", "--json"
    )
    assert result.returncode == 2, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    report = events[-1]["report"]
    progress = [e for e in events if e["event"] == "progress"]
    for event in progress:
        shown = sum(event[f"rows_{k}"] for k in ("applied", "failed", "rejected", "duplicate"))
        assert shown <= event["rows_read"], event
    last = progress[-1]
    assert (last["rows_applied"], last["rows_duplicate"]) == (
        report["counts"]["applied"],
        report["counts"]["duplicate"],
    )
    assert report["counts"]["duplicate"] == 40


def test_clear_reports_the_members_it_removed(cli: Cli, tmp_path: Path) -> None:
    """`clear` says how many members it took off, not `0 applied`."""
    source = write_csv(tmp_path / "clear.csv", contact_rows(75, seed=9, prefix="clr"))
    assert cli.run("import", str(source), "--list", "ToClear", "--create-lists").returncode == 0
    result = cli.run("clear", "--yes", "--list", "ToClear", "--run-dir", str(tmp_path / "clear"))
    assert result.returncode == 0, result.stderr
    assert "75 members removed from ToClear" in result.stdout
    assert report_of(tmp_path / "clear")["members_removed"] == 75
    assert (tmp_path / "bulkops-runs").is_dir()
    assert any(p.name.startswith("clear-import-") for p in (tmp_path / "bulkops-runs").iterdir())


def test_run_files_are_private(cli: Cli, tmp_path: Path) -> None:
    """Run directories 0700; journal, report and outcome files 0600 (umask 022)."""
    run_dir = tmp_path / "private" / "run"
    old = os.umask(0o022)
    try:
        result = cli.run(
            "import",
            str(SAMPLES / "messy.csv"),
            "--list",
            "Priv",
            "--create-lists",
            "--run-dir",
            str(run_dir),
        )
    finally:
        os.umask(old)
    assert result.returncode == 2, result.stderr
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    for name in ("journal.sqlite", "report.json", "rejected.csv", "duplicates.csv"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name


def test_a_run_is_refused_while_another_process_runs_it(cli: Cli, tmp_path: Path) -> None:
    """The run lock: a second process cannot resume a run that is running."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = rundirs.RunLock(run_dir).acquire()
    try:
        (run_dir / "journal.sqlite").touch()
        result = cli.run(
            "import", str(SAMPLES / "contacts.csv"), "--list", "L", "--run-dir", str(run_dir)
        )
        assert result.returncode == 64
        assert "another process" in result.stderr
        assert rundirs.is_running(run_dir)
    finally:
        lock.release()
    assert not rundirs.is_running(run_dir)


def test_dry_run_finds_the_duplicates_the_real_run_finds(cli: Cli, tmp_path: Path) -> None:
    """Repeats across chunks: --dry-run counts them like the real run."""
    rows = contact_rows(500, seed=6, prefix="dry")
    rows += [list(r) for r in rows[:30]]
    source = write_csv(tmp_path / "dupes.csv", rows)
    args = ("--list", "Dry", "--max-rows", "100")
    dry = cli.run("import", str(source), *args, "--dry-run", "--json")
    plan = json.loads(dry.stdout.splitlines()[-1])["plan"]
    real = cli.run("import", str(source), *args, "--create-lists", "--run-dir", "real")
    assert real.returncode == 2, real.stderr
    assert plan["duplicate"] == report_of(tmp_path / "real")["counts"]["duplicate"] == 30
    _, status = _status(cli, tmp_path / plan["run_dir"])
    assert status["state"] == "dry-run"


def test_runs_lists_runs_and_prune_removes_only_finished_ones(cli: Cli, tmp_path: Path) -> None:
    """`bulkops runs` shows state, counts, age and directory under ./bulkops-runs (or
    --root); `runs prune` asks for --yes without a terminal, honours --older-than, and keeps
    interrupted runs."""
    source = str(SAMPLES / "contacts.csv")
    assert cli.run("import", source, "--list", "Runs", "--create-lists").returncode == 0
    assert cli.run("import", source, "--list", "NoSuchRunsList").returncode == 64
    many = _many_chunks(tmp_path, name="killed.csv")
    killed = cli.run(
        "import", str(many), "--list", "Runs", "--max-rows", "500",
        BULKOPS_TEST_KILL_AFTER_POST="1",
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    listed = cli.run("runs", "--json")
    no_traceback(listed)
    runs = json.loads(listed.stdout)
    assert sorted(r["state"] for r in runs) == ["complete", "interrupted", "not-started"]
    assert all("-import-" in r["run_dir"] for r in runs)
    complete = next(r for r in runs if r["state"] == "complete")
    assert complete["counts"]["applied"] == 120
    text = cli.run("runs").stdout
    assert "STATE" in text
    assert "interrupted" in text
    assert json.loads(cli.run("runs", "--root", "elsewhere", "--json").stdout) == []
    refused = cli.run("runs", "prune")
    assert refused.returncode == 64
    assert "--yes" in refused.stderr
    assert cli.run("runs", "prune", "--older-than", "1d", "--yes").returncode == 0
    assert len(json.loads(cli.run("runs", "--json").stdout)) == 3
    pruned = cli.run("runs", "prune", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 2 finished runs" in pruned.stdout
    left = json.loads(cli.run("runs", "--json").stdout)
    assert [r["state"] for r in left] == ["interrupted"]
    assert cli.run("runs", "prune", "--older-than", "soon").returncode == 64


def test_export_output_is_private(cli: Cli, tmp_path: Path) -> None:
    """An export's output file is 0600 (umask 022), also over an existing file."""
    source = write_csv(tmp_path / "exp.csv", contact_rows(10, seed=4, prefix="exp"))
    assert cli.run("import", str(source), "--list", "Exp", "--create-lists").returncode == 0
    target = tmp_path / "members.csv"
    target.write_text("old\n")
    target.chmod(0o644)
    old = os.umask(0o022)
    try:
        result = cli.run("export", "members", "--list", "Exp", "-o", str(target))
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "exp0@example.org" in target.read_text()


def test_a_double_ctrl_c_names_the_directory_to_resume(cli: Cli, tmp_path: Path) -> None:
    """Two SIGINTs after the first event: exit 3, the advice names the run's directory
    (the default one, chosen before the run), and status says interrupted."""
    source = _many_chunks(tmp_path, name="twice.csv")
    # 61 chunks, at most 2 activities unfinished: after the first event most are not sent.
    proc = cli.popen("import", str(source), "--list", "Twice", "--create-lists", "--max-rows",
                     "50", "--max-queued", "2", "--json")  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    no_traceback(err)
    (run_dir,) = (tmp_path / "bulkops-runs").iterdir()
    assert proc.returncode == 3
    assert f"bulkops resume {run_dir.relative_to(tmp_path)}" in out + err
    code, status = _status(cli, run_dir)
    assert (code, status["state"]) == (3, "interrupted")
