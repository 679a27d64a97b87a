"""``bulkops seed`` and the campaign/event generator: determinism, causality, proportions."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkops.__main__ import EXIT_USAGE, main
from bulkops.server.auth import AccountSpec, Secret, ensure_account
from bulkops.server.seed_cli import seed_account
from bulkops.server.seed_events import seed_campaigns
from bulkops.server.store import Store
from tests.eventkit import DAY, NOW


def dump(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the tables the seed writes."""
    return {
        table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("list", "contact", "membership", "email_address", "campaign",
                      "campaign_list", "campaign_url", "event")
    }  # fmt: skip


def seeded(path: Path, *, seed: int = 3, contacts: int = 600, campaigns: int = 8) -> Store:
    store = Store(path)
    seed_account(
        store.connection(),
        "acme",
        contacts=contacts,
        lists=3,
        campaigns=campaigns,
        seed=seed,
        now_ms=NOW,
    )
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One seeded account (600 contacts, 8 campaigns) shared by the invariant tests."""
    store = seeded(tmp_path_factory.mktemp("seed") / "server.db")
    yield store
    store.close()


def test_same_arguments_give_the_same_data(tmp_path: Path, store: Store) -> None:
    """Two fresh databases seeded alike are identical row for row; another seed differs."""
    again = seeded(tmp_path / "again.db")
    other = seeded(tmp_path / "other.db", seed=4)
    try:
        assert dump(again.connection()) == dump(store.connection())
        assert dump(other.connection())["event"] != dump(store.connection())["event"]
    finally:
        again.close()
        other.close()


def test_campaign_mix_and_times(store: Store) -> None:
    """60% sent within the 80 days before now, 20% scheduled after it, the rest drafts;
    no event after now, none before its campaign was sent."""
    db = store.connection()
    rows = db.execute(
        "SELECT id, status, date, last_run_date, next_run_date FROM campaign ORDER BY id"
    ).fetchall()
    assert [status for _id, status, *_ in rows].count("Sent") == 5
    assert [status for _id, status, *_ in rows].count("Scheduled") == 2
    assert [status for _id, status, *_ in rows].count("Draft") == 1
    for campaign_id, status, date, last_run, next_run in rows:
        if status == "Sent":
            assert NOW - 80 * DAY <= last_run == date <= NOW
            (early, late) = db.execute(
                "SELECT min(time), max(time) FROM event WHERE campaign_id = ?", (campaign_id,)
            ).fetchone()
            assert last_run <= early <= late <= NOW
        elif status == "Scheduled":
            assert next_run == date > NOW
        else:
            assert db.execute(
                "SELECT count(*) FROM event WHERE campaign_id = ?", (campaign_id,)
            ).fetchone() == (0,)


def test_events_are_causal(store: Store) -> None:
    """Only recipients act; bounced messages are not opened; clicks, forwards, opt-outs and
    spam reports come from openers after their first open; clicks name the campaign's links."""
    db = store.connection()
    by: dict[tuple[int, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for campaign, contact, kind, when in db.execute(
        "SELECT campaign_id, contact_id, kind, time FROM event"
    ):
        by[(campaign, contact)][kind].append(when)
    for (campaign, _contact), kinds in by.items():
        assert len(kinds["sends"]) == 1, "every event is a recipient's, each sent once"
        sent = kinds["sends"][0]
        if kinds["bounces"]:
            assert set(kinds) <= {"sends", "bounces"}
            assert min(kinds["bounces"]) >= sent
        acting = [k for k in ("clicks", "forwards", "optouts", "spam") if kinds[k]]
        if acting:
            assert kinds["opens"], f"{acting} without an open in campaign {campaign}"
            first = min(kinds["opens"])
            assert first >= sent
            assert all(min(kinds[k]) > first for k in acting)
    stray = db.execute(
        "SELECT count(*) FROM event e WHERE e.kind = 'clicks' AND NOT EXISTS (SELECT 1 FROM"
        " campaign_url u WHERE u.id = e.url_id AND u.campaign_id = e.campaign_id)"
    ).fetchone()
    assert stray == (0,)


def test_opt_outs_follow_the_status_rules(store: Store) -> None:
    """A contact that opted out is Do Not Mail, on no list, with opt_out_time its opt-out; no
    later campaign was sent to it; every send went to an Active member of the lists then."""
    db = store.connection()
    optouts = db.execute("SELECT contact_id, campaign_id, time FROM event WHERE kind = 'optouts'")
    found = 0
    for contact, campaign, when in optouts.fetchall():
        found += 1
        status, opt_out_time = db.execute(
            "SELECT status, opt_out_time FROM contact WHERE id = ?", (contact,)
        ).fetchone()
        assert (status, opt_out_time) == ("Do Not Mail", when)
        assert db.execute(
            "SELECT count(*) FROM membership WHERE contact_id = ?", (contact,)
        ).fetchone() == (0,)
        later = db.execute(
            "SELECT count(*) FROM event WHERE contact_id = ? AND kind = 'sends' AND time > ?",
            (contact, when),
        ).fetchone()
        assert later == (0,), f"contact {contact} got mail after opting out of {campaign}"
    assert found > 0
    (list_count,) = db.execute(
        "SELECT count(*) FROM list l WHERE member_count !="
        " (SELECT count(*) FROM membership m WHERE m.list_id = l.id)"
    ).fetchone()
    assert list_count == 0


def test_proportions_are_plausible(store: Store) -> None:
    """Bounces 1–6% of sends, opens 15–60%, clicks fewer than opens, forwards and opt-outs
    rarer still; every sent campaign has sends, opens and clicks."""
    db = store.connection()
    totals = dict(db.execute("SELECT kind, count(*) FROM event GROUP BY kind").fetchall())
    sends = totals["sends"]
    assert 0.01 < totals["bounces"] / sends < 0.06
    assert 0.15 < totals["opens"] / sends < 0.6
    assert 0 < totals["clicks"] < totals["opens"]
    assert 0 < totals["forwards"] < totals["clicks"]
    assert 0 < totals["optouts"] < totals["clicks"]
    per = db.execute(
        "SELECT c.id, sum(e.kind = 'sends'), sum(e.kind = 'opens'), sum(e.kind = 'clicks')"
        " FROM campaign c JOIN event e ON e.campaign_id = c.id GROUP BY c.id"
    ).fetchall()
    assert len(per) == 5
    assert all(s > 0 and o > 0 and c > 0 for _id, s, o, c in per)


def test_seed_campaigns_refuses_foreign_lists_and_senders(tmp_path: Path) -> None:
    """Lists and sender addresses must be the account's."""
    store = seeded(tmp_path / "x.db", contacts=10, campaigns=0)
    db = store.connection()
    try:
        with pytest.raises(ValueError, match="lists"):
            seed_campaigns(db, 1, 1, lists=[99], seed=1, now_ms=NOW, from_email=1)
        with pytest.raises(ValueError, match="sender"):
            seed_campaigns(db, 1, 1, lists=[1], seed=1, now_ms=NOW, from_email=99)
        with pytest.raises(ValueError, match="count"):
            seed_campaigns(db, 1, -1, lists=[1], seed=1, now_ms=NOW, from_email=1)
    finally:
        store.close()


def test_the_command_creates_the_account_then_serve_sets_its_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bulkops seed makes the account without credentials and reports JSON; a second run adds
    to it; ensure_account (what serve --account runs) finds the same account."""
    path = tmp_path / "server.db"
    args = ["seed", "--db", str(path), "--account", "Acme", "--contacts", "50"]
    assert main([*args, "--campaigns", "3", "--now", "2024-06-01", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["account"] == "acme"
    assert report["account_created"] is True
    assert report["contacts"] == 50
    assert report["total_events"] == sum(report["events"].values()) > 0
    assert report["has_credentials"] is False
    assert main([*args, "--campaigns", "0", "--now", "2024-06-01"]) == 0
    printed = capsys.readouterr().out
    assert "existing" in printed
    assert "no credentials yet" in printed
    store = Store(path)
    try:
        db = store.connection()
        assert db.execute("SELECT count(*) FROM credential").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM contact").fetchone() == (100,)
        assert db.execute("SELECT count(*) FROM list").fetchone() == (3,)
        assert db.execute("SELECT count(*) FROM email_address").fetchone() == (2,)
        account, created = ensure_account(
            db, AccountSpec(username="acme", password=Secret("pw"), api_key=Secret("key"))
        )
        assert (account.id, created) == (1, False)
    finally:
        store.close()


@pytest.mark.parametrize(
    "extra",
    [
        ["--account", "a/b"],
        ["--account", "x", "--now", "yesterday"],
        ["--account", "x", "--contacts", "-5"],
        ["--account", "x", "--campaigns", "many"],
    ],
)
def test_bad_arguments_are_usage_errors(
    tmp_path: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 64 with a message; no database is needed to say so."""
    assert main(["seed", "--db", str(tmp_path / "s.db"), *extra]) == EXIT_USAGE
    assert capsys.readouterr().err
