"""Seeded generator of realistic contact files for the stream benchmarks.

The same ``--rows`` and ``--seed`` always give byte-identical output, so figures measured on
different days compare. A file has 12 columns under the headers people actually export
(``Email``, ``First Name``, ``Zip``, ...), UTF-8 without BOM, LF line endings, and the awkward
parts of real exports in fixed proportions:

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

__all__ = ["HEADER", "generate", "main", "write_file"]

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
_FIRST_INTL = "Zoë Łukasz Søren Đặng José Müller François Ærin Björk Ümit Nuño Chloé Jürgen Ōta".split()
_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Diaz Chen Ito"
).split()
_LAST_INTL = "Ødegaard Kowalczyk Þórsson Nuñez Dvořák Gößling Lefèvre Štěpánek Çelik Ångström".split()
_COMPANIES = (
    "Acme Globex Initech Umbrella Hooli Vandelay Stark Wayne Wonka Cyberdyne Soylent Tyrell "
    "Aperture Massive Dynamic Gringotts Monsters Oscorp Pied Piper Prestige Sterling"
).split()
_SUFFIX = ("Inc.", "LLC", "Ltd", "GmbH", "& Sons", "Group", "Partners", "Co.")
_TITLES = (
    "Manager", "Director", "Engineer", "Analyst", "Owner", "Consultant", "Designer", "Teacher",
    "Nurse", "Sales Rep", "Accountant", "Developer", "Chef", "Florist", "",
)
_STREETS = "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Sunset Lincoln".split()
_CITIES = (
    "Boston Springfield Portland Austin Denver Seattle Chicago Toronto Montréal Vancouver "
    "Calgary Phoenix Dallas Atlanta Miami Omaha Madison Salem Dover Albany"
).split()
_STATES = "MA IL OR TX CO WA IL ON QC BC AB AZ TX GA FL NE WI OR DE NY".split()
_DOMAINS = (
    "example.com", "example.org", "mail.example.net", "corp.example.co.uk", "example.io",
    "students.example.edu", "example.de", "example.fr",
)


def generate(rows: int, seed: int = 2024) -> Iterator[str]:
    """Yield the header line and ``rows`` data lines, each ending in ``\\n``.

    Args:
        rows: number of data rows.
        seed: seed of the private random generator.

    Returns:
        An iterator of text lines (a quoted field may hold a newline inside one "line").
    """
    rnd = random.Random(seed)
    yield HEADER + "\n"
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
            company = f'"{rnd.choice(_COMPANIES)}, {rnd.choice(_SUFFIX)}"'
        address = f"{rnd.randrange(1, 9999)} {rnd.choice(_STREETS)} St"
        if 0.04 <= q < 0.05:
            address = f'"{address}\nSuite {rnd.randrange(1, 999)}"'
        title = rnd.choice(_TITLES)
        if 0.05 <= q < 0.055:
            title = f'"Chief ""Fun"" Officer"'
        city_i = rnd.randrange(len(_CITIES))
        phone = f"+1 {rnd.randrange(200, 999)}-{rnd.randrange(200, 999)}-{rnd.randrange(10000):04d}"
        zip_code = f"{rnd.randrange(100000):05d}"
        country = "Canada" if _STATES[city_i] in ("ON", "QC", "BC", "AB") else "United States"
        custom = rnd.choice(("gold", "silver", "bronze", "", "vip", "newsletter"))
        yield (
            f"{email},{first},{last},{company},{title},{phone},{address},{_CITIES[city_i]},"
            f"{_STATES[city_i]},{zip_code},{country},{custom}\n"
        )


def write_file(path: str, rows: int, seed: int = 2024) -> int:
    """Write a generated file and return its size in bytes.

    Args:
        path: where to write (overwritten).
        rows: number of data rows.
        seed: seed of the generator.

    Returns:
        The number of bytes written.
    """
    size = 0
    with open(path, "wb") as out:
        batch: list[str] = []
        for line in generate(rows, seed):
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
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    size = write_file(args.out, args.rows, args.seed)
    print(f"{args.out}: {args.rows} rows, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
