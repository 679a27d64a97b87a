"""Row checks: the byte-level fast patterns never accept what the exact check refuses."""

from __future__ import annotations

import csv
import io
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bulkops.stream.header import map_header
from bulkops.stream.validate import (
    _email_pattern,
    encode_row,
    fast_email_ok,
    plain_row_pattern,
    quoted_row_pattern,
    record_pattern,
    row_problem_of,
)
from bulkops.wire.columns import control_problem, is_valid_email
from tests.stream_strategies import EXPORT_VALUES, quote_field

EMAIL_ALPHABET = "ab.-_@+'é1Z!%&#$*/=?^`{|}~ \"(),:;<>[]\\"
emails = st.one_of(
    st.text(alphabet=EMAIL_ALPHABET, max_size=20),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
        st.text(alphabet="ab.-_+'", min_size=1, max_size=12),
        st.lists(st.text(alphabet="a1-", min_size=1, max_size=65), min_size=1, max_size=3),
        st.text(alphabet="abcZ1", min_size=1, max_size=6),
    ),
)
HEADER = ["Email", "First Name", "State/Province", "Zip", "Email Type", "Custom Field 1"]
COLUMNS = map_header(HEADER)
VALUES = st.text(alphabet="aé€ ,-.x'", max_size=60)


@pytest.mark.parametrize("delimiter", [b",", b";", b"|"])
@given(address=emails)
@example(address="a-.b@example.org")
@example(address="a@" + "b" * 63 + ".com")
@example(address="x" * 75 + "@ab.com")
def test_the_fast_email_pattern_implies_the_exact_check(delimiter: bytes, address: str) -> None:
    """What the fast pattern and its two batch checks accept, is_valid_email accepts."""
    pattern = re.compile(_email_pattern(delimiter))
    raw = address.encode("utf-8")
    if pattern.fullmatch(raw) and fast_email_ok([raw]):
        assert is_valid_email(address)


@pytest.mark.parametrize(
    "address",
    ["ana@example.org", "bo.chen+news@mail.example.co.uk", "o'brien@ex-ample.io", "x_1@a.de"],
)
def test_ordinary_addresses_take_the_fast_path(address: str) -> None:
    """The fast pattern is not vacuous: usual addresses pass it."""
    assert re.compile(_email_pattern(b",")).fullmatch(address.encode())
    assert fast_email_ok([address.encode()])


@given(values=st.lists(VALUES, min_size=6, max_size=6), email=emails)
@example(values=["", "Ann", "MA", "02134", "HTML", "x"], email="ana@example.org")
def test_a_plain_line_the_fast_pattern_accepts_passes_the_exact_check(
    values: list[str], email: str
) -> None:
    """findall's email for a quote-free line implies row_problem_of(line) is None."""
    values[0] = email
    if any('"' in v or "," in v or "\n" in v or "\r" in v for v in values):
        return
    line = ",".join(values).encode("utf-8") + b"\n"
    found = plain_row_pattern(COLUMNS, b",").findall(line)
    assert len(found) == 1
    if found[0] and fast_email_ok(found):
        assert row_problem_of(COLUMNS, values) is None
        assert found[0] == email.encode()


def test_a_typical_line_is_accepted_by_the_plain_pattern() -> None:
    """Valid rows with multi-byte names and every special column take the fast path."""
    line = b"ana@example.org,Zo\xc3\xab,qc,H2X 1Y4,Text,\n"
    assert plain_row_pattern(COLUMNS, b",").findall(line) == [b"ana@example.org"]


@given(values=st.lists(VALUES, min_size=6, max_size=6), email=emails, always=st.booleans())
def test_a_quoted_record_the_fast_pattern_accepts_passes_the_exact_check(
    values: list[str], email: str, always: bool
) -> None:
    """The whole-record pattern implies the exact check on the stdlib's reading."""
    values[0] = email
    line = ",".join(quote_field(v, always=always) for v in values).encode("utf-8") + b"\r\n"
    match = quoted_row_pattern(COLUMNS, b",").match(line)
    if match is None or not fast_email_ok([match.group(2)]):
        return
    assert match.end() == len(line)
    (read,) = csv.reader(io.StringIO(line.decode(), newline=""))
    assert row_problem_of(COLUMNS, read) is None
    assert match.group(2) == read[0].encode()


