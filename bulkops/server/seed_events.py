"""Seeded, deterministic campaigns and their tracking events, written straight into the store.

:func:`seed_campaigns` gives an account draft, scheduled and sent campaigns; for each sent
campaign it writes the sends, opens, clicks on the campaign's links, bounces with codes,
forwards, opt-outs and spam reports its recipients produced, in plausible proportions.

Invariants:

* **Deterministic.** One ``random.Random(seed)`` is drawn from in a fixed order; the same
  arguments on the same starting database give the same rows, ids and times. Nothing reads
  the wall clock except to measure :attr:`CampaignSeedReport.seconds`.
* **Consistent with the server's rules.** Campaigns are written as
  :mod:`bulkops.server.campaign_queries` writes them (ids ``1100000000000 + n``, the same ``doc``
  encoding, URLs extracted from the content), so the API serves them unchanged; counters are
  the events (nothing else is written). Sent campaigns are processed oldest first: a
  campaign goes to the ``Active`` contacts of its lists inserted before its send time, and a
  contact who opts out becomes ``Do Not Mail`` at that moment (off every list, ``opt_out_*``
  set) so later campaigns skip it, as the contact status rules require.
* **Causal and windowed.** Only recipients have events; bounced messages are never opened;
  clicks, forwards, opt-outs and spam reports come from openers, after their first open;
  every click names one of the campaign's URLs. No event is later than ``now_ms``, and sent
  campaigns fall within the 80 days before it, so all of them are inside the API's 90-day
  window when served at ``now_ms``.
* **Fast and bounded.** Events are generated per campaign into flat lists of tuples with
  one bound ``random()`` method and inserted with ``executemany`` in one transaction per
  campaign: O(recipients of one campaign) memory; about 1 million events in 10–20 s.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

import attrs

from bulkops.server.campaign_queries import CAMPAIGN_ID_BASE, encode_doc, extract_urls
from bulkops.server.store import STATUS_ACTIVE, STATUS_DO_NOT_MAIL, write_tx

__all__ = ["CampaignSeedReport", "seed_campaigns"]

_HOUR = 3_600_000
_DAY = 24 * _HOUR

_THEMES = (
    "Spring Sale",
    "Weekly Newsletter",
    "Product Launch",
    "Customer Survey",
    "Holiday Offers",
    "Webinar Invitation",
    "Flash Sale",
    "Monthly Digest",
    "New Arrivals",
    "Event Reminder",
    "Loyalty Rewards",
    "Back in Stock",
)
_LINKS = (
    "https://www.example.com/shop",
    "https://www.example.com/blog/latest",
    "https://www.example.com/events",
    "https://social.example.net/acme",
    "https://www.example.com/account/preferences",
    "https://partners.example.org/offers",
    "https://www.example.com/support",
    "https://www.example.com/stores",
)
# (code, weight, bounce message); descriptions are the wire vocabulary's BOUNCE_CODES.
_BOUNCES = (
    ("B", 0.35, "550 5.1.1 Recipient address rejected: User unknown"),
    ("D", 0.10, "554 5.4.4 Host or domain name not found"),
    ("F", 0.10, "552 5.2.2 Mailbox full"),
    ("S", 0.05, "554 5.7.1 Account suspended"),
    ("V", 0.10, "Auto-reply: out of the office until further notice"),
    ("X", 0.15, "451 4.3.0 Temporary local problem, message expired"),
    ("Z", 0.15, "550 5.7.1 Message rejected by content filter"),
)
_BOUNCE_CUTS = tuple(accumulate(weight for _code, weight, _message in _BOUNCES))
_INSERT_EVENT = (
    "INSERT INTO event (account_id, campaign_id, contact_id, kind, time, url_id, code, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

EventRow = tuple[int, int, int, str, int, int | None, str | None, str | None]


@attrs.frozen(kw_only=True)
class CampaignSeedReport:
    """What :func:`seed_campaigns` wrote.

    Attributes:
        campaign_ids: ids of the campaigns created, oldest first.
        sent: of which ``Sent``.
        scheduled: of which ``Scheduled``.
        drafts: of which ``Draft``.
        events: events written, by kind (``sends``, ``opens``, …, ``spam``).
        opted_out: contacts that opted out (now ``Do Not Mail``).
        seconds: wall time taken.
    """

    campaign_ids: tuple[int, ...]
    sent: int
    scheduled: int
    drafts: int
    events: dict[str, int]
    opted_out: int
    seconds: float

    @property
    def total_events(self) -> int:
        """All events written."""
        return sum(self.events.values())

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.total_events / self.seconds if self.seconds > 0 else float("inf")


@attrs.frozen(kw_only=True)
class _Rates:
    """One campaign's behaviour: shares of sends bounced and opened, of openers acting."""

    bounce: float
    open: float
    click: float
    forward: float
    optout: float
    spam: float


