"""The account-scoped SQL of the lists, members and contacts resources.

Every function takes a connection first (``await store.run(fn, *args)`` calls it in a worker
thread) and the account id second, and touches only that account's rows. Reads return the
records of :mod:`bulkops.wire.model`, ready for the builders; writes raise the domain errors
of :mod:`bulkops.server.errors` for the outcomes a client must see (``NotFound``,
``Conflict``, ``Invalid`` for a list URI naming no list, ``Forbidden`` for a refused opt-in),
never an HTTP status.

Invariants:

* **Keyset paging only.** Every page is "the next ``limit`` rows after a key" on an index:
  user lists by ``id`` (ascending), members and contacts by ``id`` (descending, on the
  membership primary key, ``contact_account`` and ``contact_status``), updated contacts by
  ``(last_update_time, id)`` (ascending, on ``contact_updated``); never OFFSET, so the last
  page of a million rows costs what the first does.
* **The contact status rules** of :mod:`bulkops.server.store` hold after every write here:
  on a list → ``Active``; on none → ``Removed``; ``Do Not Mail`` is left only by a request
  with ``OptInSource`` ``ACTION_BY_CONTACT`` and at least one list; every change to a
  contact's fields, status or lists sets its ``last_update_time``.
* Every write is one ``write_tx`` transaction: checks (existence, conflicts, list ids) and
  changes see the same state. Each one that changes contacts, memberships or lists bumps
  the account's write sequence once (:func:`~bulkops.server.store.bump_write_seq`), and
  those that stamp contacts take the later of the caller's ``now`` and the clock read once
  the write lock is held (the sequence's rule, store docstring).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from bulkops.server.errors import Conflict, Forbidden, Invalid, NotFound
from bulkops.server.store import (
    STATUS_ACTIVE,
    STATUS_DO_NOT_MAIL,
    STATUS_REMOVED,
    bump_write_seq,
    from_ms,
    now_ms,
    to_ms,
    write_tx,
)
from bulkops.wire.columns import CONTACT_FIELDS
from bulkops.wire.model import (
    Contact,
    ContactInput,
    ContactList,
    ContactListMember,
    ContactListRef,
    ListInput,
)
from bulkops.wire.uris import SYSTEM_LISTS, list_id_from_uri

__all__ = [
    "ACTION_BY_CONTACT",
    "ACTION_BY_CUSTOMER",
    "SYSTEM_LIST_STATUS",
    "contact_page",
    "contacts_by_email",
    "contacts_updated_since",
    "create_contact",
    "create_list",
    "delete_list",
    "display_name",
    "from_ms",
    "get_contact",
    "get_list",
    "list_page",
    "member_page",
    "opt_out_contact",
    "to_ms",
    "update_contact",
    "update_list",
]

ACTION_BY_CUSTOMER = "ACTION_BY_CUSTOMER"
ACTION_BY_CONTACT = "ACTION_BY_CONTACT"

#: The contact status each system list stands for.
SYSTEM_LIST_STATUS: dict[str, str] = {
    "active": STATUS_ACTIVE,
    "do-not-mail": STATUS_DO_NOT_MAIL,
    "removed": STATUS_REMOVED,
}


def display_name(name: str, first: str, last: str) -> str:
    """The name a feed shows: ``Name`` when set, else ``"Last, First"`` from the parts that
    are set (``"Last"`` or ``"First"`` alone), else ``""``."""
    if name:
        return name
    return ", ".join(part for part in (last, first) if part)


# -- lists ------------------------------------------------------------------------------

_LIST_COLUMNS = (
    "id, name, short_name, opt_in_default, display_on_signup, sort_order, member_count, updated"
)


def _list_record(row: Any) -> ContactList:
    lid, name, short, opt_in, display, sort, count, updated = row
    return ContactList(
        id=str(lid),
        name=name,
        short_name=short,
        updated=from_ms(updated),
        opt_in_default=bool(opt_in),
        display_on_signup=bool(display),
        sort_order=sort,
        contact_count=count,
    )


def list_page(db: sqlite3.Connection, account_id: int, after: int, limit: int) -> list[ContactList]:
    """User lists with ``id > after``, ascending, at most ``limit``."""
    rows = db.execute(
        f"SELECT {_LIST_COLUMNS} FROM list WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?",
        (account_id, after, limit),
    ).fetchall()
    return [_list_record(row) for row in rows]


def get_list(db: sqlite3.Connection, account_id: int, list_id: int) -> ContactList | None:
    """One user list of the account, or None."""
    row = db.execute(
        f"SELECT {_LIST_COLUMNS} FROM list WHERE account_id = ? AND id = ?",
        (account_id, list_id),
    ).fetchone()
    return None if row is None else _list_record(row)


def _name_taken(db: sqlite3.Connection, account_id: int, name: str, other_than: int) -> bool:
    # System list names are taken in every account; user list names case-insensitively
    # (ASCII folding, SQLite's NOCASE; the UNIQUE constraint backs the exact match).
    if name.casefold() in (system.casefold() for system in SYSTEM_LISTS.values()):
        return True
    row = db.execute(
        "SELECT 1 FROM list WHERE account_id = ? AND name = ? COLLATE NOCASE AND id != ?",
        (account_id, name, other_than),
    ).fetchone()
    return row is not None


def create_list(db: sqlite3.Connection, account_id: int, spec: ListInput, now: int) -> ContactList:
    """Create a user list; ``spec.name`` must be set (the handler checks it).

    Defaults: ``OptInDefault`` false, ``DisplayOnSignup`` false, ``SortOrder`` 99.

    Raises:
        Conflict: the name is taken.
    """
    name = spec.name or ""
    with write_tx(db):
        if _name_taken(db, account_id, name, 0):
            raise Conflict(f'A contact list named "{name}" already exists')
        cursor = db.execute(
            "INSERT INTO list (account_id, name, short_name, opt_in_default, display_on_signup,"
            " sort_order, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                account_id,
                name,
                name,
                int(bool(spec.opt_in_default)),
                int(bool(spec.display_on_signup)),
                99 if spec.sort_order is None else spec.sort_order,
                now,
            ),
        )
        list_id = cursor.lastrowid
        bump_write_seq(db, account_id)
    assert list_id is not None
    created = get_list(db, account_id, list_id)
    assert created is not None
    return created


def update_list(
    db: sqlite3.Connection, account_id: int, list_id: int, spec: ListInput, now: int
) -> None:
    """Change the given attributes of a user list (a new name renames ``ShortName`` too).

    Raises:
        NotFound: no such list. Conflict: the new name is taken.
    """
    with write_tx(db):
        current = get_list(db, account_id, list_id)
        if current is None:
            raise NotFound("No such contact list")
        if spec.name is not None and _name_taken(db, account_id, spec.name, list_id):
            raise Conflict(f'A contact list named "{spec.name}" already exists')

        def flag(value: bool | None) -> int | None:
            return None if value is None else int(value)

        db.execute(
            "UPDATE list SET name = coalesce(:name, name), short_name = coalesce(:name, name),"
            " opt_in_default = coalesce(:opt_in, opt_in_default),"
            " display_on_signup = coalesce(:display, display_on_signup),"
            " sort_order = coalesce(:sort, sort_order), updated = :now WHERE id = :id",
            {
                "name": spec.name,
                "opt_in": flag(spec.opt_in_default),
                "display": flag(spec.display_on_signup),
                "sort": spec.sort_order,
                "now": now,
                "id": list_id,
            },
        )
        bump_write_seq(db, account_id)


def delete_list(db: sqlite3.Connection, account_id: int, list_id: int, now: int) -> None:
    """Delete a user list and its memberships; members left on no list become ``Removed``.

    Every former member's ``last_update_time`` becomes ``now`` (its lists changed).

    Raises:
        NotFound: no such list.
    """
    with write_tx(db):
        if get_list(db, account_id, list_id) is None:
            raise NotFound("No such contact list")
        now = max(now, now_ms())
        db.execute(
            "UPDATE contact SET last_update_time = :now, status = CASE"
            "  WHEN status != :dnm AND NOT EXISTS (SELECT 1 FROM membership o"
            "    WHERE o.contact_id = contact.id AND o.list_id != :list) THEN :removed"
            "  ELSE status END"
            " WHERE id IN (SELECT contact_id FROM membership WHERE list_id = :list)",
            {"now": now, "dnm": STATUS_DO_NOT_MAIL, "removed": STATUS_REMOVED, "list": list_id},
        )
        db.execute("DELETE FROM membership WHERE list_id = ?", (list_id,))
        db.execute("DELETE FROM list WHERE id = ?", (list_id,))
        bump_write_seq(db, account_id)


# -- members ----------------------------------------------------------------------------

_MEMBER_COLUMNS = "c.id, c.EmailAddress, c.Name, c.FirstName, c.LastName, c.last_update_time"


def member_page(
    db: sqlite3.Connection, account_id: int, list_key: str, before: int | None, limit: int
) -> list[ContactListMember] | None:
    """Members of a list with ``contact id < before``, newest contact first; None when the
    account has no such list.

    Args:
        list_key: a numeric list id, or a system list (``active``, ``do-not-mail``,
            ``removed``: the contacts with that status).
        before: the keyset (exclusive), None for the first page.
    """
    bound = 2**63 - 1 if before is None else before
    status = SYSTEM_LIST_STATUS.get(list_key)
    if status is not None:
        rows = db.execute(
            f"SELECT {_MEMBER_COLUMNS} FROM contact c"
            " WHERE c.account_id = ? AND c.status = ? AND c.id < ? ORDER BY c.id DESC LIMIT ?",
            (account_id, status, bound, limit),
        ).fetchall()
    else:
        list_id = int(list_key)
        if get_list(db, account_id, list_id) is None:
            return None
        rows = db.execute(
            f"SELECT {_MEMBER_COLUMNS} FROM membership m JOIN contact c ON c.id = m.contact_id"
            " WHERE m.list_id = ? AND m.contact_id < ? AND c.account_id = ?"
            " ORDER BY m.contact_id DESC LIMIT ?",
            (list_id, bound, account_id, limit),
        ).fetchall()
    return [
        ContactListMember(
            contact_id=str(cid),
            email=email,
            name=display_name(name, first, last),
            list_id=list_key,
            updated=from_ms(updated),
        )
        for cid, email, name, first, last, updated in rows
    ]


# -- contacts: reads --------------------------------------------------------------------

_SUMMARY_NAMES = (
    "id",
    "status",
    "EmailAddress",
    "EmailType",
    "Name",
    "FirstName",
    "LastName",
    "opt_in_source",
    "opt_in_time",
    "confirmed",
    "insert_time",
    "last_update_time",
)
_SUMMARY_COLUMNS = ", ".join(_SUMMARY_NAMES)
_SUMMARY_COLUMNS_C = ", ".join(f"c.{name}" for name in _SUMMARY_NAMES)


def _summary(row: Any) -> Contact:
    (cid, status, email, kind, name, first, last, source, opt_in, confirmed, inserted, updated) = (
        row
    )
    shown = display_name(name, first, last)
    fields = {"EmailAddress": email}
    if kind:
        fields["EmailType"] = kind
    if shown:
        fields["Name"] = shown
    return Contact(
        id=str(cid),
        status=status,
        updated=from_ms(updated),
        fields=fields,
        opt_in_source=source or None,
        opt_in_time=None if opt_in is None else from_ms(opt_in),
        confirmed=bool(confirmed),
        insert_time=from_ms(inserted),
    )


def contact_page(
    db: sqlite3.Connection, account_id: int, before: int | None, limit: int
) -> list[Contact]:
    """Contacts (every status) with ``id < before``, newest first, in the summary view."""
    rows = db.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM contact WHERE account_id = ? AND id < ?"
        " ORDER BY id DESC LIMIT ?",
        (account_id, 2**63 - 1 if before is None else before, limit),
    ).fetchall()
    return [_summary(row) for row in rows]


def contacts_by_email(
    db: sqlite3.Connection, account_id: int, emails: Sequence[str]
) -> list[Contact]:
    """The contacts whose address is one of ``emails`` (case-insensitive), newest first."""
    keys = sorted({email.lower() for email in emails})
    if not keys:
        return []
    marks = ", ".join("?" * len(keys))
    rows = db.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM contact WHERE account_id = ? AND email_key IN ({marks})"
        " ORDER BY id DESC",
        (account_id, *keys),
    ).fetchall()
    return [_summary(row) for row in rows]


def contacts_updated_since(
    db: sqlite3.Connection,
    account_id: int,
    since: int,
    after: tuple[int, int] | None,
    *,
    status: str | None,
    list_id: int | None,
    limit: int,
) -> list[Contact]:
    """Contacts updated at or after ``since`` (ms), oldest update first, in the summary view.

    At most one filter applies: ``status`` (a system list) or ``list_id`` (current members of
    a user list; the handler checks it exists); with neither, every contact of the account.

    Args:
        after: the keyset ``(last_update_time, id)`` of the previous page's last row.
    """
    t, last_id = (since, -1) if after is None else after
    t = max(t, since)
    where = ""
    args: tuple[object, ...] = ()
    if status is not None:
        where, args = " AND c.status = ?", (status,)
    elif list_id is not None:
        where = (
            " AND EXISTS (SELECT 1 FROM membership m WHERE m.list_id = ? AND m.contact_id = c.id)"
        )
        args = (list_id,)
    rows = db.execute(
        f"SELECT {_SUMMARY_COLUMNS_C} FROM contact c"
        " WHERE c.account_id = ? AND c.last_update_time >= ?"
        " AND (c.last_update_time > ? OR c.id > ?)"
        f"{where} ORDER BY c.last_update_time, c.id LIMIT ?",
        (account_id, t, t, last_id, *args, limit),
    ).fetchall()
    return [_summary(row) for row in rows]


_FULL_COLUMNS = ", ".join(
    (
        "id",
        "status",
        *CONTACT_FIELDS,
        "opt_in_source",
        "opt_in_time",
        "opt_out_source",
        "opt_out_time",
        "opt_out_reason",
        "confirmed",
        "insert_time",
        "last_update_time",
    )
)
_FIELD_COUNT = len(CONTACT_FIELDS)


def get_contact(db: sqlite3.Connection, account_id: int, contact_id: int) -> Contact | None:
    """One contact with every field and its lists (the full view), or None."""
    row = db.execute(
        f"SELECT {_FULL_COLUMNS} FROM contact WHERE account_id = ? AND id = ?",
        (account_id, contact_id),
    ).fetchone()
    if row is None:
        return None
    cid, status = row[0], row[1]
    values = row[2 : 2 + _FIELD_COUNT]
    (
        opt_in_source,
        opt_in_time,
        opt_out_source,
        opt_out_time,
        opt_out_reason,
        confirmed,
        inserted,
        updated,
    ) = row[2 + _FIELD_COUNT :]
    refs = db.execute(
        "SELECT list_id, opt_in_source, opt_in_time FROM membership WHERE contact_id = ?"
        " ORDER BY list_id",
        (cid,),
    ).fetchall()
    return Contact(
        id=str(cid),
        status=status,
        updated=from_ms(updated),
        fields={name: value for name, value in zip(CONTACT_FIELDS, values, strict=True) if value},
        lists=tuple(
            ContactListRef(
                list_id=str(lid), opt_in_source=source or None, opt_in_time=from_ms(when)
            )
            for lid, source, when in refs
        ),
        opt_in_source=opt_in_source or None,
        opt_in_time=None if opt_in_time is None else from_ms(opt_in_time),
        opt_out_source=opt_out_source or None,
        opt_out_time=None if opt_out_time is None else from_ms(opt_out_time),
        opt_out_reason=opt_out_reason or None,
        confirmed=bool(confirmed),
        insert_time=from_ms(inserted),
        last_update_time=from_ms(updated),
    )


# -- contacts: writes -------------------------------------------------------------------


def _resolve_lists(db: sqlite3.Connection, account_id: int, uris: Iterable[str]) -> list[int]:
    """The ids of the user lists the URIs name, in order, without repeats.

    Raises:
        Invalid: naming the first URI that names no user list of the account.
    """
    found: list[int] = []
    for uri in uris:
        key = list_id_from_uri(uri)
        list_id = int(key) if key is not None and key.isdigit() and len(key) <= 18 else None
        if list_id is None or get_list(db, account_id, list_id) is None:
            raise Invalid(f"ContactList {uri[:200]!r} names no contact list of this account")
        if list_id not in found:
            found.append(list_id)
    return found


_FIELD_SET = frozenset(CONTACT_FIELDS)


def _check_names(fields: dict[str, str]) -> None:
    # Field names become SQL column names: only the known ones ever may.
    unknown = set(fields) - _FIELD_SET
    if unknown:
        raise ValueError(f"not contact fields: {sorted(unknown)}")


def _email_owner(db: sqlite3.Connection, account_id: int, email: str) -> int | None:
    row = db.execute(
        "SELECT id FROM contact WHERE account_id = ? AND email_key = ?",
        (account_id, email.lower()),
    ).fetchone()
    return None if row is None else int(row[0])


def _add_memberships(
    db: sqlite3.Connection, contact_id: int, list_ids: Iterable[int], source: str, now: int
) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO membership (list_id, contact_id, opt_in_source, opt_in_time)"
        " VALUES (?, ?, ?, ?)",
        [(list_id, contact_id, source, now) for list_id in list_ids],
    )


def create_contact(
    db: sqlite3.Connection,
    account_id: int,
    fields: dict[str, str],
    list_uris: Sequence[str],
    source: str,
    now: int,
) -> Contact:
    """Create an ``Active`` contact on the given lists and return it in the full view.

    Args:
        fields: checked field values by element name; ``EmailAddress`` is required.
        list_uris: the ``ContactList`` ids of the request (at least one; the handler checks).
        source: the opt-in source (``ACTION_BY_CUSTOMER`` or ``ACTION_BY_CONTACT``).

    Raises:
        Invalid: a list URI naming no list. Conflict: the email exists.
    """
    _check_names(fields)
    email = fields["EmailAddress"]
    columns = ["account_id", "email_key", *fields]
    values: list[object] = [account_id, email.lower(), *fields.values()]
    columns += ["status", "opt_in_source", "opt_in_time", "insert_time", "last_update_time"]
    with write_tx(db):
        now = max(now, now_ms())
        values += [STATUS_ACTIVE, source, now, now, now]
        list_ids = _resolve_lists(db, account_id, list_uris)
        if _email_owner(db, account_id, email) is not None:
            raise Conflict(f'A contact with email address "{email}" already exists')
        cursor = db.execute(
            f"INSERT INTO contact ({', '.join(columns)}) VALUES ({', '.join('?' * len(values))})",
            values,
        )
        contact_id = cursor.lastrowid
        assert contact_id is not None
        _add_memberships(db, contact_id, list_ids, source, now)
        bump_write_seq(db, account_id)
    created = get_contact(db, account_id, contact_id)
    assert created is not None
    return created


def _replace_memberships(
    db: sqlite3.Connection, contact_id: int, list_ids: list[int], source: str, now: int
) -> None:
    """Make ``list_ids`` the contact's lists: leave the others, join the new ones (kept
    memberships keep their opt-in source and time)."""
    keep = set(list_ids)
    current = {
        int(r[0])
        for r in db.execute("SELECT list_id FROM membership WHERE contact_id = ?", (contact_id,))
    }
    db.executemany(
        "DELETE FROM membership WHERE list_id = ? AND contact_id = ?",
        [(lid, contact_id) for lid in sorted(current - keep)],
    )
    _add_memberships(db, contact_id, [lid for lid in list_ids if lid not in current], source, now)


def update_contact(
    db: sqlite3.Connection,
    account_id: int,
    contact_id: int,
    data: ContactInput,
    source: str | None,
    now: int,
) -> None:
    """Apply a PUT: given fields replace, ``ContactLists`` (when present) is authoritative.

    Status: with lists given, a ``Do Not Mail`` contact becomes ``Active`` only when
    ``source`` is ``ACTION_BY_CONTACT`` (Forbidden otherwise); any other contact becomes ``Active``
    on one or more lists and ``Removed`` on none. Without ``ContactLists`` lists and status
    stay as they are. ``last_update_time`` becomes ``now``.

    Args:
        data: the parsed body, fields already checked by the handler.
        source: the request's ``OptInSource`` (checked), None when absent.

    Raises:
        NotFound, Conflict (the new address belongs to another contact), Invalid (a list
            URI naming no list), Forbidden (refused re-subscription of a Do Not Mail contact).
    """
    fields = dict(data.fields)
    _check_names(fields)
    with write_tx(db):
        row = db.execute(
            "SELECT status FROM contact WHERE account_id = ? AND id = ?",
            (account_id, contact_id),
        ).fetchone()
        if row is None:
            raise NotFound("No such contact")
        now = max(now, now_ms())
        status: str = row[0]
        email = fields.get("EmailAddress")
        if email is not None:
            owner = _email_owner(db, account_id, email)
            if owner is not None and owner != contact_id:
                raise Conflict(f'A contact with email address "{email}" already exists')
        sets = [f"{name} = ?" for name in fields]
        args: list[object] = list(fields.values())
        if email is not None:
            sets.append("email_key = ?")
            args.append(email.lower())
        if data.list_uris is not None:
            list_ids = _resolve_lists(db, account_id, data.list_uris)
            new_status = status
            if status == STATUS_DO_NOT_MAIL:
                if list_ids:
                    if source != ACTION_BY_CONTACT:
                        raise Forbidden(
                            "The contact is on the Do Not Mail list: only the contact can opt"
                            " back in (OptInSource ACTION_BY_CONTACT)",
                        )
                    new_status = STATUS_ACTIVE
                    sets += ["opt_out_source = ''", "opt_out_time = NULL", "opt_out_reason = ''"]
            else:
                new_status = STATUS_ACTIVE if list_ids else STATUS_REMOVED
            if new_status == STATUS_ACTIVE and status != STATUS_ACTIVE:
                sets += ["opt_in_source = ?", "opt_in_time = ?"]
                args += [source or ACTION_BY_CUSTOMER, now]
            sets.append("status = ?")
            args.append(new_status)
            _replace_memberships(db, contact_id, list_ids, source or ACTION_BY_CUSTOMER, now)
        sets.append("last_update_time = ?")
        args.append(now)
        db.execute(
            f"UPDATE contact SET {', '.join(sets)} WHERE id = ?",
            (*args, contact_id),
        )
        bump_write_seq(db, account_id)


def opt_out_contact(db: sqlite3.Connection, account_id: int, contact_id: int, now: int) -> None:
    """DELETE: move the contact to Do Not Mail, off every list (already there: no change).

    Raises:
        NotFound: no such contact.
    """
    with write_tx(db):
        row = db.execute(
            "SELECT status FROM contact WHERE account_id = ? AND id = ?",
            (account_id, contact_id),
        ).fetchone()
        if row is None:
            raise NotFound("No such contact")
        if row[0] == STATUS_DO_NOT_MAIL:
            return
        now = max(now, now_ms())
        db.execute("DELETE FROM membership WHERE contact_id = ?", (contact_id,))
        db.execute(
            "UPDATE contact SET status = ?, opt_out_source = ?, opt_out_time = ?,"
            " last_update_time = ? WHERE id = ?",
            (STATUS_DO_NOT_MAIL, ACTION_BY_CUSTOMER, now, now, contact_id),
        )
        bump_write_seq(db, account_id)
