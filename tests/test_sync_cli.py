"""``bulkops sync`` as a user runs it, against ``bulkops serve``: exit codes, messages,
``status`` and ``resume`` of a sync run, and SIGKILLs at every phase then resume."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.clikit import DEMO_ENV, bulkops, clean_env, served
from tests.enginekit import write_csv


def base_rows(count: int) -> list[list[str]]:
    """Rows ``c0..`` with every column filled."""
    return [[f"c{i}@example.org", f"F{i}", f"L{i}", f"City{i}", "MA"] for i in range(count)]


def changed_rows(count: int) -> list[list[str]]:
    """``base_rows(count)`` with edits, emptied fields, new spellings, new rows; the last
    tenth gone."""
    rows = base_rows(count)[: count - count // 10]
    for i in range(0, len(rows), 7):
        rows[i][1] = f"New{i}"
    for i in range(3, len(rows), 11):
        rows[i][3] = ""  # emptied: a PUT
    for i in range(5, len(rows), 13):
        rows[i][0] = rows[i][0].upper()
    rows += [[f"n{i}@example.org", f"N{i}", "", f"Town{i}", "NY"] for i in range(count // 5)]
    return rows


def state_of(db_path: Path, username: str, list_name: str) -> dict[str, tuple[object, ...]]:
    """The members of a list: key -> (spelling, fields)."""
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute(
            "SELECT c.email_key, c.EmailAddress, c.FirstName, c.LastName, c.City, c.StateCode"
            " FROM contact c JOIN account a ON a.id = c.account_id"
            " JOIN membership m ON m.contact_id = c.id JOIN list l ON l.id = m.list_id"
            " WHERE a.username = ? AND l.name = ?",
            (username, list_name),
        ).fetchall()
    finally:
        db.close()
    return {row[0]: tuple(x or "" for x in row[1:]) for row in rows}


def test_errors_are_clear_and_a_sync_runs_to_completion(tmp_path: Path) -> None:
    """Unknown list and bad options: exit 64 with a message; a sync exits 0, its status is
    its report, and resuming a finished sync is refused."""
    home = tmp_path / "home"
    with served(tmp_path / "server.db", home) as origin:
        env = {**DEMO_ENV, "BULKOPS_SERVER": origin}
        seed = write_csv(tmp_path / "seed.csv", base_rows(20))
        done = bulkops("import", str(seed), "--list", "News", "--create-lists", home=home, env=env)
        assert done.returncode == 0, done.stderr
        path = write_csv(tmp_path / "crm.csv", changed_rows(20))
        missing = bulkops("sync", str(path), "--list", "Nope", home=home, env=env)
        assert missing.returncode == 64
        assert "no list 'Nope'" in missing.stderr
        assert "create" not in missing.stderr  # a sync never creates its list
        bad = bulkops(
            "sync", str(path), "--list", "News", "--max-remove", "lots", home=home, env=env
        )
        assert bad.returncode == 64
        assert "--max-remove" in bad.stderr
        run_dir = tmp_path / "run"
        refused = bulkops(
            "sync",
            str(path),
            "--list",
            "News",
            "--remove-missing",
            "--max-remove",
            "1",
            "--run-dir",
            str(run_dir),
            home=home,
            env=env,
        )
        assert refused.returncode == 1, refused.stderr
        assert "nothing was sent" in refused.stdout
        assert "bulkops: plan: add 4, update " in refused.stderr  # where the sync is
        synced = bulkops(
            "sync",
            str(path),
            "--list",
            "News",
            "--remove-missing",
            "--yes",
            "--json",
            "--run-dir",
            str(run_dir),
            home=home,
            env=env,
        )
        assert synced.returncode == 0, synced.stderr
        report = json.loads(synced.stdout.strip().splitlines()[-1])["report"]
        assert report["state"] == "complete"
        assert report["counts"]["removed"] == 2
        assert report["counts"]["added"] == 4
        status = bulkops("status", str(run_dir), home=home, env=env)
        assert status.returncode == 0
        assert "added 4" in status.stdout
        # `runs` shows a sync's rows: applied = added + updated + unchanged.
        listed = bulkops("runs", "--root", str(tmp_path), "--json", home=home, env=env)
        assert listed.returncode == 0, listed.stderr
        (info,) = [i for i in json.loads(listed.stdout) if i["run_dir"] == str(run_dir)]
        c = report["counts"]
        assert info["counts"] == {
            "read": c["read"],
            "applied": c["added"] + c["updated"] + c["unchanged"],
            "failed": c["failed"] + c["opted_out"],
            "rejected": c["rejected"],
            "duplicate": c["duplicate"],
            "pending": 0,
        }
        table = bulkops("runs", "--root", str(tmp_path), home=home, env=env).stdout
        (line,) = [t for t in table.splitlines() if t.endswith(str(run_dir))]
        assert line.split()[:3] == ["complete", "sync", str(c["read"])]
        again = bulkops("resume", str(run_dir), home=home, env=env)
        assert again.returncode == 64
        assert "complete already" in again.stderr
        dry = bulkops("sync", str(path), "--list", "News", "--dry-run", home=home, env=env)
        assert dry.returncode == 0, dry.stderr
        assert "would send 0 rows" in dry.stdout


def test_sigkill_at_every_phase_then_resume_equals_an_uninterrupted_sync(tmp_path: Path) -> None:
    """Killed after POSTs (of the adds and the removes, which go alongside), at each phase
    boundary and at a random moment, each time resumed: the list ends as an uninterrupted
    sync's."""
    rng = random.Random(int(os.environ.get("BULKOPS_CRASH_SEED", "20261207")))
    accounts = tmp_path / "accounts"
    accounts.write_text("crash:pw-crash:key-crash\nref:pw-ref:key-ref\n")
    home = tmp_path / "home"
    db_path = tmp_path / "server.db"
    seed = write_csv(tmp_path / "seed.csv", base_rows(600))
    path = write_csv(tmp_path / "crm.csv", changed_rows(600))
    with served(db_path, home, "--accounts-file", str(accounts)) as origin:

        def env(user: str, **extra: str) -> dict[str, str]:
            return {
                "BULKOPS_SERVER": origin,
                "BULKOPS_USERNAME": user,
                "BULKOPS_API_KEY": f"key-{user}",
                "BULKOPS_PASSWORD": f"pw-{user}",
                **extra,
            }

        common = ["--list", "News", "--max-rows", "50", "--remove-missing", "--yes", "--quiet"]
        for user in ("ref", "crash"):
            done = bulkops(
                "import", str(seed), "--list", "News", "--create-lists", home=home, env=env(user)
            )
            assert done.returncode == 0, done.stderr
        ref = bulkops(
            "sync",
            str(path),
            *common,
            "--run-dir",
            str(tmp_path / "ref"),
            home=home,
            env=env("ref"),
        )
        assert ref.returncode == 0, ref.stderr
        run_dir = tmp_path / "crash-run"
        # The adds and the removes go alongside (5 + 2 POSTs of 50 rows): the POST kills
        # come first, while both have POSTs left; each boundary is passed by every resume.
        kills = [
            {"BULKOPS_TEST_KILL_AFTER_POST": "2"},
            {"BULKOPS_TEST_KILL_AFTER_POST": "1"},
            {"BULKOPS_TEST_KILL_AFTER_POST": "1"},
            {"BULKOPS_TEST_KILL_SYNC_AT": "adds-done"},
            {"BULKOPS_TEST_KILL_SYNC_AT": "puts-done"},
            {"BULKOPS_TEST_KILL_SYNC_AT": "removes-done"},
            {"BULKOPS_TEST_KILL_SYNC_AT": "confirmed"},
        ]
        first = bulkops(
            "sync",
            str(path),
            *common,
            "--run-dir",
            str(run_dir),
            home=home,
            env=env("crash", BULKOPS_TEST_KILL_SYNC_AT="planned"),
        )
        assert first.returncode == -signal.SIGKILL, first.stderr
        status = bulkops("status", str(run_dir), home=home, env=env("crash"))
        assert status.returncode == 3
        assert "interrupted" in status.stdout
        assert f"bulkops resume {run_dir}" in status.stdout
        # The requests the plan made (the list read) are saved before a kill can lose them.
        shown = bulkops("status", str(run_dir), "--json", home=home, env=env("crash"))
        assert json.loads(shown.stdout)["requests"] >= 2
        for extra in kills:
            killed = bulkops(
                "resume", str(run_dir), "--quiet", home=home, env=env("crash", **extra)
            )
            assert killed.returncode == -signal.SIGKILL, (extra, killed.stderr)
        # And once at a random moment (a fast resume may finish first).
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkops", "resume", str(run_dir), "--quiet"],
            env=clean_env(home, env("crash")),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=rng.uniform(0.2, 1.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        done = bulkops("status", str(run_dir), home=home, env=env("crash"))
        if done.returncode != 0:  # killed before the end (else it ended as the kill came)
            last = bulkops("resume", str(run_dir), "--quiet", home=home, env=env("crash"))
            assert last.returncode == 0, last.stderr
    assert state_of(db_path, "crash", "News") == state_of(db_path, "ref", "News")
    assert len(state_of(db_path, "crash", "News")) == 540 + 120
    mine = json.loads((run_dir / "report.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "report.json").read_text())
    assert mine["counts"] == theirs["counts"]
    assert mine["rows_sent"] == theirs["rows_sent"]
    assert mine["puts"] == theirs["puts"]
