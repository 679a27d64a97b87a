"""``bulkops import --dry-run``: read, validate, chunk and encode a whole file, send nothing.

The plan comes from the same :class:`~bulkops.engine.planner.Planner` a real run uses, and
the local outcomes (rejected rows, duplicates — across chunks too) are written to the same
files, so a dry run counts what the real run will.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from bulkops.engine.journal import Journal, OutcomeRecord
from bulkops.engine.outcome_files import Span, write_outcome_files
from bulkops.engine.planner import PlannedOutcome, Planner
from bulkops.engine.progress import keep_freed_memory
from bulkops.engine.repeats import ChunkEmailLog
from bulkops.engine.rundirs import command_name, default_run_dir
from bulkops.errors import InputError
from bulkops.stream.options import ChunkLimits, ReadOptions

__all__ = ["DryRunPlan", "dry_run"]

_BLOCK = 1 << 20


class DryRunPlan(msgspec.Struct, kw_only=True):
    """What an import would do: chunks, rows, bytes, requests; and where the outcomes are."""

    input: str
    kind: str
    encoding: str
    rows_read: int
    rows_to_send: int
    rejected: int
    duplicate: int
    chunks: int
    body_bytes: int
    largest_body: int
    requests_estimate: int
    run_dir: str
    files: dict[str, str]
    chunk_plan: list[dict[str, int]]

    @property
    def exit_code(self) -> int:
        """0 when every row would be sent, 2 otherwise."""
        return 0 if self.rejected == 0 and self.duplicate == 0 else 2

    def render(self, *, json_output: bool) -> str:
        """The plan as JSON, or as a few lines for people."""
        if json_output:
            return msgspec.json.encode({"event": "plan", "plan": self}).decode()
        lines = [
            f"dry run of {command_name(self.kind)} from {self.input} (read as {self.encoding}): "
            f"{self.rows_read:,} rows read, "
            f"{self.rows_to_send:,} to send, {self.rejected:,} rejected, "
            f"{self.duplicate:,} duplicate",
            f"{self.chunks} activities ({self.body_bytes:,} bytes of requests, largest "
            f"{self.largest_body:,}); about {self.requests_estimate} requests in all",
        ]
        for item in self.chunk_plan[:20]:
            lines.append(
                f"  chunk {item['seq']}: lines {item['first_line']}-{item['last_line']}, "
                f"{item['rows']} rows, {item['bytes']:,} bytes"
            )
        if len(self.chunk_plan) > 20:
            lines.append(f"  … {len(self.chunk_plan) - 20} more chunks")
        for name, path in sorted(self.files.items()):
            lines.append(f"  {name}: {path}")
        return "\n".join(lines)


def dry_run(
    path: Path,
    read: ReadOptions,
    limits: ChunkLimits,
    *,
    kind: str,
    lists: Sequence[str],
    run_dir: Path | None,
) -> DryRunPlan:
    """Read, validate, chunk and encode everything; send nothing; write the local outcomes.

    Raises:
        InputError: the input cannot be read or imported.
    """
    source = Path(path)
    if not source.is_file():
        raise InputError("no such file", path=str(source))
    keep_freed_memory()
    directory = Path(run_dir) if run_dir is not None else default_run_dir(source, "dry-run")
    journal = Journal(directory, create=True)
    log: ChunkEmailLog | None = None
    try:
        uris = [
            f"http://api.constantcontact.com/ws/customers/dry-run/lists/{name}" for name in lists
        ]
        journal.set_meta(
            command=command_name(kind),
            input=str(source.resolve()),
            lists=[{"uri": u} for u in uris],
            state="dry-run",
        )
        # Each chunk's (email, line) pairs go to a side table as the file is read, once:
        # the rows replaced across chunks are found there, as the real run finds them.
        log = ChunkEmailLog(directory)
        # Nothing is sent: the chunks' sizes are counted, their bodies not built.
        planner = Planner(
            read, limits, lists=uris, kind=kind, path=str(source), emails=log, bodies=False
        )
        plan, spans = _plan_chunks(planner, source, journal)
        log.finish_reading()
        if planner.repeats_across_chunks:  # the same duplicates as the real run finds
            log.mark_repeats(journal)
        log.close()
        files = write_outcome_files(
            journal, source, read, limits, write_applied=False, header=planner.header, spans=spans
        )
        counts = journal.outcome_counts()
        # lists lookup + one POST per chunk + about one poll per four activities + final poll
        requests = 1 + len(plan) + max(1, len(plan) // 4) + 1
        sizes = [item["bytes"] for item in plan]
        return DryRunPlan(
            input=str(source),
            kind=command_name(kind),  # the command as typed: import, not the engine's add
            encoding=planner.header.encoding if planner.header is not None else "utf-8",
            rows_read=planner.rows_read,
            rows_to_send=sum(item["rows"] for item in plan),
            rejected=counts["rejected"],
            duplicate=counts["duplicate"],
            chunks=len(plan),
            body_bytes=sum(sizes),
            largest_body=max(sizes, default=0),
            requests_estimate=requests,
            run_dir=str(directory),
            files=files,
            chunk_plan=plan,
        )
    finally:
        if log is not None:
            log.close()
        journal.close()


def _plan_chunks(
    planner: Planner, source: Path, journal: Journal
) -> tuple[list[dict[str, int]], list[Span]]:
    """Read the whole input through ``planner``: each chunk's place and size, and its span
    of the source; the local outcomes go to the journal (10,000 at a time: memory stays
    bounded)."""
    plan: list[dict[str, int]] = []
    spans: list[Span] = []
    outcomes: list[OutcomeRecord] = []
    with source.open("rb") as handle:
        while True:
            block = handle.read(_BLOCK)
            for event in planner.decode(block) if block else planner.flush():
                if isinstance(event, PlannedOutcome):
                    outcomes.append(event.record)
                    continue
                record = event.record
                plan.append(
                    {
                        "seq": record.seq,
                        "first_line": record.first_line,
                        "last_line": record.last_line,
                        "rows": record.rows,
                        "bytes": record.body_bytes,
                    }
                )
                spans.append(
                    Span(
                        record.first_line, record.last_line, record.start_offset, record.end_offset
                    )
                )
            if len(outcomes) > 10_000 or not block:
                journal.add_outcomes(outcomes)
                outcomes = []
            if not block:
                return plan, spans
