"""The import pipeline end to end: any file, any split, one outcome per record.

The oracle is a deliberately simple reading of the same file: :class:`CsvDecoder` records
(themselves checked against the stdlib ``csv``), :func:`map_header` and the exact row check
``row_problem_of``. The pipeline's fast paths must agree with it on every record.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkops.errors import ConfigError, InputError
from bulkops.stream import (
    Chunk,
    ChunkKind,
    CsvDecoder,
    Duplicate,
    Event,
    Header,
    Pipeline,
    PipelineOptions,
    Record,
    Rejected,
    csvrows,
    map_header,
)
from bulkops.stream.csvrows import _record_lines
from bulkops.stream.validate import row_problem_of
from tests.stream_strategies import (
    by_kind,
    contact_files,
    cuts,
    data_rows,
    export_files,
    form_fields,
    pieces,
)

LISTS = ("http://api.constantcontact.com/ws/customers/joe/lists/7",)


def run(data: bytes, options: PipelineOptions, points: Sequence[int] = ()) -> list[Event]:
    pipeline = Pipeline(options)
    events: list[Event] = []
    for piece in pieces(data, list(points)):
        events += pipeline.decode(piece)
    return events + pipeline.flush()


def reference(data: bytes, options: PipelineOptions) -> tuple[list[Record], dict[int, Record]]:
    """(valid records, rejected records by line) as the simple reading sees them."""
    decoder = CsvDecoder(
        encoding=options.read.encoding,
        delimiter=options.read.delimiter,
        max_record_bytes=options.read.max_record_bytes,
    )
    records = decoder.decode(data) + decoder.flush()
    start = 0
    while not any(f.strip() for f in records[start].fields) and not records[start].error:
        start += 1
    header = records[start]
    columns = map_header(
        header.fields,
        mapping=options.read.mapping,
        ignore_unknown=options.read.ignore_unknown,
        kind=options.kind,
        line=header.line,
    )
    valid: list[Record] = []
    rejected: dict[int, Record] = {}
    for record in records[start + 1 :]:
        if record.error and not record.fields:
            rejected[record.line] = record  # too long to read
        elif not any(f.strip() for f in record.fields):
            continue  # blank: no outcome
        elif (
            record.error
            or len(record.fields) != len(columns.columns)
            or row_problem_of(columns, record.fields) is not None
        ):
            rejected[record.line] = record
        else:
            valid.append(record)
    return valid, rejected


def check_against_reference(data: bytes, options: PipelineOptions, events: list[Event]) -> None:
    """Every record's outcome agrees with the reference; chunks obey every rule."""
    valid, rejected = reference(data, options)
    groups = by_kind(events)
    (header,) = groups["Header"]
    assert isinstance(header, Header)
    chunks = [e for e in groups.get("Chunk", []) if isinstance(e, Chunk)]
    rejections = [e for e in groups.get("Rejected", []) if isinstance(e, Rejected)]
    duplicates = [e for e in groups.get("Duplicate", []) if isinstance(e, Duplicate)]
    too_big = {r.line for r in rejections if "more than a request may carry" in r.reason}
    assert [r.line for r in rejections if r.line not in too_big] == sorted(rejected)
    valid = [r for r in valid if r.line not in too_big]  # valid, but no request can hold it
    sources = {
        **{r.line: r for r in valid},
        **rejected,
        **{r.line: r for r in reference(data, options)[0] if r.line in too_big},
    }
    for event in rejections:
        source = sources[event.line]
        assert (event.start_offset, event.end_offset) == (source.start_offset, source.end_offset)
    columns = map_header(
        header.sources,
        mapping=options.read.mapping,
        ignore_unknown=options.read.ignore_unknown,
        kind=options.kind,
    )
    by_line = {r.line: r for r in valid}
    email = {r.line: r.fields[columns.email_index].strip().lower() for r in valid}
    sent = [line for chunk in chunks for line in chunk.lines]
    assert sent == sorted(sent)
    assert sorted(sent + [d.line for d in duplicates]) == sorted(by_line)
    for duplicate in duplicates:
        assert email[duplicate.replaced_by] == email[duplicate.line] == duplicate.email
        source = by_line[duplicate.line]
        assert (duplicate.start_offset, duplicate.end_offset) == (
            source.start_offset,
            source.end_offset,
        )
    last = {email[line]: line for line in sorted(email)}
    assert set(last.values()) <= set(sent)
    for chunk in chunks:
        assert chunk.rows <= options.limits.max_rows
        assert chunk.data_bytes <= options.limits.max_bytes
        if len(sent) >= options.limits.min_rows:
            assert chunk.rows >= options.limits.min_rows
        fields = form_fields(chunk)
        rows = data_rows(fields["data"][0])
        assert tuple(rows[0]) == chunk.columns == header.sent
        kept = [columns.email_index] if options.kind is ChunkKind.REMOVE else columns.kept
        assert rows[1:] == [[by_line[x].fields[k].strip() for k in kept] for x in chunk.lines]
        assert chunk.start_offset <= by_line[chunk.lines[0]].start_offset
        assert chunk.end_offset == by_line[chunk.lines[-1]].end_offset


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    data=st.data(),
    file=contact_files(),
    kind=st.sampled_from([ChunkKind.ADD, ChunkKind.ADD, ChunkKind.REMOVE]),
    form=st.sampled_from(["multipart", "urlencoded"]),
    max_rows=st.sampled_from([50, 40_000]),
    max_bytes=st.sampled_from([2500, 4 * 1024 * 1024]),
)
def test_every_record_gets_the_outcome_the_exact_reading_gives(
    data: st.DataObject,
    file: tuple[bytes, list[str], dict[str, object]],
    kind: ChunkKind,
    form: str,
    max_rows: int,
    max_bytes: int,
) -> None:
    """Rejections, duplicates and chunk rows agree with the oracle, for any split."""
    raw, _columns, encoding = file
    options = PipelineOptions(
        lists=LISTS,
        kind=kind,
        form=form,  # type: ignore[arg-type]
        max_rows=max_rows,
        max_bytes=max_bytes,
        **encoding,  # type: ignore[arg-type]
    )
    events = run(raw, options)
    check_against_reference(raw, options, events)
    again = run(raw, options, data.draw(cuts(raw)))
    assert by_kind(again) == by_kind(events)