@given(
    records=st.lists(
        st.tuples(
            emails,
            st.lists(st.one_of(VALUES, st.sampled_from(EXPORT_VALUES)), min_size=5, max_size=5),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    newline=st.sampled_from(["\r\n", "\n"]),
)
def test_what_the_record_pattern_accepts_is_one_stdlib_record_that_passes(
    records: list[tuple[str, list[str], bool]], newline: str
) -> None:
    """Over a run of records, each match the pattern gives an email for is exactly the
    record the stdlib reads there, and it passes the exact check; matches tile the run."""
    text = "".join(
        ",".join(quote_field(v, always=always) for v in [email, *values]) + newline
        for email, values, always in records
    )
    raw = text.encode("utf-8")
    found = record_pattern(COLUMNS, b",").findall(raw)
    assert sum(len(record) + 1 for record, _q, _e in found) == len(raw)
    position = 0
    for record, _quote, email in found:
        if email and fast_email_ok([email]):
            chunk = raw[position : position + len(record) + 1].decode("utf-8")
            (read,) = csv.reader(io.StringIO(chunk, newline=""))
            assert row_problem_of(COLUMNS, read) is None
            assert email == read[0].encode()
        position += len(record) + 1


def test_a_quoted_record_with_commas_and_newlines_takes_the_fast_path() -> None:
    """The usual quoting (commas, doubled quotes, line breaks inside) matches."""
    line = b'"ana@example.org","Ann, Jr","ON","K1A 0B1","","say ""hi""\nthere"\n'
    match = quoted_row_pattern(COLUMNS, b",").match(line)
    assert match is not None
    assert match.group(2) == b"ana@example.org"


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        (["", "A", "", "", "", ""], "Email", "missing"),
        (["a@b", "A", "", "", "", ""], "Email", "Invalid"),
        (["a@b.org", "x" * 51, "", "", "", ""], "First Name", "longer than 50"),
        (["a@b.org", "", "XX", "", "", ""], "State/Province", "Unknown US/Canadian"),
        (["a@b.org", "", "", "1" * 26, "", ""], "Zip", "longer than 25"),
        (["a@b.org", "", "", "", "PDF", ""], "Email Type", "HTML or Text"),
        (["a@b.org", "A\x00B", "", "", "", ""], "First Name", "U+0000"),
    ],
)
def test_the_exact_check_names_the_source_column_and_the_reason(
    values: list[str], field: str, words: str
) -> None:
    """The problem comes back as (header as written, reason)."""
    problem = row_problem_of(COLUMNS, values)
    assert problem is not None
    assert problem[0] == field
    assert words in problem[1]


def test_values_are_checked_stripped_and_by_characters() -> None:
    """Spaces around a value do not count; 50 two-byte characters are within the limit."""
    assert row_problem_of(COLUMNS, [" a@b.org ", "ß" * 50, " ma ", "", " html", ""]) is None


@given(st.lists(st.text(alphabet='a,"\r\n é', max_size=8), min_size=1, max_size=5))
def test_encoded_rows_read_back_as_the_values(values: list[str]) -> None:
    """encode_row quotes just enough for csv.reader to give the values back."""
    row = encode_row(values).decode("utf-8") + "\r\n"
    (read,) = csv.reader(io.StringIO(row, newline=""))
    assert read == values if values != [""] else read in ([], [""])


def test_control_characters_other_than_tab_and_line_breaks_are_refused() -> None:
    """XML cannot carry them; tab, CR and LF are fine."""
    assert control_problem("a\tb\r\nc") is None
    assert control_problem("bell\x07") == (
        "contains the control character U+0007, which XML cannot carry"
    )
