"""``bulkops report CAMPAIGN``: rates, the table, JSON, and the command on the embedded server."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulkops.__main__ import EXIT_FATAL, EXIT_USAGE, main
from bulkops.cli.report import campaign_report, render_table
from bulkops.errors import ProtocolError
from bulkops.server.app import ServerConfig
from bulkops.server.seed_cli import seed_account
from bulkops.server.serve import DEMO_ACCOUNT, open_state
from bulkops.server.store import now_ms
from bulkops.wire.model import Campaign, CampaignCounts, CampaignUrl

WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def campaign(counts: CampaignCounts | None, urls: tuple[CampaignUrl, ...] = ()) -> Campaign:
    return Campaign(
        id="1100000000001",
        name="Spring",
        status="Sent",
        date=WHEN,
        updated=WHEN,
        last_run_date=WHEN,
        counts=counts,
        fields={"Subject": "Flowers"},
        urls=urls,
    )


def test_rates_use_sent_for_bounces_and_delivered_for_the_rest() -> None:
    """bounces/sent; opens, clicks, forwards, opt-outs, spam per delivered; clicks/opens."""
    counts = CampaignCounts(
        sent=1000, bounces=20, opens=490, clicks=98, forwards=9, opt_outs=4, spam_reports=1
    )
    urls = (CampaignUrl(id="1", url="a", clicks=38), CampaignUrl(id="2", url="b", clicks=60))
    report = campaign_report(campaign(counts, urls))
    rates = report.rates
    assert report.delivered == 980
    assert rates.delivered == pytest.approx(0.98)
    assert rates.bounces == pytest.approx(0.02)
    assert rates.opens == pytest.approx(0.5)
    assert rates.clicks == pytest.approx(0.1)
    assert rates.click_to_open == pytest.approx(0.2)
    assert rates.forwards == pytest.approx(9 / 980)
    assert rates.opt_outs == pytest.approx(4 / 980)
    assert rates.spam_reports == pytest.approx(1 / 980)
    assert [(link.id, link.share) for link in report.links] == [
        ("2", pytest.approx(60 / 98)),
        ("1", pytest.approx(38 / 98)),
    ]


def test_zero_bases_give_no_rate() -> None:
    """A draft (nothing sent) has no rates, not a division by zero; the table shows '-'."""
    report = campaign_report(campaign(CampaignCounts()))
    assert all(value is None for value in json.loads(_json(report))["rates"].values())
    table = render_table(report)
    assert "Opens" in table
    assert "%" not in table


def test_a_summary_entry_is_not_a_report() -> None:
    """Without counters (a collection entry) there is nothing to report."""
    with pytest.raises(ProtocolError, match="counters"):
        campaign_report(campaign(None))


def test_the_table_shows_counts_rates_and_links() -> None:
    """Counts with thousands separators, rates as percentages, links by clicks."""
    counts = CampaignCounts(sent=12345, bounces=345, opens=3000, clicks=600)
    link = CampaignUrl(id="1", url="https://x.example/", clicks=600)
    table = render_table(campaign_report(campaign(counts, (link,))))
    lines = table.splitlines()
    assert lines[0] == "Campaign 1100000000001: Spring"
    assert ["Sent", "12,345"] in [line.split() for line in lines]
    assert ["Bounces", "345", "2.8%", "of", "sent"] in [line.split() for line in lines]
    assert ["Opens", "3,000", "25.0%", "of", "delivered"] in [line.split() for line in lines]
    assert lines[-1].split() == ["600", "100.0%", "https://x.example/"]


def _json(report: object) -> str:
    import msgspec

    return msgspec.json.encode(report).decode()


# -- the command ----------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[int]]:
    """A BULKOPS_HOME whose demo account was seeded "now" (so its events are in the window)."""
    for name in list(os.environ):
        if name.startswith("BULKOPS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("BULKOPS_HOME", str(home))
    state = open_state(home / "server.db", ServerConfig(), accounts=[DEMO_ACCOUNT])
    try:
        summary = seed_account(
            state.store.connection(),
            "demo",
            contacts=300,
            lists=2,
            campaigns=3,
            seed=5,
            now_ms=now_ms(),
        )
    finally:
        state.store.close()
    return home, summary.campaigns


def event_counts(home: Path, campaign_id: int) -> dict[str, int]:
    import sqlite3

    db = sqlite3.connect(home / "server.db")
    try:
        return dict(
            db.execute(
                "SELECT kind, count(*) FROM event WHERE campaign_id = ? GROUP BY kind",
                (campaign_id,),
            ).fetchall()
        )
    finally:
        db.close()


def test_report_prints_the_campaigns_results(
    home: tuple[Path, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The table and the JSON carry the counters, which equal the events in the store."""
    path, campaigns = home
    sent = campaigns[0]
    expected = event_counts(path, sent)
    assert main(["report", str(sent)]) == 0
    table = capsys.readouterr().out
    assert f"Campaign {sent}:" in table
    assert ["Sent", f"{expected['sends']:,}"] in [line.split()[:2] for line in table.splitlines()]
    assert main(["report", str(sent), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {
        "sent": expected["sends"],
        "opens": expected.get("opens", 0),
        "clicks": expected.get("clicks", 0),
        "bounces": expected.get("bounces", 0),
        "forwards": expected.get("forwards", 0),
        "opt_outs": expected.get("optouts", 0),
        "spam_reports": expected.get("spam", 0),
    }
    assert sum(link["clicks"] for link in report["links"]) == report["counts"]["clicks"]
    assert report["rates"]["bounces"] == pytest.approx(
        report["counts"]["bounces"] / report["counts"]["sent"]
    )


def test_unknown_and_malformed_campaigns(
    home: tuple[Path, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """404 is a fatal error with a message (exit 4); a non-numeric id a usage error (64)."""
    assert main(["report", "1100000009999"]) == EXIT_FATAL
    assert "No such campaign" in capsys.readouterr().err
    assert main(["report", "spring"]) == EXIT_USAGE
    assert "campaign id" in capsys.readouterr().err