@given(st.data(), contact_files(max_rows=15))
def test_feeding_one_byte_at_a_time_changes_nothing(
    data: st.DataObject, file: tuple[bytes, list[str], dict[str, object]]
) -> None:
    """The strictest split: every byte alone."""
    raw, _columns, encoding = file
    options = PipelineOptions(lists=LISTS, **encoding)  # type: ignore[arg-type]
    assert by_kind(run(raw, options, range(1, len(raw)))) == by_kind(run(raw, options))


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    data=st.data(),
    raw=export_files(),
    kind=st.sampled_from([ChunkKind.ADD, ChunkKind.ADD, ChunkKind.REMOVE]),
    form=st.sampled_from(["multipart", "urlencoded"]),
    max_rows=st.sampled_from([50, 40_000]),
)
def test_export_shaped_files_get_the_outcome_the_exact_reading_gives(
    data: st.DataObject, raw: bytes, kind: ChunkKind, form: str, max_rows: int
) -> None:
    """Quoted commas on most lines, multi-line fields, CRLF, other scripts, stray quotes:
    every record's outcome agrees with the oracle, for any split."""
    options = PipelineOptions(
        lists=LISTS,
        kind=kind,
        form=form,  # type: ignore[arg-type]
        max_rows=max_rows,
    )
    events = run(raw, options)
    check_against_reference(raw, options, events)
    again = run(raw, options, data.draw(cuts(raw)))
    assert by_kind(again) == by_kind(events)


