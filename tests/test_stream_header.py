"""Header cells to activity columns: aliases, explicit mappings, and the errors."""

from __future__ import annotations

import pytest

from bulkops.errors import ConfigError, InputError
from bulkops.stream.header import map_header, mapping_pairs
from bulkops.stream.records import ChunkKind
from bulkops.wire.columns import known_column_names


def names(cells: list[str], **options: object) -> list[str | None]:
    columns = map_header(cells, **options).columns  # type: ignore[arg-type]
    return [c.name if c is not None else None for c in columns]


@pytest.mark.parametrize(
    ("cell", "column"),
    [
        ("Email", "EMAIL ADDRESS"),
        ("E-mail", "EMAIL ADDRESS"),
        ("email_address", "EMAIL ADDRESS"),
        ("EMAIL ADDRESS", "EMAIL ADDRESS"),
        ("Courriel", "EMAIL ADDRESS"),
        ("First Name", "FIRST NAME"),
        ("firstname", "FIRST NAME"),
        ("Vorname", "FIRST NAME"),
        ("Prénom", "FIRST NAME"),
        ("Zip", "ZIP/POSTAL CODE"),
        ("Postal Code", "ZIP/POSTAL CODE"),
        ("PLZ", "ZIP/POSTAL CODE"),
        ("Custom Field 3", "CUSTOM FIELD 3"),
        ("custom field3", "CUSTOM FIELD 3"),
        ("State/Province", "US STATE/CA PROVINCE"),
        ("Apellido", "LAST NAME"),
        ("Notes", "NOTE"),
        ("Primary Email", "EMAIL ADDRESS"),
        ("E-mailadres", "EMAIL ADDRESS"),
        ("Voornaam", "FIRST NAME"),
        ("Achternaam", "LAST NAME"),
        ("Postleitzahl", "ZIP/POSTAL CODE"),
    ],
)
def test_headers_match_their_column_whatever_the_spelling(cell: str, column: str) -> None:
    """Case, accents, punctuation and the usual aliases in several languages all match."""
    cells = [cell] if column == "EMAIL ADDRESS" else ["Email", cell]
    assert names(cells)[-1] == column


def test_an_explicit_mapping_wins_over_the_table() -> None:
    """source=TARGET maps a column the table does not know, or overrides one it does."""
    assert names(["Mail 1", "Name"], mapping={"Mail 1": "EMAIL ADDRESS", "Name": "last"}) == [
        "EMAIL ADDRESS",
        "LAST NAME",
    ]


def test_mapping_sources_match_case_insensitively_and_strings_parse() -> None:
    """Mappings given as "source=TARGET" strings; sources match by header key."""
    pairs = mapping_pairs(["ID=ignore", " mail 1 = Email "])
    assert pairs == (("ID", "ignore"), ("mail 1", "Email"))
    assert names(["id", "MAIL 1"], mapping=pairs) == [None, "EMAIL ADDRESS"]


def test_an_unknown_column_is_an_error_listing_the_known_names() -> None:
    """The message names the column and lists the canonical names; line and field set."""
    with pytest.raises(InputError) as caught:
        map_header(["Email", "Shoe size", "Favourite colour"], line=3)
    error = caught.value
    assert (error.line, error.field) == (3, "Shoe size")
    assert '"Shoe size", "Favourite colour"' in error.message
    assert all(name in error.message for name in known_column_names())


def test_unknown_columns_can_be_ignored() -> None:
    """ignore_unknown drops them instead."""
    assert names(["Shoe size", "Email"], ignore_unknown=True) == [None, "EMAIL ADDRESS"]


def test_empty_header_cells_are_dropped_with_their_column() -> None:
    """Trailing empty cells (spreadsheet exports) are ignored, as the server does."""
    assert names(["Email", " ", ""]) == ["EMAIL ADDRESS", None, None]


def test_two_cells_naming_one_column_is_an_error() -> None:
    """Email and E-mail both name EMAIL ADDRESS: refused, naming both."""
    with pytest.raises(InputError, match='"Email" and "E-mail" both name EMAIL ADDRESS'):
        map_header(["Email", "E-mail"])


def test_a_header_without_an_email_column_is_an_error() -> None:
    """No email column: the message says which columns were found."""
    with pytest.raises(InputError, match="no email address column") as caught:
        map_header(["First Name", "Zip"])
    assert caught.value.line == 1
    assert "'First Name', 'Zip'" in caught.value.message


def test_a_remove_keeps_only_the_email_column() -> None:
    """For REMOVE_CONTACTS_FROM_LISTS other columns are dropped, known or not."""
    assert names(["First Name", "Email", "Shoe size"], kind=ChunkKind.REMOVE) == [
        None,
        "EMAIL ADDRESS",
        None,
    ]


@pytest.mark.parametrize(
    "mapping",
    [{"Email": "NO SUCH COLUMN"}, {"Not in file": "Email"}, ["no equals sign"]],
)
def test_bad_mappings_are_config_errors(mapping: object) -> None:
    """A target that names no column, or a source the header lacks."""
    with pytest.raises(ConfigError):
        map_header(["Email", "First Name"], mapping=mapping)  # type: ignore[arg-type]


def test_the_data_header_line_uses_canonical_names_in_source_order() -> None:
    """What the server receives: canonical names, comma-separated, kept columns only."""
    columns = map_header(["Zip", "Junk", "Email"], mapping={"Junk": ""})
    assert columns.header_line() == b"ZIP/POSTAL CODE,EMAIL ADDRESS"
    assert (columns.kept, columns.email_index, columns.keeps_all) == ((0, 2), 2, False)
