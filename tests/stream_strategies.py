"""Hypothesis strategies and oracles shared by the tests of ``bulkops.stream``.

(``tests/strategies.py`` belongs to the wire and server tests; these are the stream's.)
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
from collections.abc import Sequence
from urllib.parse import parse_qs

from hypothesis import strategies as st

from bulkops.stream.records import Chunk, Event

# -- values and documents ---------------------------------------------------------------------

#: Characters that make CSV awkward, plus ordinary ones.
AWKWARD = ',";\t\r\n |aAbZ0é€ß😀'


def field_values(*, max_size: int = 12, alphabet: str = AWKWARD) -> st.SearchStrategy[str]:
    """Field text: delimiters, quotes, CR, LF, spaces and non-ASCII mixed in."""
    return st.text(alphabet=alphabet, max_size=max_size)


def quote_field(value: str, delimiter: str = ",", *, always: bool = False) -> str:
    """A field as RFC 4180 writes it: quoted when it must be (or always)."""
    if always or not value or any(c in value for c in (delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def rfc4180_documents(
    draw: st.DrawFn, *, delimiter: str = ",", max_records: int = 8
) -> tuple[str, list[list[str]]]:
    """An RFC 4180 document (minimal or full quoting, CRLF or LF, with or without a final
    line break) and the records in it."""
    records = draw(
        st.lists(st.lists(field_values(), min_size=1, max_size=5), min_size=1, max_size=max_records)
    )
    always = draw(st.booleans())
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    lines = []
    for record in records:
        cells = [quote_field(v, delimiter, always=always) for v in record]
        if cells == [""]:
            cells = ['""']  # an empty line would read as no field at all
        lines.append(delimiter.join(cells))
    text = newline.join(lines)
    if draw(st.booleans()):
        text += newline
    return text, records


#: Anything goes: stray quotes, bare CRs, unbalanced quoting (the stdlib's lenient reading).
lenient_documents = st.text(alphabet='ab,"\r\n é', max_size=40)


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[int]:
    """Cut points for feeding ``data`` in pieces: none, every byte, or random ones."""
    kind = draw(st.sampled_from(["whole", "bytes", "random"]))
    if kind == "whole" or not data:
        return []
    if kind == "bytes" and len(data) <= 2000:
        return list(range(1, len(data)))
    positions = st.integers(min_value=0, max_value=len(data))
    return sorted(draw(st.lists(positions, max_size=12)))


def pieces(data: bytes, points: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``points`` (sorted; empty pieces allowed)."""
    out = []
    previous = 0
    for point in [*points, len(data)]:
        out.append(data[previous:point])
        previous = point
    return out


