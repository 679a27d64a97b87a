"""A fast, seeded, deterministic generator of realistic contacts, written straight into the store.

:func:`seed_contacts` fills an account with ``count`` contacts and their list memberships, for
benchmarks, demos and tests that need a big account without going through the API.

Invariants:

* **Deterministic.** The same ``(count, lists, seed, start, until_ms)`` and the same starting
  database give the same rows, ids, times and memberships; nothing reads the wall clock.
* **Unique emails.** The local part of generated address ``n`` ends in ``.{n}`` (base 10),
  where ``n = start + i``; two runs on one account do not collide as long as their ``start``
  ranges do not overlap. A collision raises :class:`sqlite3.IntegrityError` and that batch is
  rolled back.
* **The contact status rules hold** (see :mod:`bulkops.server.store`): a contact on a list is
  ``Active``; one on no list is ``Removed``; ``Do Not Mail`` contacts are on no list and carry
  ``opt_out_*``. ``list.member_count`` stays right (the membership triggers maintain it).
* **Fast and bounded.** Rows are generated and written in batches of ``batch`` contacts, each
  batch one ``BEGIN IMMEDIATE`` transaction of two ``executemany`` calls, so memory is
  O(batch) and 1,000,000 contacts take about 25 s on a 2-core machine. Within each
  transaction the member-counting insert trigger is dropped and restored and the counts are
  added per list, so no other connection ever sees it missing. Ids are given explicitly,
  consecutive from ``max(contact.id) + 1`` taken inside each transaction.
* Times: contact ``i`` was inserted at ``until_ms - span + i * step`` (ids and insert times
  increase together), and a third of the contacts were updated later, up to ``until_ms``;
  so ``last_update_time`` is realistic for ``updatedsince`` queries and not ordered by id.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TypeVar

import attrs

from bulkops.server.store import (
    STATUS_ACTIVE,
    STATUS_DO_NOT_MAIL,
    STATUS_REMOVED,
    write_tx,
)

__all__ = ["DEFAULT_UNTIL_MS", "SeedReport", "seed_contacts"]

#: The default "now" of generated data: 2024-01-01T00:00:00.000Z.
DEFAULT_UNTIL_MS = 1_704_067_200_000

_YEAR_MS = 365 * 24 * 3600 * 1000

_FIRST = (
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony "
    "Betty Mark Sandra Donald Ashley Steven Emily Paul Donna Andrew Michelle Joshua Carol Kevin "
    "Amanda Brian Melissa George Deborah Ana Bo Cy Omar Priya Wei Yuki Lars Ingrid Pedro Lucia"
).split()
_FIRST_INTL = "Zoë Łukasz Søren Đặng José François Ærin Björk Ümit Nuño Chloé Jürgen Ōta".split()
_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Diaz Chen Ito"
).split()
_LAST_INTL = "Ødegaard Kowalczyk Þórsson Nuñez Dvořák Gößling Lefèvre Štěpánek Çelik".split()
_COMPANIES = (
    "Acme Globex Initech Umbrella Hooli Vandelay Stark Wayne Wonka Cyberdyne Soylent Tyrell "
    "Aperture Gringotts Oscorp Prestige Sterling"
).split()
_SUFFIX = ("Inc.", "LLC", "Ltd", "GmbH", "& Sons", "Group", "Partners", "Co.")
_TITLES = (
    "Manager Director Engineer Analyst Owner Consultant Designer Teacher Nurse Accountant "
    "Developer Chef Florist"
).split()
_STREETS = "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Sunset Lincoln".split()
# (city, state code, country code, country name)
_PLACES = (
    ("Boston", "MA", "US", "United States"),
    ("Springfield", "IL", "US", "United States"),
    ("Portland", "OR", "US", "United States"),
    ("Austin", "TX", "US", "United States"),
    ("Denver", "CO", "US", "United States"),
    ("Seattle", "WA", "US", "United States"),
    ("Chicago", "IL", "US", "United States"),
    ("Toronto", "ON", "CA", "Canada"),
    ("Montréal", "QC", "CA", "Canada"),
    ("Vancouver", "BC", "CA", "Canada"),
    ("Phoenix", "AZ", "US", "United States"),
    ("Atlanta", "GA", "US", "United States"),
    ("Miami", "FL", "US", "United States"),
    ("Madison", "WI", "US", "United States"),
    ("Albany", "NY", "US", "United States"),
)
_DOMAINS = (
    "example.com",
    "example.org",
    "mail.example.net",
    "corp.example.co.uk",
    "example.io",
    "students.example.edu",
    "example.de",
    "example.fr",
)
_TIERS = ("gold", "silver", "bronze", "", "", "vip", "newsletter")
_OPT_IN_SOURCES = ("ACTION_BY_CUSTOMER", "ACTION_BY_CUSTOMER", "ACTION_BY_CONTACT")
_OPT_OUT_REASONS = ("", "Too many emails", "Not interested")

T = TypeVar("T")


def _pick(choices: Sequence[T], u: float) -> T:
    """``choices[floor(u * len)]`` for ``u`` in [0, 1): ``random.choice`` at a third the cost."""
    return choices[int(u * len(choices))]


# The contact columns the generator fills, in INSERT order.
_CONTACT_COLUMNS = (
    "id",
    "account_id",
    "email_key",
    "EmailAddress",
    "EmailType",
    "FirstName",
    "LastName",
    "JobTitle",
    "CompanyName",
    "WorkPhone",
    "Addr1",
    "City",
    "StateCode",
    "CountryCode",
    "CountryName",
    "PostalCode",
    "CustomField1",
    "status",
    "opt_in_source",
    "opt_in_time",
    "opt_out_source",
    "opt_out_time",
    "opt_out_reason",
    "insert_time",
    "last_update_time",
)
_INSERT_CONTACT = (
    f"INSERT INTO contact ({', '.join(_CONTACT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_CONTACT_COLUMNS))})"
)
_INSERT_MEMBERSHIP = (
    "INSERT INTO membership (list_id, contact_id, opt_in_source, opt_in_time) VALUES (?, ?, ?, ?)"
)


_COUNT_TRIGGER = "membership_count_insert"


@contextlib.contextmanager
def _count_trigger_suspended(db: sqlite3.Connection) -> Iterator[bool]:
    """Drop the trigger that counts members on insert, and put it back (its SQL as stored).

    Inside the caller's write transaction, so no other connection ever sees the schema
    without it; the caller adds the counts itself when this yields True. Row by row the
    trigger is a third of the seeding time.
    """
    row = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (_COUNT_TRIGGER,)
    ).fetchone()
    if row is None:
        yield False
        return
    db.execute(f"DROP TRIGGER {_COUNT_TRIGGER}")
    try:
        yield True
    finally:
        db.execute(row[0])


@attrs.frozen(kw_only=True)
class SeedReport:
    """What :func:`seed_contacts` wrote.

    Attributes:
        contacts: contacts inserted.
        active: of which ``Active`` (on at least one list).
        removed: of which ``Removed`` (on no list, not opted out).
        do_not_mail: of which ``Do Not Mail``.
        memberships: membership rows inserted.
        first_id: id of the first contact inserted (None when ``count`` was 0).
        last_id: id of the last contact inserted (None when ``count`` was 0).
        seconds: wall time taken.
    """

    contacts: int
    active: int
    removed: int
    do_not_mail: int
    memberships: int
    first_id: int | None
    last_id: int | None
    seconds: float

    @property
    def rate(self) -> float:
        """Contacts per second."""
        return self.contacts / self.seconds if self.seconds > 0 else float("inf")


def _check_arguments(
    count: int,
    batch: int,
    removed_ratio: float,
    do_not_mail_ratio: float,
    extra_list_ratio: float,
) -> None:
    """ValueError for a negative count, a batch below 1 or a ratio outside [0, 1]."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if batch < 1:
        raise ValueError("batch must be >= 1")
    for name, ratio in (
        ("removed_ratio", removed_ratio),
        ("do_not_mail_ratio", do_not_mail_ratio),
        ("extra_list_ratio", extra_list_ratio),
    ):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1")
    if removed_ratio + do_not_mail_ratio > 1.0:
        raise ValueError("removed_ratio + do_not_mail_ratio must not exceed 1")


