"""Helpers for the campaign, event and settings tests: a pinned clock, seeded accounts, bodies,
and walking paged feeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
import trio
from lxml import etree

from bulkops.server.app import ApiState
from bulkops.server.seed_cli import SeedSummary, seed_account
from bulkops.wire.atom.feeds import parse_feed
from bulkops.wire.atom.reading import local_name
from bulkops.wire.atom.syntax import ATOM_MEDIA_TYPE, ATOM_NS, CTCT_MEDIA_TYPE, CTCT_NS, parse_xml
from tests.serverkit import HANG_GUARD, USER, make_state

#: The tests' "now": 2024-06-01T00:00:00Z.
NOW = 1_717_200_000_000
HOUR = 3_600_000
DAY = 24 * HOUR


class Clock:
    """A settable clock for ``ApiState.clock``."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def seeded_state(
    tmp_path: Path, *, contacts: int = 40, lists: int = 2, campaigns: int = 0, seed: int = 7
) -> tuple[ApiState, Clock, SeedSummary]:
    """A server state whose demo account was seeded at :data:`NOW`, with the clock pinned."""
    state = make_state(tmp_path)
    clock = Clock()
    state.clock = clock
    summary = seed_account(
        state.store.connection(),
        USER,
        contacts=contacts,
        lists=lists,
        campaigns=campaigns,
        seed=seed,
        now_ms=NOW,
    )
    return state, clock, summary


def campaign_body(
    values: dict[str, str] | None = None,
    *,
    drop: Sequence[str] = (),
    lists: Sequence[str] = ("1",),
    from_ref: str | None = "1",
    reply_ref: str | None = "1",
    extra: str = "",
) -> bytes:
    """A ``POST /campaigns`` body in the docs' pattern; ``drop`` leaves elements out."""
    fields = {
        "Name": "Spring Sale",
        "Subject": "Flowers for spring",
        "FromName": "Joe's Flowers",
        "EmailContentFormat": "HTML",
        "EmailContent": '<html><body><a href="https://shop.example.com/?a=1&b=2">Shop</a>'
        '<a href="http://blog.example.com/">Blog</a></body></html>',
        "EmailTextContent": "<Text>Spring is here.</Text>",
    } | (values or {})
    parts = [
        f"<{name}>{escape(value)}</{name}>" for name, value in fields.items() if name not in drop
    ]
    if "ContactLists" not in drop:
        parts.append(
            "<ContactLists>"
            + "".join(
                f'<ContactList id="http://api.constantcontact.com/ws/customers/demo/lists/{i}" />'
                for i in lists
            )
            + "</ContactLists>"
        )
    for element, ref in (("FromEmail", from_ref), ("ReplyToEmail", reply_ref)):
        if element not in drop and ref is not None:
            parts.append(
                f"<{element}><Email id="
                f'"http://api.constantcontact.com/ws/customers/demo/settings/emailaddresses/{ref}"'
                f" /></{element}>"
            )
    return (
        f'<entry xmlns="{ATOM_NS}"><id>data:,none</id><title type="text"> </title>'
        "<author></author><updated>2008-04-16</updated>"
        f'<content type="{CTCT_MEDIA_TYPE}"><Campaign xmlns="{CTCT_NS}">'
        + "".join(parts)
        + extra
        + "</Campaign></content></entry>"
    ).encode()


def schedule_body(when: str) -> bytes:
    """A ``POST /campaigns/{id}/schedules`` body."""
    return (
        f'<entry xmlns="{ATOM_NS}"><id>data:,none</id><title type="text"></title>'
        "<author></author><updated>2008-04-16</updated>"
        f'<content type="{CTCT_MEDIA_TYPE}"><Schedule xmlns="{CTCT_NS}" '
        'id="http://api.constantcontact.com/ws/customers/demo/campaigns/1/schedules/1">'
        f"<ScheduledTime>{when}</ScheduledTime></Schedule></content></entry>"
    ).encode()


ATOM = {"Content-Type": ATOM_MEDIA_TYPE}


def entries(content: bytes) -> list[etree._Element]:
    """The ``<entry>`` elements of a feed document."""
    return [e for e in parse_xml(content, max_bytes=64 << 20) if local_name(e) == "entry"]


async def walk(client: httpx.AsyncClient, url: str) -> list[etree._Element]:
    """Every entry of a paged feed, following ``next`` links (resolved like a v1 client)."""
    found: list[etree._Element] = []
    seen: set[str] = set()
    next_url: str | None = str(client.base_url.join(url))
    while next_url is not None:
        assert next_url not in seen, "a next link points back"
        seen.add(next_url)
        with trio.fail_after(HANG_GUARD):
            response = await client.get(next_url)
        assert response.status_code == 200, response.text
        feed = parse_feed(response.content, max_bytes=64 << 20)
        found.extend(entries(response.content))
        href = feed.link("next")
        next_url = None if href is None else str(client.base_url.join(href))
    return found
