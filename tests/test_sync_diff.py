"""The sync diff (SQLite, on disk) against a simple in-memory model."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bulkops.engine.sync_diff import (
    BASE_SCHEMA,
    compare,
    counts,
    decode_vals,
    diff,
    encode_vals,
    model_diff,
    normalise,
    open_db,
)

COLUMNS = ("FirstName", "City")

_names = st.sampled_from(["ann", "bob", "cid", "dee", "eve", "fay"])
_cases = st.sampled_from([str.lower, str.upper, str.title])
_values = st.lists(st.sampled_from(["", "x", "y", "Oslo"]), min_size=2, max_size=2)


@st.composite
def _emails(draw: st.DrawFn) -> str:
    return draw(_cases)(draw(_names)) + "@example.com"


@settings(max_examples=150, deadline=None)
@given(
    base=st.dictionaries(_names, st.tuples(_cases, _values), max_size=6),
    opted=st.sets(_names, max_size=3),
    rows=st.lists(st.tuples(_emails(), _values), max_size=12),
    remove_missing=st.booleans(),
)
def test_the_diff_agrees_with_the_model(
    base: dict[str, tuple[object, list[str]]],
    opted: set[str],
    rows: list[tuple[str, list[str]]],
    remove_missing: bool,
) -> None:
    """Every row gets the model's outcome and route; members not in the file are removed
    exactly when asked; the counts add up to the rows read."""
    members = {
        f"{name}@example.com": (case(name) + "@example.com", vals)  # type: ignore[operator]
        for name, (case, vals) in base.items()
        if name not in opted
    }
    opted_keys = {f"{name}@example.com" for name in opted}
    lines = [(i + 2, email, vals) for i, (email, vals) in enumerate(rows)]
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "sync.db")
        db.executescript(BASE_SCHEMA)
        db.executemany(
            "INSERT INTO base_member VALUES (?, ?, NULL, ?)",
            [(k, e, encode_vals(v)) for k, (e, v) in members.items()],
        )
        db.executemany("INSERT INTO base_opted_out VALUES (?)", [(k,) for k in opted_keys])
        db.executemany(
            "INSERT INTO file_row VALUES (?, ?, ?, ?)",
            [(line, e.lower(), e, encode_vals(v)) for line, e, v in lines],
        )
        result = diff(db, COLUMNS, remove_missing=remove_missing)
        got = {
            line: (kind, route)
            for line, kind, route in db.execute("SELECT line, kind, route FROM row_outcome")
        }
        removed = {k for (k,) in db.execute("SELECT email_key FROM remove_row")}
        db.close()
    assert got == model_diff(members, opted_keys, lines, COLUMNS)
    in_file = {e.lower() for _l, e, _v in lines}
    assert removed == (set(members) - in_file if remove_missing else set())
    assert result.read == len(lines)
    total = result.added + result.updated + result.unchanged + result.opted_out + result.duplicate
    assert total == result.read


def test_a_case_change_of_the_email_alone_is_an_update() -> None:
    """The server keeps the spelling: a new spelling is sent (by an add)."""
    assert compare(COLUMNS, "Ann@x.org", ["a", ""], "ann@x.org", ["a", ""]) == (
        "updated",
        "bulk",
        ["EmailAddress"],
    )


def test_an_emptied_value_goes_by_put() -> None:
    """An add cannot empty a field; a PUT can."""
    assert compare(COLUMNS, "a@x.org", ["a", ""], "a@x.org", ["a", "Oslo"]) == (
        "updated",
        "put",
        ["City"],
    )


def test_values_are_compared_as_the_server_stores_them() -> None:
    """Trimmed; state codes upper case; email types spelled as the server spells them."""
    assert normalise("City", "  Oslo ") == "Oslo"
    assert normalise("StateCode", "ny") == "NY"
    assert normalise("EmailType", "html") == "HTML"
    assert normalise("EmailType", "TEXT") == "Text"
    assert decode_vals(encode_vals(["a", "", 'q"'])) == ["a", "", 'q"']


def test_counts_of_an_empty_database_are_zero(tmp_path: Path) -> None:
    """Nothing read, nothing planned."""
    db = open_db(tmp_path / "s.db")
    db.executescript(BASE_SCHEMA)
    assert counts(db).read == 0
    db.close()