def _lists_of(db: sqlite3.Connection, account_id: int, lists: Sequence[int]) -> list[int]:
    """``lists`` without repeats; ValueError naming those that are not the account's."""
    list_ids = list(dict.fromkeys(lists))
    if list_ids:
        marks = ", ".join("?" * len(list_ids))
        found = {
            row[0]
            for row in db.execute(
                f"SELECT id FROM list WHERE account_id = ? AND id IN ({marks})",
                (account_id, *list_ids),
            )
        }
        missing = [str(lid) for lid in list_ids if lid not in found]
        if missing:
            raise ValueError(f"not lists of account {account_id}: {', '.join(missing)}")
    return list_ids


def _write_batch(
    db: sqlite3.Connection,
    contact_rows: list[tuple[object, ...]],
    member_rows: list[tuple[int, int, str, int]],
) -> None:
    """Insert one batch inside the caller's transaction; count members per list at once."""
    db.executemany(_INSERT_CONTACT, contact_rows)
    with _count_trigger_suspended(db) as suspended:
        db.executemany(_INSERT_MEMBERSHIP, member_rows)
    if suspended:
        added = Counter(row[0] for row in member_rows)
        db.executemany(
            "UPDATE list SET member_count = member_count + ? WHERE id = ?",
            [(n, list_id) for list_id, n in added.items()],
        )


