"""Helpers for engine tests: clients for a running server, input files, server state."""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from pathlib import Path

from bulkops.engine.client import ClientConfig, Credentials
from bulkops.server.app import ApiState
from tests.serverkit import API_KEY, PASSWORD, USER, RunningServer

HEADER = ["Email Address", "First Name", "Last Name", "City", "US State/CA Province"]


def client_config(server: RunningServer, **kwargs: object) -> ClientConfig:
    """A client configuration for the demo account of ``server`` (fast retries for tests)."""
    creds = Credentials(username=USER, api_key=API_KEY, password=PASSWORD)
    settings: dict[str, object] = {"wait_initial": 0.01, "wait_max": 0.2, "wait_jitter": 0.01}
    settings.update(kwargs)
    return ClientConfig(server=server.origin, credentials=creds, **settings)  # type: ignore[arg-type]


def write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> Path:
    """Write a CSV file (header first) and return its path."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def contact_rows(count: int, *, seed: int = 1, prefix: str = "c") -> list[list[str]]:
    """``count`` valid, distinct, deterministic rows of :data:`HEADER`."""
    rng = random.Random(seed)
    states = ["MA", "NY", "CA", "ON", "QC", "TX"]
    return [
        [
            f"{prefix}{i}@example.org",
            rng.choice(["Ana", "Bo", "Zoë", "José", "Li"]),
            f"Last{i}",
            rng.choice(["Boston", "Québec, QC", 'The "Big" Apple']),
            rng.choice(states),
        ]
        for i in range(count)
    ]


def server_contacts(state: ApiState, username: str = USER) -> dict[str, dict[str, object]]:
    """Every contact of an account as the database holds it: email -> fields, status, lists."""
    db = state.store.connection()
    rows = db.execute(
        "SELECT c.id, c.EmailAddress, c.FirstName, c.LastName, c.City, c.StateCode, c.status"
        " FROM contact c JOIN account a ON a.id = c.account_id WHERE a.username = ?",
        (username,),
    ).fetchall()
    lists: dict[int, list[str]] = {}
    for contact_id, name in db.execute(
        "SELECT m.contact_id, l.name FROM membership m JOIN list l ON l.id = m.list_id"
    ):
        lists.setdefault(contact_id, []).append(name)
    return {
        email.lower(): {
            "first": first,
            "last": last,
            "city": city,
            "state": state_code,
            "status": status,
            "lists": sorted(lists.get(contact_id, [])),
        }
        for contact_id, email, first, last, city, state_code, status in rows
    }