def _content(theme: str, org: str, urls: Sequence[str]) -> tuple[str, str]:
    links = "".join(
        f'<p><a href="{url}">{label}</a></p>'
        for url, label in zip(
            urls,
            (
                "Shop now",
                "Read more",
                "See events",
                "Follow us",
                "Your preferences",
                "Partner offers",
                "Get help",
                "Find a store",
            ),
            strict=False,
        )
    )
    html = (
        f"<html><body><Greeting/><h1>{theme}</h1><p>News from {org}.</p>{links}"
        "<OpenTracking/></body></html>"
    )
    text = f"<Text><Greeting/> {theme}: news from {org}. " + " ".join(urls) + "</Text>"
    return html, text


def _fields(
    theme: str, subject: str, org: str, from_name: str, urls: Sequence[str]
) -> dict[str, str]:
    html, text = _content(theme, org, urls)
    return {
        "Subject": subject,
        "FromName": from_name,
        "CampaignType": "CUSTOM",
        "ViewAsWebpage": "YES",
        "ViewAsWebpageLinkText": "Click here",
        "ViewAsWebpageText": "Having trouble viewing this email?",
        "PermissionReminder": "YES",
        "PermissionReminderText": "You're receiving this email because of your relationship "
        f"with {org}.",
        "GreetingSalutation": "Dear",
        "GreetingName": "FirstName",
        "GreetingString": "Greetings!",
        "OrganizationName": org,
        "OrganizationAddress1": "1601 Trapelo Rd.",
        "OrganizationCity": "Waltham",
        "OrganizationState": "MA",
        "OrganizationCountry": "us",
        "OrganizationPostalCode": "02451",
        "IncludeForwardEmail": "YES",
        "ForwardEmailLinkText": "Forward email",
        "IncludeSubscribeLink": "YES",
        "SubscribeLinkText": "Join our mailing list!",
        "EmailContentFormat": "HTML",
        "EmailContent": html,
        "EmailTextContent": text,
    }


def _recipients(
    db: sqlite3.Connection, account_id: int, list_ids: Sequence[int], before: int
) -> list[tuple[int, str]]:
    marks = ", ".join("?" * len(list_ids))
    return db.execute(
        "SELECT c.id, c.EmailAddress FROM contact c WHERE c.account_id = ? AND c.status = ?"
        " AND c.insert_time <= ? AND c.id IN"
        f" (SELECT contact_id FROM membership WHERE list_id IN ({marks})) ORDER BY c.id",
        (account_id, STATUS_ACTIVE, before, *list_ids),
    ).fetchall()