def run_reading(raw: bytes, options: PipelineOptions, dense: int) -> list[Event]:
    """Run with regions read record by record (``dense`` large), or never (0)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csvrows, "DENSE_QUOTES", dense)
        return run(raw, options)


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(export_files(), st.builds(lambda f: f[0], contact_files())),
    kind=st.sampled_from([ChunkKind.ADD, ChunkKind.REMOVE]),
)
def test_reading_regions_record_by_record_or_line_by_line_gives_the_same_events(
    raw: bytes, kind: ChunkKind
) -> None:
    """The dense path (one findall of whole records) and the line path agree on every
    event, chunk bodies and digests included."""
    options = PipelineOptions(lists=LISTS, kind=kind)
    assert by_kind(run_reading(raw, options, 1 << 30)) == by_kind(run_reading(raw, options, 0))


@given(export_files(max_rows=12))
def test_an_export_file_fed_one_byte_at_a_time_changes_nothing(raw: bytes) -> None:
    """The strictest split, on quoted and multi-line records."""
    options = PipelineOptions(lists=LISTS)
    assert by_kind(run(raw, options, range(1, len(raw)))) == by_kind(run(raw, options))


def test_an_export_row_travels_as_its_own_bytes() -> None:
    """A quoted comma, a multi-line note and other scripts take the dense path and travel
    as they are (the dense path is not vacuous)."""
    rows = [
        b'a%d@example.org,Zo\xc3\xab,"Blue Sky, Inc.","Chicago, IL","one\r\ntwo"' % i
        for i in range(40)
    ]
    raw = b"Email,First Name,Company,City,Notes\r\n" + b"\r\n".join(rows) + b"\r\n"
    calls: list[int] = []
    dense = csvrows.CsvRows._records_region
    with pytest.MonkeyPatch.context() as patch:

        def spy(self: csvrows.CsvRows, buf: bytes, a: int, *args: object) -> int:
            calls.append(a)
            return dense(self, buf, a, *args)  # type: ignore[arg-type]

        patch.setattr(csvrows.CsvRows, "_records_region", spy)
        events = run(raw, PipelineOptions(lists=LISTS))
    assert calls
    (chunk,) = [e for e in events if isinstance(e, Chunk)]
    data = form_fields(chunk)["data"][0]
    assert data.split(b"\n", 1)[1] == b"\r\n".join(rows) + b"\r\n"
    assert list(chunk.lines) == list(range(2, 82, 2))


def small_file(rows: int = 60, newline: bytes = b"\n") -> bytes:
    lines = [b"Email,First Name,Zip"] + [
        b"u%d@example.org,N%d,0%04d" % (i, i, i) for i in range(rows)
    ]
    return newline.join(lines) + newline


def test_a_clean_file_travels_as_its_own_bytes() -> None:
    """Comma-separated, every column known: data is the canonical header + the rows as-is."""
    raw = small_file(30, b"\r\n")
    (header, chunk) = run(raw, PipelineOptions(lists=LISTS))
    assert isinstance(header, Header)
    assert isinstance(chunk, Chunk)
    data = form_fields(chunk)["data"][0]
    assert data == b"EMAIL ADDRESS,FIRST NAME,ZIP/POSTAL CODE\n" + raw.split(b"\r\n", 1)[1].replace(
        b"\r\n", b"\r\n"
    )
    assert (chunk.first_line, chunk.last_line, chunk.rows) == (2, 31, 30)
    assert (chunk.start_offset, chunk.end_offset) == (len(b"Email,First Name,Zip\r\n"), len(raw))


def test_the_same_input_gives_the_same_chunks_and_digests() -> None:
    """Deterministic across runs (and processes: no hash randomisation is involved)."""
    raw = small_file(5000)
    options = PipelineOptions(lists=LISTS, max_rows=1000)
    first = [(c.seq, c.digest, c.waits_for) for c in run(raw, options) if isinstance(c, Chunk)]
    again = [(c.seq, c.digest, c.waits_for) for c in run(raw, options) if isinstance(c, Chunk)]
    assert first == again
    assert len(first) == 5


def test_a_semicolon_file_is_rewritten_with_commas() -> None:
    """Another delimiter: rows are rewritten comma-separated, quoting what needs it."""
    raw = b"Email;City\nana@x.org;Boston, MA\nbo@x.org;Oslo\n"
    events = run(raw, PipelineOptions(lists=LISTS, min_rows=1))
    (chunk,) = [e for e in events if isinstance(e, Chunk)]
    assert data_rows(form_fields(chunk)["data"][0]) == [
        ["EMAIL ADDRESS", "CITY"],
        ["ana@x.org", "Boston, MA"],
        ["bo@x.org", "Oslo"],
    ]


def test_an_excel_sep_line_sets_the_delimiter() -> None:
    """``sep=;`` on the first line: semicolons, and line numbers still count it."""
    raw = b"sep=;\r\nEmail;First Name\r\nana@x.org;Ana\r\n"
    events = run(raw, PipelineOptions(lists=LISTS, min_rows=1))
    header = events[0]
    assert isinstance(header, Header)
    assert header.delimiter == ";"
    (chunk,) = [e for e in events if isinstance(e, Chunk)]
    assert chunk.lines.tolist() == [3]


def test_blank_lines_are_no_records() -> None:
    """Empty lines and rows of empty cells get no outcome, only a count."""
    raw = b"\nEmail,First Name\n\n,\nana@x.org,Ana\n \n"
    pipeline = Pipeline(PipelineOptions(lists=LISTS, min_rows=1))
    events = pipeline.decode(raw) + pipeline.flush()
    assert [type(e).__name__ for e in events] == ["Header", "Chunk"]
    stats = pipeline.statistics()
    assert (stats.blank, stats.rows_sent, stats.records) == (3, 1, 4)


def test_statistics_count_every_record_once() -> None:
    """records = sent + rejected + duplicates + blank."""
    raw = b"Email\na@x.org\nbad\nA@X.ORG\n\nb@x.org\n"
    pipeline = Pipeline(PipelineOptions(lists=LISTS, min_rows=1))
    pipeline.decode(raw)
    pipeline.flush()
    s = pipeline.statistics()
    assert (s.records, s.rows_sent, s.rejected, s.duplicates, s.blank) == (5, 2, 1, 1, 1)
    assert s.bytes_in == len(raw)
    assert s.unique_emails == 2
    assert s.dedupe_bytes > 0


@pytest.mark.parametrize(
    ("raw", "line", "field", "words"),
    [
        (b"", 1, None, "empty"),
        (b"\n\n", 3, None, "empty"),
        (b"First Name,Zip\nx,1\n", 1, None, "no email address column"),
        (b"Email,Shoe size\n", 1, "Shoe size", "unknown column"),
        (b"Email,Nam\xe9\n", 1, None, "not valid utf-8"),
    ],
)
def test_a_file_that_cannot_be_imported_raises_with_its_line(
    raw: bytes, line: int | None, field: str | None, words: str
) -> None:
    """Whole-file problems are InputErrors naming the line (and field)."""
    with pytest.raises(InputError) as caught:
        run(raw, PipelineOptions(lists=LISTS))
    assert (caught.value.line, caught.value.field) == (line, field)
    assert words in caught.value.message


def test_the_email_table_is_freed_once_the_input_ends() -> None:
    """After flush the email table's slots are released (its counts stay in statistics)."""
    pipeline = Pipeline(PipelineOptions(lists=LISTS, min_rows=1))
    pipeline.decode(b"Email\na@x.org\nb@x.org\n")
    chunker = pipeline._source._chunker  # type: ignore[union-attr]
    assert chunker.table._slots
    pipeline.flush()
    assert not chunker.table._slots
    assert pipeline.statistics().unique_emails == 2