def stdlib_records(text: str, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    """The stdlib's reading: ``(start line, fields)`` per record (the oracle)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    out = []
    line = 1
    for row in reader:
        out.append((line, row))
        line = reader.line_num + 1
    return out


# -- contact files ----------------------------------------------------------------------------

GOOD_EMAILS = ["ana@example.org", "bo.chen@mail.example.com", "cy+tag@ex-ample.io", "d_e@x.co"]
BAD_EMAILS = ["", "no-at-sign", "two@@example.org", "x@y..com", "a@b", "é@example.org", " "]
SPELLINGS = {
    "EMAIL ADDRESS": ["Email", "E-mail", "email_address", "EMAIL ADDRESS", "Courriel"],
    "FIRST NAME": ["First Name", "firstname", "Vorname", "FIRST NAME"],
    "LAST NAME": ["Last Name", "surname", "Nachname"],
    "ZIP/POSTAL CODE": ["Zip", "Postal Code", "PLZ"],
    "US STATE/CA PROVINCE": ["State/Province", "state code"],
    "CUSTOM FIELD 3": ["Custom Field 3", "custom3", "CF3"],
    "NOTE": ["Notes", "Comment"],
}


@st.composite
def contact_values(draw: st.DrawFn, column: str, emails: Sequence[str]) -> str:
    """A value for ``column``: mostly valid, sometimes too long, badly coded or awkward."""
    if column == "EMAIL ADDRESS":
        value = draw(st.sampled_from([*emails, *BAD_EMAILS]))
        if draw(st.integers(0, 9)) == 0:
            value = value.upper()  # the same address in another case
        if draw(st.integers(0, 19)) == 0:
            value = f" {value} "  # spaces the server trims
        return value
    if column == "US STATE/CA PROVINCE":
        return draw(st.sampled_from(["", "MA", "ma", "ON", "qc", "XX", "Mass."]))
    limit = {"ZIP/POSTAL CODE": 25, "NOTE": 500}.get(column, 50)
    return draw(
        st.one_of(
            field_values(max_size=8),
            st.just("x" * (limit + 1)),
            st.just("ß" * limit),  # within the limit in characters, not in bytes
            st.sampled_from(["Boston, MA", 'He said "hi"', "two\nlines", "NUL\x00here", ""]),
        )
    )


@st.composite
def contact_files(
    draw: st.DrawFn, *, max_rows: int = 60
) -> tuple[bytes, list[str], dict[str, object]]:
    """A contact CSV file as people export them, with its canonical columns and the
    encoding options to read it: headers in other spellings, quoted fields, invalid and
    duplicate emails, ragged and blank rows, CRLF or LF, a BOM, cp1252 or UTF-16."""
    columns = [
        "EMAIL ADDRESS",
        *draw(
            st.lists(
                st.sampled_from(sorted(set(SPELLINGS) - {"EMAIL ADDRESS"})), unique=True, max_size=3
            )
        ),
    ]
    columns = draw(st.permutations(columns))
    header = [draw(st.sampled_from(SPELLINGS[c])) for c in columns]
    delimiter = draw(st.sampled_from([",", ",", ";", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    emails = draw(st.lists(st.sampled_from([*GOOD_EMAILS, "z@x.org", "y@x.org"]), min_size=1))
    lines = [delimiter.join(quote_field(h, delimiter) for h in header)]
    n = draw(st.integers(0, max_rows))
    for _ in range(n):
        kind = draw(st.integers(0, 29))
        if kind == 0:
            lines.append("")  # a blank line
            continue
        values = [draw(contact_values(c, emails)) for c in columns]
        if kind == 1:
            values.append("extra")  # ragged: one field too many
        elif kind == 2 and len(values) > 1:
            values.pop()  # ragged: one field short
        always = draw(st.integers(0, 9)) == 0
        lines.append(delimiter.join(quote_field(v, delimiter, always=always) for v in values))
    text = newline.join(lines)
    if draw(st.booleans()):
        text += newline
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "cp1252", "utf-16"]))
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        encoding = "utf-8"
        data = text.encode(encoding)
    options: dict[str, object] = {}
    if encoding in ("cp1252", "utf-16"):
        options["encoding"] = encoding
    if draw(st.booleans()):
        options["delimiter"] = delimiter
    return data, columns, options


# -- export-shaped files ----------------------------------------------------------------------

#: Values as CRM and spreadsheet exports hold them: quoted commas, doubled quotes, line
#: breaks inside (CRLF, LF, CR), names and cities in several scripts, stray quotes.
EXPORT_VALUES = [
    "Blue Sky, Inc.",
    "Chicago, IL",
    "Zoë",
    "Łukasz",
    "Иван",
    "Αθήνα",
    "東京",
    "서울",
    "القاهرة",
    "תל אביב",
    "मुंबई",
    "Søren",
    'Prefers "email" only',
    "Line one\r\nLine two, with a comma",
    "two\nlines",
    "three\rold mac",
    '5" screen',  # a stray quote: the stdlib reads it leniently
    "",
    "Acme",
    " padded ",
]
EXPORT_COLUMNS = ["Email Address", "First Name", "Company", "City", "Notes", "Last Name"]


@st.composite
def export_files(draw: st.DrawFn, *, max_rows: int = 40) -> bytes:
    """A UTF-8, comma-separated file shaped like an export: most lines quote a field with a
    comma, some fields span lines, CRLF or LF line ends, many rows in other scripts, and
    dirty rows (bad emails, a stray quote, ragged rows, blank lines, an unclosed quote at the
    end)."""
    columns = draw(st.integers(3, len(EXPORT_COLUMNS)))
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    lines = [",".join(EXPORT_COLUMNS[:columns])]
    for _ in range(draw(st.integers(0, max_rows))):
        kind = draw(st.integers(0, 39))
        if kind == 0:
            lines.append("")
            continue
        values = [draw(st.sampled_from([*GOOD_EMAILS, *BAD_EMAILS[:3]]))]
        values += [draw(st.sampled_from(EXPORT_VALUES)) for _ in range(columns - 1)]
        if kind == 1:
            values.pop()  # ragged
        cells = []
        for value in values:
            if value == '5" screen' or draw(st.integers(0, 9)):
                cells.append(quote_field(value))
            else:
                cells.append(quote_field(value, always=True))
        lines.append(",".join(cells))
    text = newline.join(lines)
    ending = draw(st.sampled_from(["newline", "none", "open quote"]))
    if ending == "newline":
        text += newline
    elif ending == "open quote":
        text += newline + GOOD_EMAILS[0] + ',"never closed' + newline + "x"
    return text.encode("utf-8")


# -- oracles for chunks -----------------------------------------------------------------------


def form_fields(chunk: Chunk) -> dict[str, list[bytes]]:
    """The fields of a chunk's body, decoded with the stdlib (``email`` for multipart,
    ``parse_qs`` for urlencoded): every value of each name, in order."""
    if chunk.content_type.startswith("multipart/form-data"):
        head = b"Content-Type: " + chunk.content_type.encode("ascii") + b"\r\n\r\n"
        message = email.message_from_bytes(head + chunk.body, policy=email.policy.HTTP)
        assert message.is_multipart()
        fields: dict[str, list[bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            assert isinstance(name, str)
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            fields.setdefault(name, []).append(payload)
        return fields
    assert chunk.content_type == "application/x-www-form-urlencoded"
    parsed = parse_qs(
        chunk.body.decode("ascii"), keep_blank_values=True, strict_parsing=True, encoding="latin-1"
    )
    return {name: [v.encode("latin-1") for v in values] for name, values in parsed.items()}


def data_rows(data: bytes) -> list[list[str]]:
    """The ``data`` file as the server reads it (stdlib csv, spaces after commas skipped),
    values stripped as the server's worker does."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), skipinitialspace=True)
    return [[v.strip() for v in row] for row in reader]


def by_kind(events: Sequence[Event]) -> dict[str, list[Event]]:
    """Events grouped by type name, each group in a canonical order (split-independent)."""
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(type(event).__name__, []).append(event)
    for name, group in groups.items():
        key = "seq" if name == "Chunk" else "line"
        if name != "Header":
            group.sort(key=lambda e: getattr(e, key))
    return groups
