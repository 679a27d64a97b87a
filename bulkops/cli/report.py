"""``bulkops report CAMPAIGN``: a campaign's results — counts and rates — as a table or JSON.

One ``GET /campaigns/{id}``: the counters of the campaign resource (spec §8.2), which the
server keeps equal to the campaign's events, and its tracked links with their clicks.

Rates (None, shown as ``-``, when the base is 0):

* ``bounces / sent`` — the bounce rate;
* ``delivered = sent - bounces``; ``opens``, ``clicks``, ``forwards``, ``opt_outs`` and
  ``spam_reports`` are divided by ``delivered``;
* ``click_to_open = clicks / opens``;
* each link's share is its clicks divided by the campaign's clicks.

Opens and clicks are the counters, i.e. events (an open counted each time it happens), so
their rates can exceed 100% in principle; they read "per delivered message".
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime

import msgspec
import trio

from bulkops.cli.common import add_connection_arguments, connect
from bulkops.errors import ConfigError, ProtocolError, single_errors
from bulkops.wire.atom.campaigns import campaign_from_entry
from bulkops.wire.atom.syntax import format_time
from bulkops.wire.model import Campaign, CampaignCounts

__all__ = [
    "CampaignReport",
    "LinkReport",
    "Rates",
    "add_arguments",
    "campaign_report",
    "render_table",
    "run",
]

_ID_RE = re.compile(r"[0-9]{1,18}")


class Rates(msgspec.Struct, frozen=True, kw_only=True):
    """The campaign's rates as fractions (0.25 = 25%), None when the base is 0."""

    delivered: float | None
    bounces: float | None
    opens: float | None
    clicks: float | None
    click_to_open: float | None
    forwards: float | None
    opt_outs: float | None
    spam_reports: float | None


class LinkReport(msgspec.Struct, frozen=True, kw_only=True):
    """One tracked link: its id, URL, clicks and share of the campaign's clicks."""

    id: str
    url: str
    clicks: int
    share: float | None


class CampaignReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``bulkops report`` prints (``--json``: this, encoded)."""

    id: str
    name: str
    status: str
    date: str
    last_run_date: str | None
    subject: str
    counts: CampaignCounts
    delivered: int
    rates: Rates
    links: list[LinkReport]


def _ratio(part: int, whole: int) -> float | None:
    return None if whole <= 0 else part / whole


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def campaign_report(campaign: Campaign) -> CampaignReport:
    """The counts and rates of a campaign read in its full view.

    Raises:
        ProtocolError: the entry carries no counters (a collection entry, not the resource).
    """
    counts = campaign.counts
    if counts is None:
        raise ProtocolError(f"campaign {campaign.id} came without its counters")
    delivered = max(counts.sent - counts.bounces, 0)
    rates = Rates(
        delivered=_ratio(delivered, counts.sent),
        bounces=_ratio(counts.bounces, counts.sent),
        opens=_ratio(counts.opens, delivered),
        clicks=_ratio(counts.clicks, delivered),
        click_to_open=_ratio(counts.clicks, counts.opens),
        forwards=_ratio(counts.forwards, delivered),
        opt_outs=_ratio(counts.opt_outs, delivered),
        spam_reports=_ratio(counts.spam_reports, delivered),
    )
    links = [
        LinkReport(
            id=url.id, url=url.url, clicks=url.clicks, share=_ratio(url.clicks, counts.clicks)
        )
        for url in sorted(campaign.urls, key=lambda url: (-url.clicks, url.id))
    ]
    return CampaignReport(
        id=campaign.id,
        name=campaign.name,
        status=campaign.status,
        date=format_time(campaign.date),
        last_run_date=_time(campaign.last_run_date),
        subject=campaign.fields.get("Subject", ""),
        counts=counts,
        delivered=delivered,
        rates=rates,
        links=links,
    )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def render_table(report: CampaignReport) -> str:
    """The report as an aligned plain-text table (what ``bulkops report`` prints)."""
    c, r = report.counts, report.rates
    rows = [
        ("Sent", c.sent, "", ""),
        ("Delivered", report.delivered, _percent(r.delivered), "of sent"),
        ("Bounces", c.bounces, _percent(r.bounces), "of sent"),
        ("Opens", c.opens, _percent(r.opens), "of delivered"),
        ("Clicks", c.clicks, _percent(r.clicks), "of delivered"),
        ("Click-to-open", None, _percent(r.click_to_open), "clicks / opens"),
        ("Forwards", c.forwards, _percent(r.forwards), "of delivered"),
        ("Opt-outs", c.opt_outs, _percent(r.opt_outs), "of delivered"),
        ("Spam reports", c.spam_reports, _percent(r.spam_reports), "of delivered"),
    ]
    count_width = max(len("count"), *(len(f"{n:,}") for _, n, _, _ in rows if n is not None))
    lines = [
        f"Campaign {report.id}: {report.name}",
        f"Status {report.status}"
        + (f", sent {report.last_run_date}" if report.last_run_date else f", {report.date}"),
    ]
    if report.subject:
        lines.append(f"Subject: {report.subject}")
    lines.append("")
    lines.append(f"{'':<14} {'count':>{count_width}} {'rate':>7}")
    for label, count, rate, basis in rows:
        shown = "" if count is None else f"{count:,}"
        lines.append(f"{label:<14} {shown:>{count_width}} {rate:>7}  {basis}".rstrip())
    if report.links:
        lines.append("")
        click_width = max(len("clicks"), *(len(f"{link.clicks:,}") for link in report.links))
        lines.append(f"{'clicks':>{click_width}} {'share':>7}  link")
        lines.extend(
            f"{link.clicks:>{click_width},} {_percent(link.share):>7}  {link.url}"
            for link in report.links
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bulkops report``."""
    parser.add_argument("campaign", metavar="CAMPAIGN", help="the campaign's id")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Fetch the campaign and print its report.

    Raises:
        ConfigError: a malformed campaign id.
        NotFound, AuthError, TransportError: as the client raises them.
    """
    campaign_id = str(args.campaign).strip()
    if _ID_RE.fullmatch(campaign_id) is None:
        raise ConfigError(f"CAMPAIGN must be a campaign id (digits), not {args.campaign!r}")

    async def fetch() -> Campaign:
        async with connect(args) as client:
            return await client.get_entry(f"campaigns/{campaign_id}", campaign_from_entry)

    with single_errors():  # the embedded server's nursery wraps errors in a group
        campaign = trio.run(fetch)
    report = campaign_report(campaign)
    if args.json:
        print(msgspec.json.encode(report).decode(), flush=True)
    else:
        print(render_table(report), flush=True)
    return 0