def test_flushing_twice_is_an_error() -> None:
    """The pipeline is spent after flush."""
    pipeline = Pipeline(PipelineOptions(lists=LISTS))
    pipeline.decode(b"Email\na@x.org\n")
    pipeline.flush()
    with pytest.raises(InputError):
        pipeline.flush()


def test_bad_options_fail_before_any_input() -> None:
    """A bad delimiter, encoding or format is a ConfigError at construction."""
    for bad in ({"delimiter": "ab"}, {"encoding": "utf-7"}, {"format": "json"}):
        with pytest.raises(ConfigError):
            Pipeline(PipelineOptions(lists=LISTS, **bad))  # type: ignore[arg-type]


def test_importing_the_stream_does_not_import_the_engine() -> None:
    """``bulkops/__init__.py`` imports the engine (trio, httpx) only when a name is used."""
    import subprocess
    import sys

    code = (
        "import sys, bulkops.stream\n"
        "assert not {'trio', 'httpx', 'bulkops.engine'} & set(sys.modules), sorted(sys.modules)\n"
        "from bulkops import run_import, ImportOptions\n"
        "import bulkops\n"
        "assert 'trio' in sys.modules and bulkops.run_import is run_import\n"
        "assert set(bulkops.__all__) <= set(dir(bulkops))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_csv_pipeline_does_not_import_lxml() -> None:
    """The XML reader (lxml, ~6 MiB) loads only when an XML file is read."""
    import subprocess
    import sys

    code = (
        "import sys, bulkops.stream\n"
        "from bulkops.stream import Pipeline, PipelineOptions\n"
        "p = Pipeline(PipelineOptions(lists=('http://x/ws/customers/u/lists/1',)))\n"
        "p.decode(b'Email\\na@example.org\\n'); p.flush()\n"
        "assert 'lxml' not in sys.modules, 'lxml imported'\n"
        "from bulkops.stream import XmlContactDecoder\n"
        "assert 'lxml.etree' in sys.modules and 'XmlContactDecoder' in bulkops.stream.__all__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_module_of_the_stream_imports_one_that_imports_it() -> None:
    """No import cycle among bulkops/stream modules (pipeline and xml used to import each
    other); imports made for type checking only count too."""
    import ast
    from pathlib import Path

    import bulkops.stream

    root = Path(bulkops.stream.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        if path.stem == "__init__":
            continue
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[path.stem] = {
            name.rsplit(".", 1)[1] for name in found if name.startswith("bulkops.stream.")
        }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert reaches("pipeline", "csvrows", set())  # the check can see an import chain
    assert [m for m in sorted(graph) if reaches(m, m, set())] == []


@given(
    st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"x")), max_size=30),
    st.lists(st.integers(min_value=0, max_value=300), max_size=8),
    st.integers(min_value=1, max_value=10**6),
)
def test_record_lines_count_every_line_break_inside_the_records(
    pieces: list[bytes], breaks: list[int], line0: int
) -> None:
    """The line each record starts on (and the line after) equals counting each record's
    LFs one by one, wherever the records hold them (several in one, at either end)."""
    joined = bytearray(b"\x00".join(pieces))
    for at in breaks:  # line breaks at random places of the records
        joined.insert(min(at, len(joined)), 0x0A)
    recs = bytes(joined).split(b"\x00") if pieces else []
    expected = list(accumulate((1 + r.count(b"\n") for r in recs), initial=line0))
    assert _record_lines(recs, line0) == expected


