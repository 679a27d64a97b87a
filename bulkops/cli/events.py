"""The event exports of ``bulkops export``: ``campaign-events`` and ``contact-events``.

``bulkops export campaign-events CAMPAIGN --type opens -o opens.csv`` and
``bulkops export contact-events CONTACT --type sends -o sends.jsonl`` are collection exports
(:mod:`bulkops.engine.exports`, ``what="collection"``) of
``campaigns/{id}/events/{type}?pageSize=200`` (``--url ID``: the clicks of one link,
``campaigns/{id}/events/urls/{ID}``) and ``contacts/{id}/events/{type}``; so they stream in
constant memory, checkpoint and resume like every export, and write one :class:`Event`
record per row (``ReportsSummary`` records for ``contact-events --type summary``).

Campaign event pages are fetched 200 at a time (the largest ``pageSize`` v1 allows, spec
§3.2): a quarter of the requests of the default 50; contact event collections take no
``pageSize``.
"""

from __future__ import annotations

import argparse
import re

from bulkops.errors import ConfigError
from bulkops.wire.model import EVENT_KINDS

__all__ = ["EVENT_WHATS", "add_event_arguments", "event_collection"]

#: The ``what`` values of ``bulkops export`` this module handles.
EVENT_WHATS: tuple[str, ...] = ("campaign-events", "contact-events")

_ID_RE = re.compile(r"[0-9]{1,18}")


def add_event_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``ID`` positional, ``--type`` and ``--url`` (after ``export``'s ``what``)."""
    parser.add_argument(
        "owner",
        nargs="?",
        metavar="ID",
        help="the campaign (campaign-events) or contact (contact-events) whose events to export",
    )
    parser.add_argument(
        "--type",
        dest="event_type",
        choices=[*EVENT_KINDS, "summary"],
        help="campaign-events / contact-events: which events (summary: contact-events only)",
    )
    parser.add_argument(
        "--url",
        dest="event_url",
        metavar="URL_ID",
        help="campaign-events --type clicks: only the clicks of this link (its Url id)",
    )


def event_collection(what: str | None, args: argparse.Namespace) -> str | None:
    """The collection path an event export walks; None when ``what`` is not one.

    Raises:
        ConfigError: a missing or malformed id or type, or options that do not go together.
    """
    owner: str | None = getattr(args, "owner", None)
    kind: str | None = getattr(args, "event_type", None)
    url: str | None = getattr(args, "event_url", None)
    if what not in EVENT_WHATS:
        if owner is not None or kind is not None or url is not None:
            raise ConfigError("an ID, --type and --url go with campaign-events or contact-events")
        return None
    if owner is None or _ID_RE.fullmatch(owner) is None:
        noun = "campaign" if what == "campaign-events" else "contact"
        raise ConfigError(f"{what} needs the {noun} id, e.g. `bulkops export {what} 12 --type …`")
    if getattr(args, "collection", None) is not None:
        raise ConfigError("--collection goes with `export collection`")
    if kind is None:
        raise ConfigError(f"{what} needs --type ({', '.join(EVENT_KINDS)})")
    if what == "contact-events":
        if url is not None:
            raise ConfigError("--url goes with campaign-events --type clicks")
        return f"contacts/{owner}/events/{kind}"
    if kind == "summary":
        raise ConfigError("--type summary is for contact-events")
    if url is not None:
        if kind != "clicks" or _ID_RE.fullmatch(url) is None:
            raise ConfigError("--url takes a link's numeric id, with --type clicks")
        return f"campaigns/{owner}/events/urls/{url}?pageSize=200"
    return f"campaigns/{owner}/events/{kind}?pageSize=200"
