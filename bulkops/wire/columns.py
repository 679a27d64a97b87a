"""Contact fields, activity column names and their aliases, field limits and row checks.

One vocabulary for both halves: the server applies activity ``data`` with it and the engine
validates rows with it before they leave the machine, so the two never disagree about what a
valid row is (spec §6.1, §7.4, §7.9).

Three names exist for every contact attribute:

* the **field**: the XML element of the ``Contact`` payload (``FirstName``);
* the **column**: the canonical upper-case activity column (``FIRST NAME``), sent in ``data``;
* the **export header**: the title-case header of export files (``First Name``).

Header matching is by :func:`header_key`: case-folded, accents stripped, everything but letters
and digits dropped, so ``"E-mail"``, ``"email_address"`` and ``"Email Address"`` all match.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

import attrs

__all__ = [
    "COLUMNS",
    "CONTACT_FIELDS",
    "CONTACT_STATUSES",
    "CONTROL_BYTES",
    "CONTROL_RE",
    "CUSTOM_FIELD_COUNT",
    "EMAIL_COLUMN",
    "EMAIL_MAX_LENGTH",
    "EMAIL_TYPES",
    "FIELD_LIMITS",
    "OPT_IN_SOURCES",
    "STATE_CODES",
    "Column",
    "column_for_field",
    "control_problem",
    "email_problem",
    "field_problem",
    "header_key",
    "is_valid_email",
    "known_column_names",
    "lookup_column",
    "row_problem",
]

CUSTOM_FIELD_COUNT = 15
EMAIL_MAX_LENGTH = 80

CONTACT_STATUSES = ("Active", "Unconfirmed", "Removed", "Do Not Mail")
OPT_IN_SOURCES = ("ACTION_BY_CUSTOMER", "ACTION_BY_CONTACT")
EMAIL_TYPES = ("HTML", "Text")

#: Writable contact fields in the element order of a full ``Contact`` (spec §6.1). ``Status``
#: comes before them and ``ContactLists``, ``Confirmed`` and the times after them; those are
#: server-maintained and not listed here.
CONTACT_FIELDS: tuple[str, ...] = (
    "EmailAddress",
    "EmailType",
    "Name",
    "FirstName",
    "MiddleName",
    "LastName",
    "JobTitle",
    "CompanyName",
    "HomePhone",
    "WorkPhone",
    "Addr1",
    "Addr2",
    "Addr3",
    "City",
    "StateCode",
    "StateName",
    "CountryCode",
    "CountryName",
    "PostalCode",
    "SubPostalCode",
    "Note",
    *(f"CustomField{n}" for n in range(1, CUSTOM_FIELD_COUNT + 1)),
)

#: Maximum length in characters of each field (spec §6.1 working values).
FIELD_LIMITS: Mapping[str, int] = {
    "EmailAddress": EMAIL_MAX_LENGTH,
    "EmailType": 4,
    "Name": 100,
    "FirstName": 50,
    "MiddleName": 50,
    "LastName": 50,
    "JobTitle": 50,
    "CompanyName": 50,
    "HomePhone": 50,
    "WorkPhone": 50,
    "Addr1": 50,
    "Addr2": 50,
    "Addr3": 50,
    "City": 50,
    "StateCode": 2,
    "StateName": 50,
    "CountryCode": 2,
    "CountryName": 50,
    "PostalCode": 25,
    "SubPostalCode": 25,
    "Note": 500,
    **{f"CustomField{n}": 50 for n in range(1, CUSTOM_FIELD_COUNT + 1)},
}

#: US states, DC, territories, armed-forces codes, and Canadian provinces and territories.
STATE_CODES: frozenset[str] = frozenset(
    (
        "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
        "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR GU VI AS MP UM AA AE AP "
        "AB BC MB NB NL NS NT NU ON PE QC SK YT"
    ).split()
)


@attrs.frozen(kw_only=True)
class Column:
    """One activity column.

    Attributes:
        name: canonical column name sent in activity ``data`` (``"FIRST NAME"``).
        field: the ``Contact`` element it fills (``"FirstName"``).
        export_header: header used in export files (``"First Name"``).
        aliases: other header spellings accepted, matched through :func:`header_key`.
    """

    name: str
    field: str
    export_header: str
    aliases: tuple[str, ...] = ()

    @property
    def limit(self) -> int:
        """Maximum length of a value, in characters."""
        return FIELD_LIMITS[self.field]


def _custom(n: int) -> Column:
    return Column(
        name=f"CUSTOM FIELD {n}",
        field=f"CustomField{n}",
        export_header=f"Custom field {n}",
        aliases=(f"custom{n}", f"cf{n}", f"customfield{n}"),
    )


#: Every activity column, in the order export files list them.
COLUMNS: tuple[Column, ...] = (
    Column(
        name="EMAIL ADDRESS",
        field="EmailAddress",
        export_header="Email Address",
        aliases=(
            "email",
            "e-mail",
            "mail",
            "email_address",
            "emailaddr",
            "e-mail address",
            "e-mail-adresse",
            "emailadresse",
            "courriel",
            "adresse e-mail",
            "adresse email",
            "correo",
            "correo electrónico",
            "correo electronico",
            "indirizzo email",
            "endereço de email",
            "endereço de e-mail",
            "primary email",
            "email 1",
            "e-mailadres",
            "emailadres",
        ),
    ),
    Column(
        name="EMAIL TYPE",
        field="EmailType",
        export_header="Email Type",
        aliases=("email format", "format"),
    ),
    Column(
        name="FIRST NAME",
        field="FirstName",
        export_header="First Name",
        aliases=(
            "firstname",
            "first",
            "fname",
            "given name",
            "forename",
            "vorname",
            "prénom",
            "prenom",
            "nombre",
            "nome",
            "voornaam",
        ),
    ),
    Column(
        name="MIDDLE NAME",
        field="MiddleName",
        export_header="Middle Name",
        aliases=("middlename", "middle", "middle initial"),
    ),
    Column(
        name="LAST NAME",
        field="LastName",
        export_header="Last Name",
        aliases=(
            "lastname",
            "last",
            "lname",
            "surname",
            "family name",
            "nachname",
            "nom",
            "nom de famille",
            "apellido",
            "apellidos",
            "cognome",
            "sobrenome",
            "achternaam",
        ),
    ),
    Column(
        name="JOB TITLE",
        field="JobTitle",
        export_header="Job Title",
        aliases=("jobtitle", "position"),
    ),
    Column(
        name="COMPANY NAME",
        field="CompanyName",
        export_header="Company Name",
        aliases=(
            "company",
            "organization",
            "organisation",
            "firma",
            "unternehmen",
            "entreprise",
            "société",
            "empresa",
        ),
    ),
    Column(
        name="HOME PHONE",
        field="HomePhone",
        export_header="Home Phone",
        aliases=("phone", "telephone", "phone number", "telefon", "téléphone", "teléfono"),
    ),
    Column(
        name="WORK PHONE",
        field="WorkPhone",
        export_header="Work Phone",
        aliases=("business phone", "office phone"),
    ),
    Column(
        name="ADDRESS LINE 1",
        field="Addr1",
        export_header="Address Line 1",
        aliases=("address", "address 1", "addr1", "street", "street address", "straße", "adresse"),
    ),
    Column(
        name="ADDRESS LINE 2",
        field="Addr2",
        export_header="Address Line 2",
        aliases=("address 2", "addr2"),
    ),
    Column(
        name="ADDRESS LINE 3",
        field="Addr3",
        export_header="Address Line 3",
        aliases=("address 3", "addr3"),
    ),
    Column(
        name="CITY",
        field="City",
        export_header="City",
        aliases=("town", "stadt", "ort", "ville", "ciudad", "città", "cidade"),
    ),
    Column(
        name="STATE",
        field="StateName",
        export_header="State",
        aliases=("state name", "province name", "bundesland"),
    ),
    Column(
        name="US STATE/CA PROVINCE",
        field="StateCode",
        export_header="US State/CA Province",
        aliases=("state/province (us/canada)", "state code", "province code", "state/province"),
    ),
    Column(
        name="COUNTRY",
        field="CountryName",
        export_header="Country",
        aliases=("country name", "land", "pays", "país", "paese"),
    ),
    Column(
        name="ZIP/POSTAL CODE",
        field="PostalCode",
        export_header="Zip/Postal Code",
        aliases=(
            "postal code",
            "zip",
            "zip code",
            "zipcode",
            "postcode",
            "plz",
            "postleitzahl",
            "code postal",
            "código postal",
            "cap",
        ),
    ),
    Column(
        name="SUB ZIP/POSTAL CODE",
        field="SubPostalCode",
        export_header="Sub Zip/Postal Code",
        aliases=("sub postal code", "zip+4", "zip4", "zip plus 4"),
    ),
    *(_custom(n) for n in range(1, CUSTOM_FIELD_COUNT + 1)),
    Column(
        name="NOTE",
        field="Note",
        export_header="Note",
        aliases=("notes", "comment", "comments"),
    ),
)

EMAIL_COLUMN: Column = COLUMNS[0]


def header_key(name: str) -> str:
    """Normalise a header for matching: case-folded, accents stripped, letters and digits only.

    >>> header_key(" E-Mail_Address ")
    'emailaddress'
    """
    # Compatibility decomposition can reveal case ('𝕊' -> 'S') and case folding can undo a
    # normalisation; alternate the two until nothing changes (a couple of rounds at most).
    folded = name
    for _ in range(8):
        again = unicodedata.normalize("NFKD", folded).casefold()
        if again == folded:
            break
        folded = again
    return "".join(ch for ch in folded if ch.isalnum())


def _build_index() -> dict[str, Column]:
    index: dict[str, Column] = {}
    for column in COLUMNS:
        for spelling in (column.name, column.field, column.export_header, *column.aliases):
            key = header_key(spelling)
            other = index.setdefault(key, column)
            if other is not column:  # pragma: no cover - a table bug, caught by the tests
                raise AssertionError(f"alias {spelling!r} maps to {other.name} and {column.name}")
    return index


_INDEX = _build_index()
_BY_FIELD = {column.field: column for column in COLUMNS}


def lookup_column(header: str) -> Column | None:
    """The column a header names, or None when it names none.

    Matching ignores case, accents, spaces and punctuation; canonical names, field names,
    export headers and the aliases all match.
    """
    return _INDEX.get(header_key(header))


def column_for_field(field: str) -> Column:
    """The column of a ``Contact`` field name.

    Raises:
        KeyError: the field has no activity column (``Name``, ``CountryCode``).
    """
    return _BY_FIELD[field]


def known_column_names() -> tuple[str, ...]:
    """Canonical column names, for error messages that list what is accepted."""
    return tuple(column.name for column in COLUMNS)


# One '@'; a local part without spaces, quotes or separators; a domain of labels that start and
# end with a letter or digit, ending in an alphabetic TLD of 2 to 63 characters. Letters
# include non-ASCII ones (internationalised addresses).
_EMAIL_RE = re.compile(
    r"[^@\s\"(),:;<>\[\\\]\x00-\x1f\x7f]+"
    r"@(?:[^\W_](?:[^\W_]|-){0,61}\.)*"
    r"(?:[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?\.)"
    r"[^\W\d_]{2,63}"
)


def is_valid_email(address: str) -> bool:
    """Practical email check: one ``@``, valid domain labels, at most 80 characters."""
    return (
        len(address) <= EMAIL_MAX_LENGTH
        and _EMAIL_RE.fullmatch(address) is not None
        and ".." not in address
        and not address.startswith(".")
        and "-." not in address
    )


def email_problem(address: str) -> str | None:
    """Why an email address is unacceptable, or None when it is fine."""
    if not address:
        return "Email address is missing"
    if len(address) > EMAIL_MAX_LENGTH:
        return f"Email address is longer than {EMAIL_MAX_LENGTH} characters"
    if not is_valid_email(address):
        return f'Invalid email address "{address}"'
    return None


#: C0 control bytes XML 1.0 cannot carry (tab, LF and CR are fine), and DEL.
CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
CONTROL_RE = re.compile("[" + re.escape(CONTROL_BYTES.decode("latin-1")) + "]")


def control_problem(value: str) -> str | None:
    """Why a value is unacceptable for its control characters, or None.

    The same rule on both sides: the engine rejects such a row before sending it, and the
    server refuses it in an activity (a feed could not carry it as XML, and PostgreSQL
    cannot store a NUL as text).
    """
    found = CONTROL_RE.search(value)
    if found is None:
        return None
    return f"contains the control character U+{ord(found.group()):04X}, which XML cannot carry"


def field_problem(field: str, value: str) -> str | None:
    """Why a field value is unacceptable, or None when it is fine (empty is always fine).

    Checks the length limit, ``EmailType`` values and ``StateCode`` against the US/CA codes;
    the email itself is checked by :func:`email_problem`.
    """
    if not value:
        return None
    if field == "StateCode" and value.upper() not in STATE_CODES:
        return f'Unknown US/Canadian state/prov "{value}"'
    limit = FIELD_LIMITS.get(field)
    if limit is not None and len(value) > limit:
        column = _BY_FIELD.get(field)
        label = column.name if column is not None else field
        return f"{label} is longer than {limit} characters"
    if field == "EmailType" and value.casefold() not in ("html", "text"):
        return f'Unknown email type "{value}" (HTML or Text)'
    return None


def row_problem(fields: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The first problem of a row given as ``{field: value}``: ``(field, message)`` or None.

    The email address is required and checked first; then every other field in turn.
    """
    items = fields.items() if isinstance(fields, Mapping) else fields
    values = dict(items)
    problem = email_problem(values.get("EmailAddress", ""))
    if problem is not None:
        return "EmailAddress", problem
    for field, value in values.items():
        if field == "EmailAddress":
            continue
        problem = field_problem(field, value)
        if problem is not None:
            return field, problem
    return None
