"""Row validation: the exact check, and the byte-level fast checks that imply it.

The exact check (:func:`row_problem_of`) decodes and strips every value and applies
:mod:`bulkops.wire.columns` (``email_problem``, ``field_problem``): the same rules the server
applies, so a row the client sends is a row the server takes. It also refuses control
characters (XML cannot carry them) and undecodable bytes.

The fast checks are compiled regular expressions over raw UTF-8 bytes, built per input
(:func:`plain_row_pattern`, :func:`quoted_row_pattern`). They are *sufficient*, never
necessary: a row they accept passes the exact check (a field of at most ``n`` bytes has at
most ``n`` characters; the email pattern is a strict subset of
:func:`~bulkops.wire.columns.is_valid_email` once the two post-checks of
:func:`fast_email_ok` hold); a row they refuse goes to the exact check, which decides.
tests/test_stream_validate.py checks the implication with hypothesis.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from bulkops.stream.header import ColumnMap
from bulkops.wire.columns import (
    CONTROL_BYTES,
    EMAIL_MAX_LENGTH,
    STATE_CODES,
    Column,
    control_problem,
    email_problem,
    field_problem,
)

__all__ = [
    "encode_row",
    "fast_email_ok",
    "plain_row_pattern",
    "quoted_row_pattern",
    "record_pattern",
    "row_problem_of",
]

#: Every byte except the control bytes: ``data.translate(None, NOT_CONTROL)`` keeps only
#: the control bytes of ``data`` (empty when there is none) at C speed.
NOT_CONTROL = bytes(b for b in range(256) if b not in CONTROL_BYTES)

# -- the fast email pattern -------------------------------------------------------------------
# Local part: dot-separated atoms of the RFC 5322 "atext" characters (the delimiter removed
# per input); domain: labels of letters, digits and hyphens that start with a letter or digit,
# at most 62 characters, then an alphabetic TLD. What the pattern does not say (no label or
# atom ends with "-" before a dot, at most 80 characters) is checked on the batch by
# fast_email_ok; together they imply bulkops.wire.columns.is_valid_email.
_ATEXT_SPECIALS = "!#$%&'*+/=?^_`{|}~-"
_DOMAIN = rb"(?:[A-Za-z0-9][A-Za-z0-9\-]{0,61}+\.)++[A-Za-z]{2,63}+"


def _email_pattern(delimiter: bytes) -> bytes:
    specials = "".join(c for c in _ATEXT_SPECIALS if c.encode() != delimiter)
    atom = b"[A-Za-z0-9" + re.escape(specials).encode("ascii") + b"]++"
    return atom + rb"(?:\." + atom + rb")*+@" + _DOMAIN


def fast_email_ok(emails: Sequence[bytes]) -> bool:
    """The two batch post-checks of the fast email pattern: no address longer than 80
    bytes, none holding ``-.``. When False, check the addresses one by one."""
    if not emails:
        return True
    return max(map(len, emails)) <= EMAIL_MAX_LENGTH and b"-." not in b"\n".join(emails)


def _state_pattern() -> bytes:
    by_first: dict[str, list[str]] = defaultdict(list)
    for code in sorted(STATE_CODES):
        by_first[code[0]].append(code[1])
    upper = "|".join(f"{first}[{''.join(rest)}]" for first, rest in sorted(by_first.items()))
    return f"(?:{upper}|{upper.lower()})?".encode("ascii")


_STATE = _state_pattern()
_EMAIL_TYPE = rb"(?:HTML|html|Html|TEXT|Text|text)?"


def _field(
    column: Column | None, delimiter: bytes, *, last: bool, quoted: bool, single: bool = False
) -> bytes:
    """The fast pattern of one field (no capture group except the email's).

    ``quoted`` allows RFC 4180 quoted fields; ``single`` keeps them on one line.
    """
    d = re.escape(delimiter)
    stop = d + (rb"\n" if last else b"")
    inside = rb'[^"\n]' if single else rb'[^"]'
    if column is None:
        if not quoted:
            return b"[^" + stop + b"]*+"
        return rb'(?:"(?:' + inside + rb'++|"")*+"|[^' + d + rb'"\r\n]*+)'
    if column.field == "EmailAddress":
        email = _email_pattern(delimiter)
        if not quoted:
            return b"(" + email + b")"
        return rb'("?+)(' + email + rb")\1"
    if column.field == "StateCode":
        inner = _STATE
    elif column.field == "EmailType":
        inner = _EMAIL_TYPE
    else:
        limit = column.limit
        if not quoted:
            return b"[^" + stop + b"]{0,%d}+" % limit
        # A quoted field without doubled quotes first: one class repeated is several times
        # faster in the regex engine than the alternation the general form needs.
        return (
            rb'(?:"' + inside + rb"{0,%d}+" % limit + rb'"(?!")'
            rb'|"(?:' + inside + rb'|""){0,%d}+"|[^' % limit + d + rb'"\r\n]{0,%d}+)' % limit
        )
    if not quoted:
        return inner
    return rb'(?:"' + inner + rb'"|' + inner + b")"


def _joined(parts: Sequence[bytes], separator: bytes) -> bytes:
    """``separator.join(parts)``, with each run of equal parts written once with a count.

    A header of 100,000 columns, most of them dropped, would otherwise compile into a
    pattern of 100,000 copies of the same field (minutes and hundreds of MiB): the pattern
    stays in proportion to the columns used.
    """
    out: list[bytes] = []
    i = 0
    while i < len(parts):
        j = i + 1
        while j < len(parts) and parts[j] == parts[i]:
            j += 1
        run = j - i
        if run > 2:
            out.append(parts[i] + b"(?:" + separator + parts[i] + b"){%d}" % (run - 1))
        else:
            out.extend(parts[i:j])
        i = j
    return separator.join(out)


def plain_row_pattern(columns: ColumnMap, delimiter: bytes) -> re.Pattern[bytes]:
    """The fast pattern for runs of lines without any quote character.

    ``pattern.findall(run)`` returns one item per line of ``run`` (which must end with a line
    break): the line's email bytes when the line certainly passes the exact check, else
    ``b""``. When it returns fewer items than lines, a line lacked delimiters and a match ran
    into the next one: check that run line by line with ``fullmatch``.
    """
    n = len(columns.columns)
    parts = [
        _field(column, delimiter, last=(i == n - 1), quoted=False)
        for i, column in enumerate(columns.columns)
    ]
    body = _joined(parts, re.escape(delimiter))
    return re.compile(body + rb"\r?\n|[^\n]*\n")


def quoted_row_pattern(
    columns: ColumnMap, delimiter: bytes, *, single_line: bool = False
) -> re.Pattern[bytes]:
    """The fast pattern for records that hold quotes.

    It matches strict RFC 4180 records only (a quote opens a field or is doubled inside
    one), through the record's line break; group 1 is the email's quote (or empty), group 2
    the email. No match: parse and check the record exactly.

    With ``single_line``, quoted fields may not hold a line break and a record that does
    not match is skipped to the next line: ``findall`` over lines that each hold a quote
    returns ``(quote, email)`` per line, ``(b"", b"")`` for a line to check exactly.
    """
    n = len(columns.columns)
    parts = [
        _field(column, delimiter, last=(i == n - 1), quoted=True, single=single_line)
        for i, column in enumerate(columns.columns)
    ]
    body = _joined(parts, re.escape(delimiter))
    if single_line:
        return re.compile(body + rb"\r?\n|[^\n]*\n")
    return re.compile(body + rb"(?:\r\n|\n|\r)")


def record_pattern(columns: ColumnMap, delimiter: bytes) -> re.Pattern[bytes]:
    """The fast pattern for whole regions of records, quoted or not, one line or several.

    ``pattern.findall(buf, start, end)`` from a record start returns one
    ``(record, quote, email)`` per match, in order; ``record`` is the match without its
    final LF (a CR before it stays). A strict RFC 4180 record that certainly passes the
    exact check (the fields of :func:`quoted_row_pattern`, line breaks inside quoted fields
    allowed) comes with its email; anything else with ``email == b""``: then ``record`` is
    how far a strict record would reach (quotes paired, so a refused multi-line record is
    still skipped as a whole), or one line when its quotes do not pair before ``end``. Only
    the exact reading knows where a refused record really ends (stray quotes): a caller
    checks that and reads on from there when it differs. ``end`` must follow a LF.
    """
    n = len(columns.columns)
    parts = [
        _field(column, delimiter, last=(i == n - 1), quoted=True)
        for i, column in enumerate(columns.columns)
    ]
    body = _joined(parts, re.escape(delimiter))
    # The email's optional quote: named, since the whole record is group 1.
    body = body.replace(b'("?+)(', b'(?P<q>"?+)(', 1).replace(rb")\1", b")(?P=q)", 1)
    skeleton = rb'(?:[^"\n]++|"[^"]*+")*+'
    return re.compile(b"(" + body + rb"\r?|" + skeleton + rb"|[^\n]*+)\n")


def row_problem_of(columns: ColumnMap, values: Sequence[str]) -> tuple[str, str] | None:
    """The exact check of one row: ``(source header, reason)`` of its first problem, or None.

    Args:
        columns: the column map.
        values: the decoded values of every source column (same length as the header),
            not stripped.

    The email is checked first, then the other sent columns in source order; dropped
    columns are not checked.
    """
    email_at = columns.email_index
    email = values[email_at].strip()
    problem = control_problem(email) or email_problem(email)
    if problem is not None:
        return columns.sources[email_at], problem
    for i, column in enumerate(columns.columns):
        if column is None or i == email_at:
            continue
        value = values[i].strip()
        problem = control_problem(value) or field_problem(column.field, value)
        if problem is not None:
            return columns.sources[i], problem
    return None


_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def encode_row(values: Sequence[str]) -> bytes:
    """One ``data`` row from values, without the line break: comma-separated, each value
    quoted only when it holds a comma, a quote, CR or LF (quotes doubled)."""
    out = []
    for value in values:
        if _NEEDS_QUOTES.search(value):
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return ",".join(out).encode("utf-8")
