"""The import engine's entry points: start an import (or remove) run, resume any run, clear
lists, and the synchronous :func:`import_file`.

How a run works — producer, submitters, waiters, journal — is ``engine/import_run.py``;
``engine/clear.py`` is the clear command. The final server state equals applying the
file's rows in order, and every row ends with exactly one outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs
import trio

from bulkops.engine.clear import execute_clear, run_clear
from bulkops.engine.client import Client, same_account
from bulkops.engine.import_options import ImportOptions
from bulkops.engine.import_run import (
    ImportRun,
    execute,
    finish,
    quota_message,
    resolve_run_lists,
    start_run,
)
from bulkops.engine.journal import Journal
from bulkops.engine.ledger import ImportReport
from bulkops.engine.lists import ResolvedList
from bulkops.engine.planner import input_digest, replan
from bulkops.engine.progress import Reporter
from bulkops.engine.rundirs import (
    NOT_STARTED,
    RunLock,
    command_name,
    default_run_dir,
)
from bulkops.errors import ConfigError, InputError
from bulkops.stream.options import ChunkLimits

__all__ = [
    "ImportOptions",
    "import_file",
    "resume_run",
    "run_clear",
    "run_import",
]


async def run_import(
    client: Client,
    path: str | Path,
    *,
    options: ImportOptions,
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    stop: trio.Event | None = None,
) -> ImportReport:
    """Import (or remove, with ``options.kind == "remove"``) the contacts of a file.

    Args:
        client: an open client (:func:`bulkops.open_client`).
        path: a CSV or XML contact file.
        options: lists, limits and reading options.
        run_dir: where the journal, outcome files and ``report.json`` go (a new directory;
            default ``./bulkops-runs/...``).
        reporter: progress output (default: none).
        stop: set it to stop submitting, drain what is in flight and return (resumable).

    Returns:
        the report; ``report.exit_code`` is the CLI's exit code.

    Raises:
        ConfigError: bad options, unknown lists, or a run directory already in use.
        InputError: the file cannot be read or has no usable header.
        AuthError, TransportError, ...: the server could not be used.
    """
    source = Path(path)
    if not source.is_file():  # noqa: ASYNC240 - one stat before the run starts
        raise InputError("no such file", path=str(source))
    try:
        size, digest = input_digest(source)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(source)) from None
    directory = Path(run_dir) if run_dir is not None else default_run_dir(source, options.kind)
    meta = {
        "command": command_name(options.kind),
        "input": str(source.resolve()),  # noqa: ASYNC240 - before the run starts
        "input_size": size,
        "input_digest": digest,
    }
    return await start_run(
        client,
        directory,
        options=options,
        source=source,
        meta=meta,
        execute=execute,
        reporter=reporter,
        stop=stop,
    )


async def resume_run(
    client: Client,
    run_dir: str | Path,
    *,
    reporter: Reporter | None = None,
    stop: trio.Event | None = None,
    stall_timeout: float | None = None,
    limits: ChunkLimits | None = None,
) -> ImportReport:
    """Finish a run that was interrupted (crash, SIGKILL, Ctrl-C, stall, quota).

    Chunks already done are not sent again; activities in flight are polled again; a chunk
    whose POST outcome is unknown is reconciled against the activities feed first.
    Everything else repeats the original run's options, except ``stall_timeout`` when given
    (a run that stalled usually needs a longer one), and ``limits`` when given and no chunk
    was accepted yet (:func:`~bulkops.engine.planner.replan`: a server refused the first).

    Raises:
        ConfigError: not a run directory, another account, the input file changed, or new
            limits for a run that already sent chunks.
    """
    journal = Journal(run_dir, create=False)
    try:
        lock = RunLock(journal.run_dir).acquire()
    except BaseException:
        journal.close()
        raise
    try:
        meta = journal.meta()
        if meta.get("state") == NOT_STARTED:
            raise ConfigError(
                f"the run in {journal.run_dir} never started ({meta.get('error')}): there is "
                "nothing to resume; run the corrected command again (it may use the same "
                "--run-dir)"
            )
        if meta.get("account") and not same_account(meta["account"], client.account_url):
            raise ConfigError(
                f"this run was made against {meta['account']}, not {client.account_url}"
            )
        options = ImportOptions.from_meta(meta["options"])
        if stall_timeout is not None:
            options = attrs.evolve(options, stall_timeout=stall_timeout)
        source = Path(meta["input"]) if meta.get("input") else None
        if source is not None:
            if not source.is_file():
                raise InputError("the run's input file is gone", path=str(source))
            size, digest = input_digest(source)
            if (size, digest) != (meta["input_size"], meta["input_digest"]):
                raise ConfigError(f"{source} changed since the run began; start a new run")
        if limits is not None and limits != options.limits and meta.get("command") != "clear":
            replan(journal, options.limits, limits)
            options = attrs.evolve(options, limits=limits)
            journal.set_meta(options=options.to_meta())
        run = ImportRun(
            client=client,
            journal=journal,
            options=options,
            lists=[ResolvedList(**item) for item in meta.get("lists") or ()],
            source=source,
            reporter=reporter,
            stop=stop,
        )
        if meta.get("lists") is None:  # the request budget ran out while finding them
            quota = await resolve_run_lists(run)
            if quota is not None:
                return finish(run, state="interrupted", message=quota_message(run, quota))
        if meta.get("command") == "clear":
            return await execute_clear(run)
        return await execute(run)
    finally:
        journal.close()
        lock.release()


def import_file(
    path: str | Path,
    *,
    server: str,
    credentials: object,
    lists: Sequence[str],
    create_lists: bool = False,
    kind: Literal["add", "remove"] = "add",
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
) -> ImportReport:
    """Synchronous convenience: :func:`run_import` under ``trio.run`` with a fresh client.

    Args:
        path: the contact file.
        server: the server's root URL.
        credentials: a :class:`~bulkops.engine.client.Credentials`.
        lists: list names or ids.
        create_lists: create named lists that do not exist.
        kind: ``add`` or ``remove``.
        run_dir: the run directory (default ``./bulkops-runs/...``).
        reporter: progress output (default none).

    Returns:
        the report.
    """
    from bulkops.engine.client import ClientConfig, Credentials, open_client

    if not isinstance(credentials, Credentials):
        raise ConfigError("credentials must be a bulkops Credentials")
    options = ImportOptions(kind=kind, lists=tuple(lists), create_lists=create_lists)

    async def main() -> ImportReport:
        config = ClientConfig(server=server, credentials=credentials)
        async with open_client(config) as client:
            return await run_import(
                client, path, options=options, run_dir=run_dir, reporter=reporter
            )

    return trio.run(main)
