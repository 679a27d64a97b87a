"""The part of a sync an add activity cannot do: emptying fields, by ``PUT /contacts/{id}``.

An add keeps the stored value of every empty cell (spec §7, ``server/apply.py``), so:

* an update that empties a value the member has goes by PUT alone (route ``put``): the
  mapped fields with the file's values, an empty element for each empty one (spec §6.6: a
  PUT is the whole entry; ``ContactLists`` is left out, so the lists stay as they are);
* an added row with empty cells whose contact already existed outside the list (its
  ``InsertTime`` is before the first add activity was created) may hold values there the
  file does not: it is PUT after its add (route ``bulk+put``). Contacts the add created
  need nothing.

Contact ids come from the base (``contact_uri``) or from ``GET /contacts?email=…``, 50
addresses a request. A PUT is idempotent: one that was sent but not recorded is sent again
on resume. ``row_outcome.done`` holds the bytes of the answered PUT (0: not yet).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from urllib.parse import urlencode

import msgspec
import trio
from lxml import etree

from bulkops.engine.client import Client
from bulkops.errors import ApiError
from bulkops.wire.atom.contacts import contact_from_entry
from bulkops.wire.atom.syntax import ATOM_NS, CTCT_NS
from bulkops.wire.model import Contact

__all__ = ["apply_puts", "contact_body", "find_preexisting"]

_decode_vals = msgspec.json.Decoder(list[str]).decode

#: Most addresses one ``?email=`` search may name (spec §6.3).
SEARCH_BATCH = 50


def contact_body(email: str, columns: Sequence[str], values: Sequence[str]) -> bytes:
    """The PUT body: an Atom entry whose ``Contact`` has the address and every mapped field
    (empty ones as empty elements), no ``ContactLists``."""
    entry = etree.Element(f"{{{ATOM_NS}}}entry", nsmap={None: ATOM_NS})
    etree.SubElement(entry, f"{{{ATOM_NS}}}id").text = "data:,"
    etree.SubElement(entry, f"{{{ATOM_NS}}}title")
    etree.SubElement(entry, f"{{{ATOM_NS}}}author")
    etree.SubElement(entry, f"{{{ATOM_NS}}}updated").text = "2008-01-01T00:00:00.000Z"
    content = etree.SubElement(entry, f"{{{ATOM_NS}}}content", type="application/vnd.ctct+xml")
    payload = etree.SubElement(content, f"{{{CTCT_NS}}}Contact", nsmap={None: CTCT_NS})
    etree.SubElement(payload, f"{{{CTCT_NS}}}EmailAddress").text = email
    for name, value in zip(columns, values, strict=True):
        etree.SubElement(payload, f"{{{CTCT_NS}}}{name}").text = value
    return bytes(etree.tostring(entry, xml_declaration=True, encoding="UTF-8"))


async def search(client: Client, emails: Sequence[str]) -> dict[str, Contact]:
    """The contacts of ``emails`` (lower-cased key -> contact), 50 addresses a request."""
    found: dict[str, Contact] = {}
    for start in range(0, len(emails), SEARCH_BATCH):
        batch = emails[start : start + SEARCH_BATCH]
        href = "contacts?" + urlencode([("email", e) for e in batch])
        async for page in client.iter_feed(href, contact_from_entry):
            for contact in page:
                email = contact.fields.get("EmailAddress", "")
                found[email.strip().lower()] = contact
    return found


def _batches(rows: Iterable[tuple[int, str]], size: int) -> Iterable[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def find_preexisting(
    client: Client, db: sqlite3.Connection, cutoff: float | None, failed: set[int]
) -> int:
    """Mark added rows with empty cells whose contact existed before the add (``InsertTime``
    before ``cutoff``, the server time the first add activity was created, in seconds) to
    be PUT after their add; return how many."""
    if cutoff is None:
        return 0
    # LIKE finds the rows whose JSON holds "" (an empty value, or a value ending in a
    # quote: the JSON of `"q"` ends in `\""`); the decoded values tell which.
    rows = [
        (line, key)
        for line, key, vals in db.execute(
            "SELECT line, email_key, vals FROM row_outcome WHERE kind = 'added'"
            " AND route = 'bulk' AND vals LIKE '%\"\"%' ORDER BY line"
        )
        if "" in _decode_vals(vals)
    ]
    marked = 0
    for batch in _batches(((line, key) for line, key in rows if line not in failed), 5_000):
        contacts = await search(client, [key for _line, key in batch])
        updates = []
        for line, key in batch:
            contact = contacts.get(key)
            if contact is None:
                continue
            inserted = contact.insert_time
            if inserted is not None and inserted.timestamp() >= cutoff:
                continue  # the add created it: nothing to empty
            updates.append((client.url(f"contacts/{contact.id}"), line))
        db.executemany(
            "UPDATE row_outcome SET route = 'bulk+put', contact_uri = ? WHERE line = ?", updates
        )
        marked += len(updates)
    return marked


async def _fill_uris(client: Client, db: sqlite3.Connection) -> None:
    """Contact ids for the rows to PUT that have none (a base may lack them)."""
    rows = db.execute(
        "SELECT line, email_key FROM row_outcome WHERE route IN ('put', 'bulk+put')"
        " AND done = 0 AND kind != 'failed' AND contact_uri IS NULL ORDER BY line"
    ).fetchall()
    for batch in _batches(rows, 5_000):
        contacts = await search(client, [key for _line, key in batch])
        updates = []
        failures = []
        for line, key in batch:
            contact = contacts.get(key)
            if contact is None:
                failures.append(("no contact with this address on the server", line))
            else:
                updates.append((client.url(f"contacts/{contact.id}"), line))
        db.executemany("UPDATE row_outcome SET contact_uri = ? WHERE line = ?", updates)
        db.executemany(
            "UPDATE row_outcome SET kind = 'failed', reason = ? WHERE line = ?", failures
        )


async def apply_puts(
    client: Client,
    db: sqlite3.Connection,
    columns: Sequence[str],
    failed: set[int],
    *,
    concurrency: int,
    stop: trio.Event,
) -> int:
    """PUT every row of route ``put`` or ``bulk+put`` not yet answered (``bulk+put`` rows
    whose add failed are skipped); a refused PUT (4xx) makes the row ``failed``. Returns
    the PUTs made.

    Raises:
        TransportError, AuthError, ...: the server could not be used (resumable).
    """
    from bulkops.engine.sync_diff import decode_vals

    await _fill_uris(client, db)
    made = 0
    send, receive = trio.open_memory_channel[tuple[int, str, str, str]](0)

    async def worker(rows: trio.MemoryReceiveChannel[tuple[int, str, str, str]]) -> None:
        nonlocal made
        async with rows:
            async for line, email, vals, uri in rows:
                body = contact_body(email, columns, decode_vals(vals))
                try:
                    await client.request(
                        "PUT", uri, content=body, headers={"Content-Type": "application/atom+xml"}
                    )
                except ApiError as exc:
                    if exc.status >= 500 or exc.status in (401, 403, 429):
                        raise
                    db.execute(
                        "UPDATE row_outcome SET kind = 'failed', reason = ?, done = ?"
                        " WHERE line = ?",
                        (f"PUT refused: {exc.message}", len(body), line),
                    )
                    continue
                made += 1
                db.execute("UPDATE row_outcome SET done = ? WHERE line = ?", (len(body), line))

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker, receive.clone())
        receive.close()
        async with send:
            after = -1
            while not stop.is_set():
                # A page at a time: memory stays one page, whatever the number of PUTs.
                page = db.execute(
                    "SELECT line, email, vals, contact_uri FROM row_outcome"
                    " WHERE route IN ('put', 'bulk+put') AND done = 0 AND kind != 'failed'"
                    " AND contact_uri IS NOT NULL AND line > ? ORDER BY line LIMIT 500",
                    (after,),
                ).fetchall()
                if not page:
                    break
                after = page[-1][0]
                for line, email, vals, uri in page:
                    if line not in failed and not stop.is_set():
                        await send.send((line, email, vals, uri))
    return made
