"""The chunker: limits on the bytes sent, no small or empty chunk, every row once, order."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkops.errors import ConfigError
from bulkops.stream.chunking import Chunker, ChunkOptions, RowBatch
from bulkops.stream.records import Chunk, ChunkKind, Duplicate, Event, Rejected
from bulkops.wire.forms import BOUNDARY
from tests.stream_strategies import data_rows, form_fields

LISTS = ("http://api.constantcontact.com/ws/customers/joe/lists/1",)
HEADER = b"EMAIL ADDRESS,NOTE"


def run(
    rows: Sequence[tuple[str, str]],
    options: ChunkOptions,
    batch_sizes: Sequence[int] = (),
) -> list[Event]:
    """Rows ``(email, note)`` on lines 2, 3, ... through a chunker, in batches."""
    offsets = {line: (10 * line, 10 * line + 10) for line in range(2, len(rows) + 2)}
    remove = options.kind is ChunkKind.REMOVE
    chunker = Chunker(
        options,
        header=b"EMAIL ADDRESS" if remove else HEADER,
        columns=("EMAIL ADDRESS",) if remove else ("EMAIL ADDRESS", "NOTE"),
        locate=offsets.__getitem__,
    )
    events: list[Event] = []
    sizes = list(batch_sizes) or [len(rows)]
    start = 0
    while start < len(rows):
        size = sizes[0] if sizes else len(rows)
        sizes = sizes[1:] or sizes
        batch = RowBatch()
        for line, (email, note) in enumerate(rows[start : start + max(size, 1)], start + 2):
            out = email if remove else f"{email},{note}"
            batch.append(out.encode(), email.lower().encode(), line)
        chunker.add(batch, events)
        start += max(size, 1)
    chunker.finish(events)
    return events


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from([f"u{i}@x.org" for i in range(30)] + ["U1@X.ORG", "U2@x.org"]),
        st.text(alphabet="ab %&+=é", max_size=40),
    ),
    max_size=250,
)
options_strategy = st.builds(
    ChunkOptions,
    lists=st.just(LISTS),
    kind=st.sampled_from([ChunkKind.ADD, ChunkKind.REMOVE]),
    form=st.sampled_from(["multipart", "urlencoded"]),
    max_rows=st.integers(50, 120),
    max_bytes=st.integers(3_000, 12_000),
    min_rows=st.just(25),
)


def chunks_of(events: Sequence[Event]) -> list[Chunk]:
    return [e for e in events if isinstance(e, Chunk)]


@settings(max_examples=150)
@given(rows=rows_strategy, options=options_strategy, sizes=st.lists(st.integers(1, 60)))
def test_chunks_keep_every_rule_whatever_the_batches(
    rows: list[tuple[str, str]], options: ChunkOptions, sizes: list[int]
) -> None:
    """Limits, sizes, order, exactly-once and parse-back; batching does not change them."""
    events = run(rows, options)
    assert run(rows, options, sizes) == events
    chunks = chunks_of(events)
    duplicates = {e.line: e for e in events if isinstance(e, Duplicate)}
    assert not [e for e in events if isinstance(e, Rejected)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    lines = [line for c in chunks for line in c.lines]
    assert lines == sorted(lines)
    assert sorted(lines + list(duplicates)) == list(range(2, len(rows) + 2))
    email_of = {line: email.lower() for line, (email, _) in enumerate(rows, 2)}
    last_chunk: dict[str, int] = {}
    for chunk in chunks:
        assert 0 < chunk.rows == len(chunk.lines) <= options.limits.max_rows
        assert chunk.data_bytes <= options.limits.max_bytes
        if len(lines) >= options.limits.min_rows:
            assert chunk.rows >= options.limits.min_rows
        fields = form_fields(chunk)
        data = fields["data"][0]
        assert chunk.data_bytes == len(data) or options.limits.form == "urlencoded"
        assert [u.decode() for u in fields["lists"]] == list(LISTS)
        table = data_rows(data)
        assert tuple(table[0]) == chunk.columns
        emails = [email_of[line] for line in chunk.lines]
        assert len(set(emails)) == len(emails)  # only the last occurrence within a chunk
        if options.kind is ChunkKind.ADD:
            assert table[1:] == [
                [rows[line - 2][0], rows[line - 2][1].strip()] for line in chunk.lines
            ]
            needed = {last_chunk[e] for e in emails if e in last_chunk}
            assert needed <= set(chunk.waits_for)  # complete: every earlier chunk sharing one
            extra = set(chunk.waits_for) - needed
            assert all(clash(chunks[w], emails, email_of) for w in extra)
            assert chunk.after == (max(chunk.waits_for) if chunk.waits_for else None)
        else:
            assert table[1:] == [[rows[line - 2][0]] for line in chunk.lines]
            assert chunk.waits_for == ()
        for e in emails:
            last_chunk[e] = chunk.seq
    for line, duplicate in duplicates.items():
        assert email_of[duplicate.replaced_by] == email_of[line] < "~"
        assert duplicate.replaced_by > line
        assert (duplicate.start_offset, duplicate.end_offset) == (10 * line, 10 * line + 10)
    last = {email_of[line]: line for line in sorted(email_of)}
    assert set(last.values()) <= set(lines)  # the last occurrence is always sent


def clash(chunk: Chunk, emails: list[str], email_of: dict[int, str]) -> bool:
    """An extra dependency is allowed only for a fingerprint clash (same CRC, same high
    half of the Adler-32)."""

    def fingerprint(e: str) -> tuple[int, int]:
        raw = e.encode()
        return zlib.crc32(raw), zlib.adler32(raw) >> 16

    theirs = {fingerprint(email_of[line]) for line in chunk.lines}
    return any(fingerprint(e) in theirs for e in emails)


def test_the_last_occurrence_wins_inside_a_chunk() -> None:
    """Within one chunk the earlier row is dropped and names the line that replaced it."""
    rows = [("a@x.org", "1"), ("b@x.org", "2"), ("A@X.ORG", "3")] + [
        (f"n{i}@x.org", "") for i in range(30)
    ]
    events = run(rows, ChunkOptions(lists=LISTS))
    (duplicate,) = [e for e in events if isinstance(e, Duplicate)]
    assert (duplicate.line, duplicate.replaced_by, duplicate.email) == (2, 4, "a@x.org")
    (chunk,) = chunks_of(events)
    assert chunk.lines[:2].tolist() == [3, 4]


def test_an_earlier_chunk_with_the_same_email_is_waited_for() -> None:
    """Across chunks the earlier row stays where it is; the later chunk waits for it."""
    rows = [(f"n{i}@x.org", "") for i in range(100)] + [("n3@x.org", "again")]
    events = run(rows, ChunkOptions(lists=LISTS, max_rows=50, min_rows=25))
    chunks = chunks_of(events)
    assert [c.rows for c in chunks] == [50, 26, 25]
    assert [c.waits_for for c in chunks] == [(), (), (0,)]
    assert chunks[-1].after == 0
    assert 5 in chunks[0].lines  # n3 stays in the first chunk
    assert not [e for e in events if isinstance(e, Duplicate)]


def test_a_short_last_chunk_takes_rows_from_the_one_before() -> None:
    """60 rows, at most 50 per chunk: 50 + 10 would break the minimum; 35 + 25 it is."""
    rows = [(f"n{i}@x.org", "") for i in range(60)]
    chunks = chunks_of(run(rows, ChunkOptions(lists=LISTS, max_rows=50, min_rows=25)))
    assert [c.rows for c in chunks] == [35, 25]
    assert [c.first_line for c in chunks] == [2, 37]


def test_a_short_last_chunk_is_merged_when_duplicates_made_room() -> None:
    """A chunk cut full, then emptied by later duplicates, takes the short last one in."""
    rows = [(f"n{i}@x.org", "") for i in range(50)] + [(f"n{i}@x.org", "") for i in range(5)]
    events = run(rows, ChunkOptions(lists=LISTS, max_rows=50, min_rows=25))
    chunks = chunks_of(events)
    assert [c.rows for c in chunks] == [50]
    assert len([e for e in events if isinstance(e, Duplicate)]) == 5


def test_fewer_rows_than_the_minimum_make_one_small_chunk() -> None:
    """With fewer than 25 rows in all, one chunk holds them (never an empty one)."""
    chunks = chunks_of(run([("a@x.org", ""), ("b@x.org", "")], ChunkOptions(lists=LISTS)))
    assert [c.rows for c in chunks] == [2]
    assert chunks_of(run([], ChunkOptions(lists=LISTS))) == []


def test_a_row_that_cannot_fit_any_request_is_rejected() -> None:
    """A row bigger than the byte limit with its header alone is rejected, not sent."""
    rows = [("a@x.org", "x" * 500), ("b@x.org", "")]
    events = run(rows, ChunkOptions(lists=LISTS, max_bytes=300, min_rows=1))
    (rejected,) = [e for e in events if isinstance(e, Rejected)]
    assert rejected.line == 2
    assert "more than a request may carry" in rejected.reason
    assert [c.lines.tolist() for c in chunks_of(events)] == [[3]]


def test_the_same_rows_give_the_same_digests() -> None:
    """Deterministic: bodies and digests repeat exactly."""
    rows = [(f"n{i}@x.org", "note") for i in range(100)]
    first = [(c.digest, c.body) for c in chunks_of(run(rows, ChunkOptions(lists=LISTS)))]
    again = [(c.digest, c.body) for c in chunks_of(run(rows, ChunkOptions(lists=LISTS)))]
    assert first == again


@pytest.mark.parametrize(
    "options",
    [
        {"lists": ()},
        {"lists": LISTS, "max_rows": 0},
        {"lists": LISTS, "min_rows": 25, "max_rows": 40},
        {"lists": LISTS, "form": "json"},
    ],
)
def test_impossible_options_are_config_errors(options: dict[str, object]) -> None:
    """No list, no room, a minimum above the maximum, an unknown form."""
    with pytest.raises(ConfigError):
        ChunkOptions(**options)  # type: ignore[arg-type]


def _without_bodies(options: ChunkOptions) -> ChunkOptions:
    return ChunkOptions(lists=options.lists, kind=options.kind, limits=options.limits, bodies=False)


def _sized(chunk: Chunk) -> Chunk:
    """The chunk as a sizes-only chunker gives it (no body, no digest)."""
    return msgspec.structs.replace(chunk, body=b"", digest="")


@settings(max_examples=100)
@given(rows=rows_strategy, options=options_strategy, sizes=st.lists(st.integers(1, 60)))
def test_sizes_only_gives_the_same_chunks_and_body_lengths(
    rows: list[tuple[str, str]], options: ChunkOptions, sizes: list[int]
) -> None:
    """``bodies=False`` (a dry run): the same events, each chunk without its body and digest
    but with the length its body has (urlencoded chunks keep their bodies)."""
    built = run(rows, options)
    sized = run(rows, _without_bodies(options), sizes)
    assert [e.body_bytes for e in chunks_of(built)] == [len(e.body) for e in chunks_of(built)]
    if options.limits.form == "urlencoded":
        assert sized == built
    else:
        assert sized == [_sized(e) if isinstance(e, Chunk) else e for e in built]


def test_sizes_only_builds_the_body_once_a_row_holds_the_boundary() -> None:
    """A row holding the multipart boundary needs another one: that body is built."""
    rows = [(f"n{i}@x.org", "note") for i in range(60)]
    rows[55] = ("n55@x.org", "a " + BOUNDARY.decode() + " b")
    options = ChunkOptions(lists=LISTS, max_rows=40, min_rows=10)
    built = chunks_of(run(rows, options))
    sized = chunks_of(run(rows, _without_bodies(options), [50, 10]))  # chunk 0 out first
    assert [c.body for c in sized] == [b"", built[1].body]
    assert [c.body_bytes for c in sized] == [len(c.body) for c in built]
    assert [c.content_type for c in sized] == [c.content_type for c in built]
    assert built[1].content_type.endswith(BOUNDARY.decode() + "-1")  # another boundary
