"""Seeded generator of realistic contact files for the stream benchmarks.

The same ``--rows`` and ``--seed`` always give byte-identical output, so figures measured on
different days compare. ``--format xml`` writes the same contacts as an Atom feed of Contact
entries, as the API's contacts feed looks. A CSV file has 12 columns under the headers people
actually export (``Email``, ``First Name``, ``Zip``, ...), UTF-8 without BOM, LF line ends,
and the awkward parts of real exports in fixed proportions:

* about 4% of rows quote a field with a comma (``"Acme, Inc."``), 1% quote a field with an
  embedded newline (a two-line street address), 0.5% quote a field with an embedded ``""``;
* about 8% of names are non-ASCII (``Zoë``, ``Łukasz``, ``Søren``, ``Đặng``);
* about 0.5% of emails are invalid and 1% of rows repeat an earlier email in another case.

Usage::

    python benchmarks/gen_contacts.py --rows 1000000 --out /tmp/contacts-1m.csv
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from xml.sax.saxutils import escape

__all__ = [
    "EXPORT_HEADER",
    "HEADER",
    "XML_FIELDS",
    "contacts",
    "export_contacts",
    "generate",
    "generate_export",
    "generate_xml",
    "main",
    "write_file",
]

HEADER = (
    "Email,First Name,Last Name,Company,Job Title,Phone,Address,City,State/Province,Zip,"
    "Country,Custom Field 1"
)

_FIRST = (
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony "
    "Betty Mark Sandra Donald Ashley Steven Emily Paul Donna Andrew Michelle Joshua Carol Kevin "
    "Amanda Brian Melissa George Deborah Ana Bo Cy Omar Priya Wei Yuki Lars Ingrid Pedro Lucia"
).split()
_FIRST_INTL = (
    "Zoë Łukasz Søren Đặng José Müller François Ærin Björk Ümit Nuño Chloé Jürgen Ōta".split()
)
_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Diaz Chen Ito"
).split()
_LAST_INTL = (
    "Ødegaard Kowalczyk Þórsson Nuñez Dvořák Gößling Lefèvre Štěpánek Çelik Ångström".split()
)
_COMPANIES = (
    "Acme Globex Initech Umbrella Hooli Vandelay Stark Wayne Wonka Cyberdyne Soylent Tyrell "
    "Aperture Massive Dynamic Gringotts Monsters Oscorp Pied Piper Prestige Sterling"
).split()
_SUFFIX = ("Inc.", "LLC", "Ltd", "GmbH", "& Sons", "Group", "Partners", "Co.")
_TITLES = (
    "Manager",
    "Director",
    "Engineer",
    "Analyst",
    "Owner",
    "Consultant",
    "Designer",
    "Teacher",
    "Nurse",
    "Sales Rep",
    "Accountant",
    "Developer",
    "Chef",
    "Florist",
    "",
)
_STREETS = "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Sunset Lincoln".split()
_CITIES = (
    "Boston Springfield Portland Austin Denver Seattle Chicago Toronto Montréal Vancouver "
    "Calgary Phoenix Dallas Atlanta Miami Omaha Madison Salem Dover Albany"
).split()
_STATES = "MA IL OR TX CO WA IL ON QC BC AB AZ TX GA FL NE WI OR DE NY".split()
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


def contacts(rows: int, seed: int = 2024) -> Iterator[tuple[str, ...]]:
    """Yield ``rows`` contacts as 12 plain values, in the columns of :data:`HEADER`.

    Args:
        rows: number of contacts.
        seed: seed of the private random generator.

    Returns:
        An iterator of 12-tuples (commas, quotes and newlines inside values are left as
        they are: quoting is the writer's business).
    """
    rnd = random.Random(seed)
    recent: list[str] = []
    for n in range(rows):
        r = rnd.random()
        first = rnd.choice(_FIRST_INTL if r < 0.08 else _FIRST)
        last = rnd.choice(_LAST_INTL if 0.04 < r < 0.10 else _LAST)
        domain = rnd.choice(_DOMAINS)
        email = f"{first.lower()}.{last.lower()}{n}@{domain}"
        if not email.isascii():
            email = f"user{n}.{rnd.randrange(1000)}@{domain}"
        kind = rnd.random()
        if kind < 0.005:
            email = rnd.choice((f"{first}{n}@", f"no-at-sign{n}.example.com", f"x{n}@bad..com"))
        elif kind < 0.015 and recent:
            email = rnd.choice(recent).upper()
        elif kind < 0.05:
            recent.append(email)
            if len(recent) > 1000:
                del recent[: len(recent) // 2]
        company = f"{rnd.choice(_COMPANIES)} {rnd.choice(_SUFFIX)}"
        q = rnd.random()
        if q < 0.04:
            company = f"{rnd.choice(_COMPANIES)}, {rnd.choice(_SUFFIX)}"
        address = f"{rnd.randrange(1, 9999)} {rnd.choice(_STREETS)} St"
        if 0.04 <= q < 0.05:
            address = f"{address}\nSuite {rnd.randrange(1, 999)}"
        title = rnd.choice(_TITLES)
        if 0.05 <= q < 0.055:
            title = 'Chief "Fun" Officer'
        city_i = rnd.randrange(len(_CITIES))
        phone = f"+1 {rnd.randrange(200, 999)}-{rnd.randrange(200, 999)}-{rnd.randrange(10000):04d}"
        zip_code = f"{rnd.randrange(100000):05d}"
        country = "Canada" if _STATES[city_i] in ("ON", "QC", "BC", "AB") else "United States"
        custom = rnd.choice(("gold", "silver", "bronze", "", "vip", "newsletter"))
        yield (
            email,
            first,
            last,
            company,
            title,
            phone,
            address,
            _CITIES[city_i],
            _STATES[city_i],
            zip_code,
            country,
            custom,
        )


def _csv_value(value: str) -> str:
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def generate(rows: int, seed: int = 2024) -> Iterator[str]:
    """Yield the CSV header line and ``rows`` data lines, each ending in ``\\n`` (a quoted
    field may hold a newline inside one "line"); fields are quoted only when they must be.
    """
    yield HEADER + "\n"
    for values in contacts(rows, seed):
        yield ",".join(map(_csv_value, values)) + "\n"


#: The Contact element of each column of HEADER, for the XML form.
XML_FIELDS = (
    "EmailAddress",
    "FirstName",
    "LastName",
    "CompanyName",
    "JobTitle",
    "HomePhone",
    "Addr1",
    "City",
    "StateCode",
    "PostalCode",
    "CountryName",
    "CustomField1",
)


def generate_xml(rows: int, seed: int = 2024) -> Iterator[str]:
    """Yield an Atom feed of ``rows`` Contact entries, as the API's contacts feed looks."""
    base = "http://api.constantcontact.com/ws/customers/bench/contacts"
    yield (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns="http://www.w3.org/2005/Atom">\n'
        f"  <id>{base}</id>\n"
        '  <title type="text">Contacts for Customer: bench</title>\n'
        "  <updated>2026-01-01T00:00:00.000Z</updated>\n"
    )
    for n, values in enumerate(contacts(rows, seed)):
        fields = "".join(
            f"      <{name}>{escape(value)}</{name}>\n"
            for name, value in zip(XML_FIELDS, values, strict=True)
        )
        yield (
            "  <entry>\n"
            f'    <link href="/ws/customers/bench/contacts/{n}" rel="edit" />\n'
            f"    <id>{base}/{n}</id>\n"
            f'    <title type="text">Contact: {escape(values[0])}</title>\n'
            "    <updated>2026-01-01T00:00:00.000Z</updated>\n"
            "    <author><name>Constant Contact</name></author>\n"
            '    <content type="application/vnd.ctct+xml">\n'
            f'      <Contact xmlns="http://ws.constantcontact.com/ns/1.0/" id="{base}/{n}">\n'
            "      <Status>Active</Status>\n"
            f"{fields}"
            "      <OptInSource>ACTION_BY_CUSTOMER</OptInSource>\n"
            "      </Contact>\n"
            "    </content>\n"
            "  </entry>\n"
        )
    yield "</feed>\n"


# -- export-shaped files: what CRM and spreadsheet exports look like ---------------------------

#: The 8 columns of an export-shaped file (``--format export``).
EXPORT_HEADER = "Email Address,First Name,Last Name,Company,Job Title,City,Phone,Notes"

# Names and cities in several scripts (Latin with diacritics, Cyrillic, Greek, Han, Kana,
# Hangul, Arabic, Hebrew, Devanagari, Thai).
_FIRST_WORLD = (
    "Zoë Łukasz Søren José François Jürgen Ångström Иван Мария Алексей Ελένη Γιώργος 伟 秀英 "
    "さくら 健太 민준 서연 محمد فاطمة דוד נועה अर्जुन प्रिया สมชาย Nguyễn"
).split()
_LAST_WORLD = (
    "Müller Kowalczyk Þórsson Dvořák Иванов Смирнова Παπαδόπουλος 王 李 佐藤 김 العلي כהן "
    "शर्मा ศรีสุข Trần Çelik Lefèvre"
).split()
_CITIES_WORLD = (
    "Chicago, IL|Springfield, MA|Austin, TX|Montréal, QC|Toronto, ON|São Paulo|Zürich|"
    "Москва|Санкт-Петербург|Αθήνα|北京|東京|서울|القاهرة|תל אביב|मुंबई|กรุงเทพมหานคร|"
    "Kraków|Reykjavík|Hà Nội"
).split("|")
_CITIES_PLAIN = ("Chicago, IL", "Boston, MA", "Denver, CO", "Seattle, WA", "Portland", "Omaha")
_COMPANY_WORDS = "Blue Sky|Red Rock|Acme|Globex|Northwind|Contoso|Initech|Umbrella".split("|")
_NOTES = (
    "",
    "",
    "",
    "Met at the expo",
    "VIP",
    'Prefers "email" only',
    "Called twice, no answer",
    "Renewal due",
)


def export_contacts(rows: int, seed: int = 2024) -> Iterator[tuple[str, ...]]:
    """Yield the rows of an export-shaped file: 8 values each, as :data:`EXPORT_HEADER`.

    Most rows hold a value with a comma (``Blue Sky, Inc.``, ``Chicago, IL``); about half
    have a name or a city in another script; about 1% have a note of two or three lines
    (LF or CRLF inside); ``Prefers "email" only`` needs doubled quotes. Dirty rows (~1.5%):
    invalid emails, repeated emails in another case, a field too long, a missing column.
    A row whose last value is None has one column fewer.
    """
    rnd = random.Random(seed)
    recent: list[str] = []
    for n in range(rows):
        world = rnd.random() < 0.5
        first = rnd.choice(_FIRST_WORLD if world and rnd.random() < 0.6 else _FIRST)
        last = rnd.choice(_LAST_WORLD if world and rnd.random() < 0.4 else _LAST)
        city = rnd.choice(_CITIES_WORLD if world else _CITIES_PLAIN)
        email = f"{first.lower()}.{last.lower()}{n}@{rnd.choice(_DOMAINS)}"
        if not email.isascii():
            email = f"contact{n}.{rnd.randrange(1000)}@{rnd.choice(_DOMAINS)}"
        dirt = rnd.random()
        if dirt < 0.004:
            email = rnd.choice((f"{first}{n}@", f"no-at-sign{n}.example.com", f"x{n}@bad..com"))
        elif dirt < 0.012 and recent:
            email = rnd.choice(recent).upper()
        elif dirt < 0.05:
            recent.append(email)
            if len(recent) > 1000:
                del recent[: len(recent) // 2]
        company = f"{rnd.choice(_COMPANY_WORDS)}, {rnd.choice(_SUFFIX)}"
        if rnd.random() < 0.3:
            company = f"{rnd.choice(_COMPANIES)} {rnd.choice(_SUFFIX)}"
        title = rnd.choice(_TITLES)
        phone = f"+1 {rnd.randrange(200, 999)}-{rnd.randrange(200, 999)}-{rnd.randrange(10000):04d}"
        note = rnd.choice(_NOTES)
        shape = rnd.random()
        if shape < 0.01:
            sep = "\r\n" if shape < 0.005 else "\n"
            note = f"Line one{sep}Line two, with a comma" + (f"{sep}third" if n % 3 == 0 else "")
        elif 0.012 <= dirt < 0.014:
            title = "Director of " + "Very Important Things " * 3  # over 50 characters
        values: tuple[str, ...] = (email, first, last, company, title, city, phone, note)
        if 0.014 <= dirt < 0.015:
            values = values[:-1]  # a column missing
        yield values


def generate_export(rows: int, seed: int = 2024) -> Iterator[str]:
    """Yield an export-shaped CSV (:func:`export_contacts`): CRLF line ends, fields quoted
    only when they must be."""
    yield EXPORT_HEADER + "\r\n"
    for values in export_contacts(rows, seed):
        yield ",".join(map(_csv_value, values)) + "\r\n"


def write_file(path: str, rows: int, seed: int = 2024, *, form: str = "csv") -> int:
    """Write a generated file and return its size in bytes.

    Args:
        path: where to write (overwritten).
        rows: number of contacts.
        seed: seed of the generator.
        form: ``csv``, ``xml`` (an Atom feed) or ``export`` (:func:`generate_export`).

    Returns:
        The number of bytes written.
    """
    size = 0
    if form == "xml":
        lines = generate_xml(rows, seed)
    elif form == "export":
        lines = generate_export(rows, seed)
    else:
        lines = generate(rows, seed)
    with open(path, "wb") as out:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 10_000:
                data = "".join(batch).encode()
                size += len(data)
                out.write(data)
                batch.clear()
        data = "".join(batch).encode()
        size += len(data)
        out.write(data)
    return size


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--rows N --seed S --out PATH``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--format", choices=("csv", "xml", "export"), default="csv")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    size = write_file(args.out, args.rows, args.seed, form=args.format)
    print(f"{args.out}: {args.rows} rows, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
