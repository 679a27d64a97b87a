"""``bulkops export campaigns|campaign-events|contact-events``: mapping, output, resume."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bulkops.__main__ import EXIT_USAGE, main
from bulkops.cli.events import add_event_arguments, event_collection
from bulkops.errors import ConfigError
from bulkops.server.app import ServerConfig
from bulkops.server.seed_cli import seed_account
from bulkops.server.serve import DEMO_ACCOUNT, open_state
from bulkops.server.store import now_ms

DAY = 24 * 3600 * 1000


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?")
    add_event_arguments(parser)
    parser.add_argument("--collection")
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (("campaign-events", "1100000000001", "--type", "opens"),
         "campaigns/1100000000001/events/opens?pageSize=200"),
        (("campaign-events", "7", "--type", "clicks", "--url", "3"),
         "campaigns/7/events/urls/3?pageSize=200"),
        (("contact-events", "42", "--type", "sends"), "contacts/42/events/sends"),
        (("contact-events", "42", "--type", "summary"), "contacts/42/events/summary"),
        (("lists",), None),
    ],
)  # fmt: skip
def test_event_exports_walk_their_collection(argv: tuple[str, ...], path: str | None) -> None:
    """Each event export is a collection export of the right path (pageSize=200 on campaigns)."""
    args = parse(*argv)
    assert event_collection(args.what, args) == path


@pytest.mark.parametrize(
    "argv",
    [
        ("campaign-events", "--type", "opens"),
        ("campaign-events", "abc", "--type", "opens"),
        ("campaign-events", "7"),
        ("campaign-events", "7", "--type", "summary"),
        ("campaign-events", "7", "--type", "opens", "--url", "3"),
        ("campaign-events", "7", "--type", "clicks", "--url", "x"),
        ("contact-events", "7", "--type", "clicks", "--url", "3"),
        ("campaign-events", "7", "--type", "opens", "--collection", "lists"),
        ("lists", "7"),
        ("lists", "--type", "opens"),
    ],
)
def test_bad_event_export_arguments_are_config_errors(argv: tuple[str, ...]) -> None:
    """Missing or malformed ids and types, and options that do not belong together."""
    args = parse(*argv)
    with pytest.raises(ConfigError):
        event_collection(args.what, args)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[int]]:
    """A BULKOPS_HOME whose demo account was seeded now: 3000 contacts, 3 campaigns."""
    for name in list(os.environ):
        if name.startswith("BULKOPS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("BULKOPS_HOME", str(home))
    state = open_state(home / "server.db", ServerConfig(), accounts=[DEMO_ACCOUNT])
    try:
        summary = seed_account(
            state.store.connection(), "demo", contacts=3000, lists=2, campaigns=3, seed=9,
            now_ms=now_ms(),
        )  # fmt: skip
    finally:
        state.store.close()
    monkeypatch.chdir(tmp_path)
    return home, summary.campaigns


def window_events(home: Path, where: str, *args: object) -> list[str]:
    """The composite ids of matching events inside the window, newest first."""
    db = sqlite3.connect(home / "server.db")
    try:
        rows = db.execute(
            f"SELECT campaign_id, id, time FROM event WHERE {where} AND time >= ?"
            " ORDER BY time DESC, id DESC",
            (*args, now_ms() - 90 * DAY),
        ).fetchall()
    finally:
        db.close()
    return [f"{c},{i},{t}" for c, i, t in rows]


def test_campaign_opens_export_to_csv(
    home: tuple[Path, list[int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every open event of the campaign, once, newest first, with its contact and time."""
    path, campaigns = home
    out = tmp_path / "opens.csv"
    code = main(["export", "campaign-events", str(campaigns[0]), "--type", "opens",
                 "-o", str(out), "--json", "--quiet"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])["report"]
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    expected = window_events(path, "campaign_id = ? AND kind = 'opens'", campaigns[0])
    assert len(expected) > 400
    assert [row["id"] for row in rows] == expected
    assert report["rows"] == len(expected)
    assert all(row["kind"] == "opens" and row["email"] for row in rows)


def test_contact_events_export_to_json_lines(home: tuple[Path, list[int]], tmp_path: Path) -> None:
    """A contact's sends as JSON Lines."""
    path, _campaigns = home
    db = sqlite3.connect(path / "server.db")
    (contact,) = db.execute("SELECT contact_id FROM event LIMIT 1").fetchone()
    db.close()
    out = tmp_path / "sends.jsonl"
    assert main(["export", "contact-events", str(contact), "--type", "sends",
                 "-o", str(out), "--quiet"]) == 0  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == window_events(
        path, "contact_id = ? AND kind = 'sends'", contact
    )
    assert {r["contact_id"] for r in records} == {str(contact)}


def test_event_export_usage_errors(home: tuple[Path, list[int]], tmp_path: Path) -> None:
    """No id, or no type: exit 64 before anything is fetched."""
    out = str(tmp_path / "x.csv")
    assert main(["export", "campaign-events", "--type", "opens", "-o", out]) == EXIT_USAGE
    assert main(["export", "campaign-events", "1", "-o", out]) == EXIT_USAGE


def test_a_killed_event_export_resumes_to_the_same_file(
    home: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """SIGKILLed after 500 rows, `bulkops resume` finishes it; the file equals an
    uninterrupted export's."""
    _path, campaigns = home
    common = ["export", "campaign-events", str(campaigns[0]), "--type", "sends",
              "--checkpoint-rows", "200", "--quiet"]  # fmt: skip
    whole, part = tmp_path / "whole.csv", tmp_path / "part.csv"
    assert main([*common, "-o", str(whole), "--run-dir", str(tmp_path / "r1")]) == 0
    env = {**os.environ, "BULKOPS_TEST_KILL_AFTER_ROWS": "500"}
    killed = subprocess.run(
        [sys.executable, "-m", "bulkops", *common, "-o", str(part),
         "--run-dir", str(tmp_path / "r2")],
        env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert killed.returncode == -9
    assert not part.exists()
    assert main(["resume", str(tmp_path / "r2"), "--quiet"]) == 0
    assert part.read_bytes() == whole.read_bytes()
    assert whole.read_bytes().count(b"\r\n") > 1000
