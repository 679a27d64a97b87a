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

__all__ = ["HEADER", "XML_FIELDS", "contacts", "generate", "generate_xml", "main", "write_file"]

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


def write_file(path: str, rows: int, seed: int = 2024, *, form: str = "csv") -> int:
    """Write a generated file and return its size in bytes.

    Args:
        path: where to write (overwritten).
        rows: number of contacts.
        seed: seed of the generator.
        form: ``csv`` or ``xml`` (an Atom feed).

    Returns:
        The number of bytes written.
    """
    size = 0
    lines = generate_xml(rows, seed) if form == "xml" else generate(rows, seed)
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
    parser.add_argument("--format", choices=("csv", "xml"), default="csv")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    size = write_file(args.out, args.rows, args.seed, form=args.format)
    print(f"{args.out}: {args.rows} rows, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