def _events_of_campaign(
    rnd: random.Random,
    account_id: int,
    campaign_id: int,
    sent_at: int,
    now_ms: int,
    recipients: Sequence[tuple[int, str]],
    url_ids: Sequence[int],
    rates: _Rates,
) -> tuple[list[EventRow], dict[int, int]]:
    """The events of one sent campaign, and the opt-outs (contact id -> time)."""
    u = rnd.random
    log = math.log
    rows: list[EventRow] = []
    add = rows.append
    optouts: dict[int, int] = {}
    n = len(recipients)
    spread = max(1, _HOUR // max(n, 1))  # sending takes about an hour
    nurls = len(url_ids)
    last_bounce = len(_BOUNCES) - 1
    a, c = account_id, campaign_id
    for i, (contact, _email) in enumerate(recipients):
        sent = sent_at + i * spread
        if sent > now_ms:
            break
        add((a, c, contact, "sends", sent, None, None, None))
        if u() < rates.bounce:
            code, _weight, message = _BOUNCES[min(bisect_right(_BOUNCE_CUTS, u()), last_bounce)]
            at = sent + int(u() * 300_000)
            if at <= now_ms:
                add((a, c, contact, "bounces", at, None, code, message))
            continue
        if u() >= rates.open:
            continue
        # Opens: the first after an exponential delay (mean 5 h), up to two more.
        first = sent + min(int(-log(1.0 - u()) * 5 * _HOUR), 30 * _DAY)
        if first > now_ms:
            continue
        add((a, c, contact, "opens", first, None, None, None))
        again = first
        while u() < 0.3:
            again += int(-log(1.0 - u()) * _DAY)
            if again > now_ms:
                break
            add((a, c, contact, "opens", again, None, None, None))
        if u() < rates.click and nurls:
            at = first
            while True:
                at += 5_000 + int(u() * 600_000)
                # The first links of a message get most clicks.
                url = url_ids[int(u() * u() * nurls)]
                if at <= now_ms:
                    add((a, c, contact, "clicks", at, url, None, None))
                if u() >= 0.25:
                    break
        if u() < rates.forward:
            at = first + int(u() * _HOUR)
            if at <= now_ms:
                add((a, c, contact, "forwards", at, None, None, None))
        if u() < rates.spam:
            at = first + int(u() * _HOUR)
            if at <= now_ms:
                add((a, c, contact, "spam", at, None, None, None))
        if u() < rates.optout:
            at = first + 60_000 + int(u() * 1_800_000)
            if at <= now_ms:
                add((a, c, contact, "optouts", at, None, None, None))
                optouts[contact] = at
    return rows, optouts


def _next_campaign_id(db: sqlite3.Connection) -> int:
    (top,) = db.execute("SELECT coalesce(max(id), 0) FROM campaign").fetchone()
    return max(int(top), CAMPAIGN_ID_BASE) + 1


def _checked_arguments(
    db: sqlite3.Connection,
    account_id: int,
    count: int,
    lists: Sequence[int],
    senders: tuple[int, int],
    sent_ratio: float,
    scheduled_ratio: float,
) -> list[int]:
    """The list ids without repeats; ValueError for a bad count or ratio, or a list or sender
    address that is not the account's."""
    from_email, reply = senders
    if count < 0:
        raise ValueError("count must be >= 0")
    if sent_ratio < 0 or scheduled_ratio < 0 or sent_ratio + scheduled_ratio > 1:
        raise ValueError("sent_ratio and scheduled_ratio must be >= 0 and add up to at most 1")
    list_ids = list(dict.fromkeys(lists))
    if list_ids:
        marks = ", ".join("?" * len(list_ids))
        (found,) = db.execute(
            f"SELECT count(*) FROM list WHERE account_id = ? AND id IN ({marks})",
            (account_id, *list_ids),
        ).fetchone()
        if found != len(list_ids):
            raise ValueError(f"not all of {list_ids} are lists of account {account_id}")
    row = db.execute(
        "SELECT email FROM email_address WHERE account_id = ? AND id = ?", (account_id, from_email)
    ).fetchone()
    if (
        row is None
        or db.execute(
            "SELECT 1 FROM email_address WHERE account_id = ? AND id = ?", (account_id, reply)
        ).fetchone()
        is None
    ):
        raise ValueError(f"the sender addresses are not addresses of account {account_id}")
    return list_ids


def _send(
    db: sqlite3.Connection,
    rnd: random.Random,
    account_id: int,
    campaign_id: int,
    when: int,
    now_ms: int,
    targets: list[int],
    totals: dict[str, int],
) -> int:
    """Write the events of a sent campaign (counted into ``totals``) and opt out those who
    opted out; return how many did."""
    u = rnd.random
    url_ids = [
        row[0]
        for row in db.execute(
            "SELECT id FROM campaign_url WHERE campaign_id = ? ORDER BY id",
            (campaign_id,),
        )
    ]
    rates = _Rates(
        bounce=0.03 * (0.5 + u()),
        open=0.24 * (0.7 + 0.6 * u()),
        click=0.28 * (0.6 + 0.8 * u()),
        forward=0.02 * (0.5 + u()),
        optout=0.01 * (0.5 + u()),
        spam=0.002 * (0.5 + u()),
    )
    recipients = _recipients(db, account_id, targets, when)
    rows, optouts = _events_of_campaign(
        rnd, account_id, campaign_id, when, now_ms, recipients, url_ids, rates
    )
    db.executemany(_INSERT_EVENT, rows)
    for event in rows:
        totals[event[3]] += 1
    if optouts:
        db.executemany(
            "UPDATE contact SET status = ?, opt_out_source = 'ACTION_BY_CONTACT',"
            " opt_out_time = ?, opt_out_reason = '',"
            " last_update_time = max(last_update_time, ?) WHERE id = ?",
            [(STATUS_DO_NOT_MAIL, at, at, cid) for cid, at in optouts.items()],
        )
        db.executemany(
            "DELETE FROM membership WHERE contact_id = ?",
            [(cid,) for cid in optouts],
        )
    return len(optouts)


def _published(theme: str, account_id: int, campaign_id: int) -> dict[str, str]:
    """The elements a sent campaign has: its share page and archive."""
    return {
        "SharePageURL": (
            f"http://myemail.constantcontact.com/{theme.replace(' ', '-')}.html"
            f"?soid={account_id}&aid={campaign_id}"
        ),
        "ArchiveStatus": "Published",
        "ArchiveURL": f"http://archive.constantcontact.com/fs{account_id:03d}/{campaign_id}.html",
    }


def _write_parts(
    db: sqlite3.Connection, campaign_id: int, targets: list[int], content: str
) -> None:
    """The campaign's lists and tracked URLs (as the API stores them)."""
    db.executemany(
        "INSERT INTO campaign_list (campaign_id, list_id) VALUES (?, ?)",
        [(campaign_id, list_id) for list_id in targets],
    )
    db.executemany(
        "INSERT INTO campaign_url (campaign_id, url) VALUES (?, ?)",
        [(campaign_id, url) for url in extract_urls(content)],
    )


# One loop drawing from one random stream in a fixed order (a seed always gives the same
# data); long mostly because of its docstring.
def seed_campaigns(
    db: sqlite3.Connection,
    account_id: int,
    count: int,
    *,
    lists: Sequence[int],
    seed: int,
    now_ms: int,
    from_email: int,
    reply_to_email: int | None = None,
    organization: str = "Acme Flowers",
    sent_ratio: float = 0.6,
    scheduled_ratio: float = 0.2,
) -> CampaignSeedReport:
    """Create ``count`` campaigns for an account, and the events of those that were sent.

    About ``sent_ratio`` of them are ``Sent`` (spread over the 80 days before ``now_ms``, each
    to its lists' ``Active`` contacts), ``scheduled_ratio`` ``Scheduled`` (1–14 days after
    ``now_ms``), the rest ``Draft``. Most go to ``lists[0]``; some to another list as well.
    Per campaign, shares vary around: 3% of sends bounce (codes B, D, F, S, V, X, Z);
    24% of the rest are opened (a third of openers open again); 28% of openers click (one
    link, sometimes more); 2% forward; 1% opt out; 0.2% report spam.

    Args:
        db: a store connection (autocommit; this function runs one transaction per campaign).
        account_id: the account.
        count: campaigns to create.
        lists: list ids of the account the campaigns go to; with none, no campaign is sent
            (all become drafts).
        seed: seed of the private random generator.
        now_ms: the data's "now" (ms since the epoch): no event is later.
        from_email: id of the account address the campaigns are sent from.
        reply_to_email: id of the reply-to address (default ``from_email``).
        organization: the sender organisation named in the content.
        sent_ratio: share of ``Sent`` campaigns.
        scheduled_ratio: share of ``Scheduled`` campaigns.

    Returns:
        A :class:`CampaignSeedReport`.

    Raises:
        ValueError: a negative count, bad ratios, or a list or address that is not the
            account's.
    """
    reply = from_email if reply_to_email is None else reply_to_email
    list_ids = _checked_arguments(
        db, account_id, count, lists, (from_email, reply), sent_ratio, scheduled_ratio
    )
    from_name = organization
    started = time.perf_counter()
    rnd = random.Random(seed)
    u = rnd.random
    n_sent = round(count * sent_ratio) if list_ids else 0
    n_scheduled = round(count * scheduled_ratio) if list_ids else 0
    n_sent = min(n_sent, count)
    n_scheduled = min(n_scheduled, count - n_sent)
    kinds = ("sends", "opens", "clicks", "bounces", "forwards", "optouts", "spam")
    totals = dict.fromkeys(kinds, 0)
    created: list[int] = []
    opted_out = 0
    window_start = now_ms - 80 * _DAY
    # One loop drawing from one random stream in a fixed order (so a seed always gives the
    # same data); long mostly because of the docstring above.
    for k in range(count):
        theme = _THEMES[int(u() * len(_THEMES))]
        targets = [list_ids[0]] if list_ids else []
        if len(list_ids) > 1 and u() < 0.4:
            targets.append(list_ids[1 + int(u() * (len(list_ids) - 1))])
        if k < n_sent:
            status = "Sent"
            # Oldest first, evenly over the 80 days, leaving the last five days to drafts.
            when = window_start + (k * 75 * _DAY) // max(n_sent, 1) + int(u() * 12 * _HOUR)
        elif k < n_sent + n_scheduled:
            status = "Scheduled"
            when = now_ms + _DAY + int(u() * 13 * _DAY)
        else:
            status = "Draft"
            when = now_ms - int(u() * 5 * _DAY)
        stamp = time.strftime("%b %d %Y", time.gmtime(when / 1000))
        name = f"{theme} {stamp}"
        subject = f"{theme}: {('this week', 'just for you', 'inside', 'last chance')[int(u() * 4)]}"
        link_count = 2 + int(u() * 5)
        with write_tx(db):
            campaign_id = _next_campaign_id(db)
            urls = [f"{link}?utm_campaign={campaign_id}" for link in _LINKS[:link_count]]
            fields = _fields(theme, subject, organization, from_name, urls)
            if status == "Sent":
                fields.update(_published(theme, account_id, campaign_id))
            edited = when - _HOUR - int(u() * 3 * _DAY) if status != "Draft" else when
            db.execute(
                "INSERT INTO campaign (id, account_id, name, status, date, doc, updated,"
                " last_edit_date, last_run_date, next_run_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?)",
                (
                    campaign_id,
                    account_id,
                    name,
                    status,
                    when,
                    encode_doc(fields, from_email, reply),
                    min(max(when, edited), now_ms),
                    edited,
                    when if status == "Sent" else None,
                    when if status == "Scheduled" else None,
                ),
            )
            _write_parts(db, campaign_id, targets, fields["EmailContent"])
            if status == "Sent":
                opted_out += _send(db, rnd, account_id, campaign_id, when, now_ms, targets, totals)
        created.append(campaign_id)
    return CampaignSeedReport(
        campaign_ids=tuple(created),
        sent=n_sent,
        scheduled=n_scheduled,
        drafts=count - n_sent - n_scheduled,
        events=totals,
        opted_out=opted_out,
        seconds=time.perf_counter() - started,
    )