@pytest.mark.parametrize("quoted", [False, True], ids=["lines", "records"])
def test_emails_that_differ_in_the_case_of_non_ascii_letters_are_one_address(
    quoted: bool,
) -> None:
    """The key of an email is its whole lower-cased text, as the server's: ``ÉMILE@…`` and
    ``émile@…`` are one address (the later row replaces the earlier), on the fast path of
    plain lines and of quoted records alike."""
    city = b'"Lyon, France"' if quoted else b"Lyon"
    rows = [
        f"{e},{n}".encode() + b"," + city for e, n in (("ÉMILE@x.fr", "A"), ("émile@x.fr", "B"))
    ]
    filler = [b"u%d@example.org,N%d," % (i, i) + city for i in range(200)]
    raw = b"\n".join([b"Email,First Name,City", rows[0], *filler, rows[1]]) + b"\n"
    options = PipelineOptions(lists=LISTS)
    events = run(raw, options)
    check_against_reference(raw, options, events)
    duplicates = [e for e in events if isinstance(e, Duplicate)]
    assert [(d.line, d.replaced_by) for d in duplicates] == [(2, 203)]
    # In chunks of 50 rows the two are in different chunks: the later one waits for the first.
    chunks = [
        e for e in run(raw, PipelineOptions(lists=LISTS, max_rows=50)) if isinstance(e, Chunk)
    ]
    assert chunks[0].seq in chunks[-1].waits_for
