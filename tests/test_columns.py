"""The shared contact/column vocabulary and row checks."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkops.wire import columns
from bulkops.wire.columns import (
    COLUMNS,
    CONTACT_FIELDS,
    FIELD_LIMITS,
    email_problem,
    field_problem,
    header_key,
    is_valid_email,
    lookup_column,
    row_problem,
)


def test_every_contact_field_has_a_limit() -> None:
    """Each writable field has a length limit."""
    assert set(CONTACT_FIELDS) == set(FIELD_LIMITS)


def test_every_column_fills_a_contact_field() -> None:
    """Columns map onto real Contact elements, each field at most once."""
    fields = [c.field for c in COLUMNS]
    assert set(fields) <= set(CONTACT_FIELDS)
    assert len(fields) == len(set(fields))


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("Email Address", "EmailAddress"),
        ("EMAIL ADDRESS", "EmailAddress"),
        ("email", "EmailAddress"),
        ("E-mail", "EmailAddress"),
        ("email_address", "EmailAddress"),
        ("E-Mail-Adresse", "EmailAddress"),
        ("Correo electrónico", "EmailAddress"),
        ("First Name", "FirstName"),
        ("firstname", "FirstName"),
        ("Prénom", "FirstName"),
        ("Zip", "PostalCode"),
        ("Postal Code", "PostalCode"),
        ("ZIP/POSTAL CODE", "PostalCode"),
        ("Sub Zip/Postal Code", "SubPostalCode"),
        ("Custom Field 3", "CustomField3"),
        ("Custom field1", "CustomField1"),
        ("custom field 15", "CustomField15"),
        ("US STATE/CA PROVINCE", "StateCode"),
        ("State/Province (US/Canada)", "StateCode"),
        ("State", "StateName"),
        ("Notes", "Note"),
    ],
)
def test_headers_people_actually_have_map_to_columns(header: str, field: str) -> None:
    """Real-world header spellings find their column."""
    column = lookup_column(header)
    assert column is not None
    assert column.field == field


def test_unknown_headers_map_to_nothing() -> None:
    """Headers that name no column are not guessed."""
    assert lookup_column("Favourite colour") is None
    assert lookup_column("Custom Field 16") is None


@given(st.sampled_from(COLUMNS), st.sampled_from([str.upper, str.lower, str.title]))
def test_canonical_names_and_export_headers_match_in_any_case(column, case) -> None:  # type: ignore[no-untyped-def]
    """Case never matters."""
    assert lookup_column(case(column.name)) is column
    assert lookup_column(case(column.export_header)) is column


@given(st.text())
def test_header_key_is_idempotent(text: str) -> None:
    """Normalising twice changes nothing."""
    assert header_key(header_key(text)) == header_key(text)


@pytest.mark.parametrize(
    "address",
    [
        "pat@example.org",
        "a.b+tag@sub.example.co.uk",
        "x_y@example.museum",
        "ñandú@ejemplo.es",
        "1258642119407@example.com",
        "o'brien@example.ie",
    ],
)
def test_valid_addresses_pass(address: str) -> None:
    """Everyday addresses are valid."""
    assert is_valid_email(address)
    assert email_problem(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "",
        "plainaddress",
        "a@b",
        "a@@example.com",
        "a@b@example.com",
        "a b@example.com",
        "a@-example.com",
        "a@example-.com",
        "a@example..com",
        "a..b@example.com",
        ".a@example.com",
        "a@example.c",
        "a@example.123",
        "@example.com",
        "a@",
        "x" * 70 + "@example.com",
    ],
)
def test_invalid_addresses_fail(address: str) -> None:
    """Broken addresses are rejected with a reason."""
    assert not is_valid_email(address)
    assert email_problem(address)


def test_state_codes_and_lengths_are_checked() -> None:
    """The fixtures' error message for a bad state code is reproduced exactly."""
    assert field_problem("StateCode", "Test2") == 'Unknown US/Canadian state/prov "Test2"'
    assert field_problem("StateCode", "ma") is None
    assert field_problem("StateCode", "QC") is None
    assert field_problem("FirstName", "x" * 51) == "FIRST NAME is longer than 50 characters"
    assert field_problem("FirstName", "") is None
    assert field_problem("EmailType", "text") is None
    assert field_problem("EmailType", "pdf")


def test_row_problem_reports_the_email_first() -> None:
    """A row without email is invalid whatever else it has."""
    assert row_problem({"FirstName": "x" * 99}) == ("EmailAddress", "Email address is missing")
    assert row_problem({"EmailAddress": "a@example.com", "StateCode": "ZZ"}) == (
        "StateCode",
        'Unknown US/Canadian state/prov "ZZ"',
    )
    assert row_problem([("EmailAddress", "a@example.com"), ("City", "Boston")]) is None


def test_export_headers_are_a_valid_csv_header() -> None:
    """Export headers survive a CSV round trip and all map back to their columns."""
    out = io.StringIO()
    csv.writer(out).writerow(c.export_header for c in COLUMNS)
    row = next(csv.reader(io.StringIO(out.getvalue())))
    assert [lookup_column(h) for h in row] == list(COLUMNS)
    assert columns.EMAIL_COLUMN.field == "EmailAddress"