# A hot loop (a million contacts in about 25 s) with every value in a local: one piece.
def seed_contacts(
    db: sqlite3.Connection,
    account_id: int,
    count: int,
    *,
    lists: Sequence[int],
    seed: int,
    start: int = 0,
    until_ms: int = DEFAULT_UNTIL_MS,
    removed_ratio: float = 0.02,
    do_not_mail_ratio: float = 0.01,
    extra_list_ratio: float = 0.3,
    batch: int = 50_000,
) -> SeedReport:
    """Insert ``count`` realistic contacts into an account, with their list memberships.

    Every contact that is neither removed nor opted out is on ``lists[0]`` and on each other
    list of ``lists`` with probability ``extra_list_ratio``; so a members feed of
    ``lists[0]`` holds about ``(1 - removed_ratio - do_not_mail_ratio) * count`` contacts.
    With ``lists`` empty every contact that is not opted out is ``Removed``.

    About 8% of names are non-ASCII, 3% of contacts have no name, a fifth have a ``Text``
    email type; companies, titles, phones, addresses, US/CA places and a ``CustomField1``
    tier fill the rest.

    Args:
        db: a connection to the store (autocommit mode, as :class:`~bulkops.server.store.Store`
            opens them); this function runs its own transactions.
        account_id: the account to fill.
        count: contacts to insert.
        lists: ids of lists of that account to put contacts on.
        seed: seed of the private random generator.
        start: number of the first generated address (see the module invariants).
        until_ms: the generated data's "now", ms since the epoch: contacts were inserted over
            the three years before it and updated up to it.
        removed_ratio: share of contacts on no list (``Removed``).
        do_not_mail_ratio: share of contacts opted out (``Do Not Mail``).
        extra_list_ratio: chance of membership in each list after the first.
        batch: contacts per transaction.

    Returns:
        A :class:`SeedReport`.

    Raises:
        ValueError: a negative count, a bad ratio or batch, or a list id that is not a list
            of the account.
        sqlite3.IntegrityError: a generated email already exists in the account.
    """
    _check_arguments(count, batch, removed_ratio, do_not_mail_ratio, extra_list_ratio)
    list_ids = _lists_of(db, account_id, lists)

    started = time.perf_counter()
    rnd = random.Random(seed).random  # one float per decision: fast and reproducible
    primary, extra_lists = (list_ids[0], list_ids[1:]) if list_ids else (0, [])
    span = 3 * _YEAR_MS
    step = max(1, span // max(count, 1))
    first_time = until_ms - span
    dnm_below = do_not_mail_ratio
    removed_below = do_not_mail_ratio + removed_ratio
    active = removed = do_not_mail = memberships = 0
    first_id: int | None = None
    last_id: int | None = None

    # The hot loop (a million contacts in about 25 s): one pass per contact with every value
    # in a local, which is why it stays in one piece and this function is long.
    done = 0
    while done < count:
        size = min(batch, count - done)
        contact_rows: list[tuple[object, ...]] = []
        member_rows: list[tuple[int, int, str, int]] = []
        with write_tx(db):
            (max_id,) = db.execute("SELECT coalesce(max(id), 0) FROM contact").fetchone()
            next_id = int(max_id) + 1
            if first_id is None:
                first_id = next_id
            for i in range(done, done + size):
                cid = next_id + (i - done)
                r = rnd()
                first = _pick(_FIRST_INTL if r < 0.08 else _FIRST, rnd())
                last = _pick(_LAST_INTL if 0.04 < r < 0.10 else _LAST, rnd())
                domain = _pick(_DOMAINS, rnd())
                local = f"{first}.{last}".lower()
                if not local.isascii():
                    local = f"member{int(rnd() * 1000)}"
                email = f"{local}.{start + i}@{domain}"
                if 0.5 < r < 0.55:  # some people type their address capitalised
                    email = email.capitalize()
                if r > 0.97:
                    first = last = ""
                city, state, country_code, country = _pick(_PLACES, rnd())
                inserted = first_time + i * step
                updated = inserted
                if rnd() < 0.33:
                    updated = inserted + int(rnd() * (until_ms - inserted))
                source = _pick(_OPT_IN_SOURCES, rnd())
                fate = rnd()
                opt_out_source = opt_out_reason = ""
                opt_out_time: int | None = None
                if fate < dnm_below:
                    status = STATUS_DO_NOT_MAIL
                    opt_out_source = "ACTION_BY_CONTACT"
                    opt_out_time = updated
                    opt_out_reason = _pick(_OPT_OUT_REASONS, rnd())
                    do_not_mail += 1
                elif fate < removed_below or not list_ids:
                    status = STATUS_REMOVED
                    removed += 1
                else:
                    status = STATUS_ACTIVE
                    active += 1
                    member_rows.append((primary, cid, source, inserted))
                    for extra in extra_lists:
                        if rnd() < extra_list_ratio:
                            member_rows.append((extra, cid, source, inserted))
                contact_rows.append(
                    (
                        cid,
                        account_id,
                        email.lower(),
                        email,
                        "Text" if rnd() < 0.2 else "HTML",
                        first,
                        last,
                        _pick(_TITLES, rnd()),
                        f"{_pick(_COMPANIES, rnd())} {_pick(_SUFFIX, rnd())}",
                        f"+1 {200 + int(rnd() * 800)}-{200 + int(rnd() * 800)}-"
                        f"{int(rnd() * 10000):04d}",
                        f"{1 + int(rnd() * 9998)} {_pick(_STREETS, rnd())} St",
                        city,
                        state,
                        country_code,
                        country,
                        f"{int(rnd() * 100000):05d}",
                        _pick(_TIERS, rnd()),
                        status,
                        source,
                        inserted,
                        opt_out_source,
                        opt_out_time,
                        opt_out_reason,
                        inserted,
                        updated,
                    )
                )
            _write_batch(db, contact_rows, member_rows)
            last_id = next_id + size - 1
        memberships += len(member_rows)
        done += size

    return SeedReport(
        contacts=count,
        active=active,
        removed=removed,
        do_not_mail=do_not_mail,
        memberships=memberships,
        first_id=first_id,
        last_id=last_id,
        seconds=time.perf_counter() - started,
    )
