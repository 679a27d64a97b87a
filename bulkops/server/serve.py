"""``bulkops serve``: the API on hypercorn's trio worker, and :func:`serve_api` for programs.

Secrets (account passwords, API keys, bearer tokens) can be given three ways, so that none
need appear in ``ps``: the ``--account``/``--token`` flags (visible to ``ps``; for quick local
use), the environment variables ``BULKOPS_SERVE_ACCOUNTS`` / ``BULKOPS_SERVE_TOKENS``
(whitespace-separated specs), or files named by ``--accounts-file`` / ``--tokens-file``
(one spec per line, ``#`` comments allowed).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import pickle
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import trio
from hypercorn.config import Config as HypercornConfig

from bulkops.errors import BulkOpsError, ConfigError, collapse_group
from bulkops.server import processes, worker
from bulkops.server.app import ApiState, ServerConfig, create_app
from bulkops.server.auth import (
    AccountSpec,
    Authenticator,
    LoginLimits,
    Secret,
    TokenSpec,
    count_accounts,
    ensure_account,
    ensure_token,
    parse_account_spec,
    parse_token_spec,
)
from bulkops.server.connections import (
    ASGIApp,
    ConnectionLimits,
    ConnectionTracker,
    hypercorn_config,
    serve_hypercorn,
)
from bulkops.server.sqlite_storage import SqliteStorage
from bulkops.server.storage import Storage

__all__ = [
    "DEMO_ACCOUNT",
    "SWITCH_INTERVAL",
    "add_arguments",
    "child",
    "default_db_path",
    "open_state",
    "open_storage",
    "resolve_db",
    "run",
    "serve_api",
    "shown_db",
]

logger = logging.getLogger("bulkops.server")

DEMO_ACCOUNT = AccountSpec(
    username="demo", password=Secret("demo-password"), api_key=Secret("demo-key")
)


#: The GIL switch interval of a ``bulkops serve`` process, in seconds (Python's default is
#: 0.005). The activity worker's SQLite calls release the GIL; taking it back while a request
#: handler parses a 4 MB body waits up to one interval each time. At 1 ms, a 1 M-row import
#: into a fresh server took ~10-15% less wall time (benchmarks/README.md, "Activities").
SWITCH_INTERVAL = 0.001


def bulkops_home() -> Path:
    """``$BULKOPS_HOME``, default ``~/.local/share/bulkops``."""
    home = os.environ.get("BULKOPS_HOME")
    return Path(home) if home else Path.home() / ".local" / "share" / "bulkops"


def default_db_path() -> Path:
    """The database the embedded default and a bare ``bulkops serve`` share."""
    return bulkops_home() / "server.db"


def resolve_db(db: str | None) -> str | Path:
    """The database to open: ``--db``, else ``$BULKOPS_DB``, else :func:`default_db_path`.

    A ``postgresql://`` URL selects PostgreSQL; anything else is a SQLite path. A password
    in a ``--db`` URL is visible in ``ps``: warned about (prefer ``PGPASSWORD``,
    ``~/.pgpass`` or ``BULKOPS_DB``).
    """
    if db is not None:
        parts = urlsplit(db)
        if _is_postgres(db) and (parts.password or "password=" in parts.query):
            logger.warning(
                "--db carries a password, visible to every user in ps: use PGPASSWORD, "
                "~/.pgpass or BULKOPS_DB instead"
            )
        return db if _is_postgres(db) else Path(db)
    env = os.environ.get("BULKOPS_DB")
    if env:
        return env if _is_postgres(env) else Path(env)
    return default_db_path()


def _is_postgres(db: str | Path) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def shown_db(db: str | Path) -> str:
    """``db`` as logs and errors may show it: a URL without its password."""
    if _is_postgres(db):
        from bulkops.server.pg_storage import redact

        return redact(str(db))
    return str(db)


def open_storage(db: str | Path, *, data_dir: Path | None = None) -> Storage:
    """The store of ``db``: PostgreSQL for a ``postgresql://`` URL, else a SQLite file.

    ``data_dir`` holds PostgreSQL's export files (default ``$BULKOPS_HOME``); SQLite keeps
    them beside the database file.
    """
    if _is_postgres(db):
        # Imported here: SQLite users need not install psycopg (the "postgres" extra).
        from bulkops.server.pg_storage import PgStorage

        return PgStorage(str(db), data_dir=data_dir or bulkops_home())
    if "=" in str(db) and " " in str(db):
        # A libpq "key=value" string would otherwise become a SQLite file of that name.
        raise ValueError("--db takes a SQLite path or a postgresql:// URL")
    return SqliteStorage(db)


def open_state(
    db_path: str | Path,
    config: ServerConfig,
    *,
    accounts: Iterable[AccountSpec] = (),
    tokens: Iterable[TokenSpec] = (),
    login_limits: LoginLimits | None = None,
    data_dir: Path | None = None,
) -> ApiState:
    """Open (creating when missing) the database (a SQLite path or a PostgreSQL URL,
    :func:`open_storage`), set up accounts and tokens, return the state.

    With no account in the database and none given, the demo account is created and logged.
    ``login_limits`` throttle failed logins (default :class:`LoginLimits`).
    """
    store = open_storage(db_path, data_dir=data_dir)
    db = store.connection()  # type: ignore[attr-defined]
    accounts = list(accounts)
    for spec in accounts:
        _account, created = ensure_account(db, spec)
        logger.info("account %s %s", spec.username, "created" if created else "updated")
    if not accounts and count_accounts(db) == 0:
        ensure_account(db, DEMO_ACCOUNT)
        logger.warning(
            "no account given: created the demo account (user 'demo', password 'demo-password',"
            " API key 'demo-key') — for local use only"
        )
    for token in tokens:
        ensure_token(db, token)
    return ApiState(
        store=store,
        config=config,
        authenticator=Authenticator(limits=login_limits, shared=True),
    )


async def serve_api(
    state: ApiState,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    limits: ConnectionLimits | None = None,
    tracker: ConnectionTracker | None = None,
    listen_fd: int | None = None,
    run_worker: bool = True,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled (or until ``shutdown_trigger`` returns).

    Reports the server's origin (``http://127.0.0.1:PORT``) through ``task_status``, so
    ``url = await nursery.start(serve_api, state)`` works with port 0.

    Args:
        state: what the app serves.
        host: address to bind.
        port: port to bind (0: any).
        shutdown_trigger: returns when the server should stop gracefully.
        limits: timeouts and the connection cap (default :class:`ConnectionLimits`).
        tracker: a :class:`ConnectionTracker` to use (and read statistics from); by default
            one made from ``limits``.
        listen_fd: accept on this inherited listening socket instead of binding host:port.
        run_worker: run the in-process activity worker (False: ``--no-worker``, the
            activities are left to other processes' workers).
    """
    app = create_app(state)
    background = [t for t in state.background if run_worker or t is not worker.serve_worker]
    if tracker is None:
        tracker = ConnectionTracker(limits or ConnectionLimits())
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            _serve_hypercorn,
            app,
            hypercorn_config(host, port, tracker.limits, fd=listen_fd),
            tracker,
            shutdown_trigger,
            nursery.cancel_scope,
        )
        origin = str(binds[0]).rstrip("/")
        if state.origin is None:
            state.origin = origin
        for task in background:
            await nursery.start(task, state)
        task_status.started(state.config.public_url or origin)


async def _serve_hypercorn(
    app: ASGIApp,
    config: HypercornConfig,
    tracker: ConnectionTracker,
    shutdown_trigger: Callable[[], Awaitable[None]] | None,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve_hypercorn(
        app, config, tracker, shutdown_trigger=shutdown_trigger, task_status=task_status
    )
    # A graceful shutdown ends hypercorn; background tasks (the activity worker) end with it.
    scope.cancel()


# -- the command ------------------------------------------------------------------------


# One flat list of the options, in the order --help shows them.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``bulkops serve``'s arguments."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port (default %(default)s; 0 = any)"
    )
    parser.add_argument(
        "--db",
        default=None,
        help="SQLite file (created when missing) or postgresql://USER@HOST:PORT/DBNAME "
        "(password from PGPASSWORD or ~/.pgpass); default $BULKOPS_DB, else "
        "$BULKOPS_HOME/server.db",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="NAME:PASSWORD:APIKEY",
        help="create or update an account (visible in ps: prefer --accounts-file or "
        "BULKOPS_SERVE_ACCOUNTS)",
    )
    parser.add_argument("--accounts-file", type=Path, help="file of NAME:PASSWORD:APIKEY lines")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="NAME:TOKEN",
        help="accept a bearer token for an account (prefer --tokens-file or BULKOPS_SERVE_TOKENS)",
    )
    parser.add_argument("--tokens-file", type=Path, help="file of NAME:TOKEN lines")
    parser.add_argument(
        "--public-url", help="origin used in ids and links (default http://HOST:PORT)"
    )
    limits = parser.add_argument_group("activity limits")
    limits.add_argument(
        "--max-activity-rows",
        type=int,
        default=ServerConfig().max_activity_rows,
        help="contact rows one activity may hold (default %(default)s)",
    )
    limits.add_argument(
        "--max-activity-bytes",
        type=int,
        default=ServerConfig().max_activity_bytes,
        help="bytes one activity's data may hold (default %(default)s)",
    )
    limits.add_argument(
        "--retention-days",
        type=float,
        default=ServerConfig().retention_days,
        help="finished activities are kept this long (default %(default)s)",
    )
    throttles = parser.add_argument_group("throttles (all off by default)")
    throttles.add_argument("--rate", type=float, help="requests per second per account")
    throttles.add_argument("--daily-quota", type=int, help="requests per day per account")
    throttles.add_argument(
        "--max-queued-activities", type=int, help="unfinished activities per account"
    )
    throttles.add_argument(
        "--retry-after", type=float, help="send Retry-After: SECONDS with every 429"
    )
    defaults = ConnectionLimits()
    connections = parser.add_argument_group(
        "connections", "timeouts and the connection cap (README: The API server)"
    )
    connections.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=defaults.keep_alive_timeout,
        metavar="SECONDS",
        help="close a connection with no complete request head this long after it opened or"
        " after its last response (default %(default)s)",
    )
    connections.add_argument(
        "--body-timeout",
        type=float,
        default=defaults.body_timeout,
        metavar="SECONDS",
        help="grace for a request body before --min-body-rate applies (default %(default)s)",
    )
    connections.add_argument(
        "--min-body-rate",
        type=float,
        default=defaults.min_body_rate,
        metavar="BYTES_PER_S",
        help="slower request bodies are answered 408 and closed (default %(default)s)",
    )
    connections.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="open connections at most; when full the longest-idle one is closed"
        " (default: the descriptor limit less 128)",
    )
    connections.add_argument(
        "--max-head-bytes",
        type=int,
        default=defaults.max_head_bytes,
        metavar="N",
        help="largest request head (default %(default)s)",
    )
    logins = parser.add_argument_group(
        "failed logins", "past these, 401s become 429 with Retry-After (verified clients go on)"
    )
    logins.add_argument(
        "--login-failures",
        type=float,
        default=LoginLimits().account_failures,
        metavar="N",
        help="failed logins per account name per window (default %(default)s)",
    )
    logins.add_argument(
        "--address-login-failures",
        type=float,
        default=LoginLimits().address_failures,
        metavar="N",
        help="failed logins per client address per window (default %(default)s)",
    )
    logins.add_argument(
        "--login-window",
        type=float,
        default=LoginLimits().window,
        metavar="SECONDS",
        help="seconds in which the failure allowances refill (default %(default)s)",
    )
    processes = parser.add_argument_group("processes")
    processes.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="HTTP server processes sharing the port (default %(default)s)",
    )
    processes.add_argument(
        "--no-worker",
        action="store_true",
        help="run no activity worker here (leave activities to `bulkops worker`)",
    )
    parser.add_argument(
        "--faults",
        metavar="SPEC",
        help="fault plan: KIND=PROBABILITY[:SECONDS],...,seed=N (see README)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="least important log lines shown on stderr (default %(default)s)",
    )


def _read_specs(path: Path | None, env_name: str, flags: list[str]) -> list[str]:
    specs = list(flags)
    env_value = os.environ.get(env_name, "")
    specs.extend(env_value.split())
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                specs.append(line)
    return specs


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` the command-line arguments describe."""
    return ServerConfig(
        public_url=args.public_url,
        max_activity_rows=args.max_activity_rows,
        max_activity_bytes=args.max_activity_bytes,
        retention_days=args.retention_days,
        rate=args.rate,
        daily_quota=args.daily_quota,
        max_queued_activities=args.max_queued_activities,
        retry_after=args.retry_after,
        faults=args.faults,
    )


def connection_limits_from_args(args: argparse.Namespace) -> ConnectionLimits:
    """The :class:`ConnectionLimits` the command-line arguments describe."""
    return ConnectionLimits(
        keep_alive_timeout=args.keep_alive_timeout,
        body_timeout=args.body_timeout,
        min_body_rate=args.min_body_rate,
        max_connections=args.max_connections,
        max_head_bytes=args.max_head_bytes,
    )


def login_limits_from_args(args: argparse.Namespace) -> LoginLimits:
    """The :class:`LoginLimits` the command-line arguments describe."""
    return LoginLimits(
        account_failures=args.login_failures,
        address_failures=args.address_login_failures,
        window=args.login_window,
    )


def configure_logging(level: str) -> None:
    """Log to stderr, one line per record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("bulkops")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def run(args: argparse.Namespace) -> int:
    """Run ``bulkops serve`` until SIGINT or SIGTERM."""
    configure_logging(args.log_level)
    accounts = [
        parse_account_spec(s)
        for s in _read_specs(args.accounts_file, "BULKOPS_SERVE_ACCOUNTS", args.account)
    ]
    tokens = [
        parse_token_spec(s)
        for s in _read_specs(args.tokens_file, "BULKOPS_SERVE_TOKENS", args.token)
    ]
    state = open_state(
        resolve_db(args.db),
        config_from_args(args),
        accounts=accounts,
        tokens=tokens,
        login_limits=login_limits_from_args(args),
    )
    limits = connection_limits_from_args(args)
    if args.processes != 1:
        state.store.close()
        return _run_processes(args, limits)
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        trio.run(_serve_until_signal, state, args.host, args.port, limits, not args.no_worker)
    except (OSError, BaseExceptionGroup) as exc:
        cause = collapse_group(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if not (isinstance(cause, OSError) and cause.errno in _BIND_ERRORS):
            raise
        # The address cannot be bound: one line, not hypercorn's traceback.
        raise BulkOpsError(
            f"cannot listen on {args.host}:{args.port}: {(cause.strerror or '').lower()}"
            " (is another server running there? choose another --port)"
        ) from None
    finally:
        state.store.close()
    return 0


_BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL})


# -- many processes (bulkops.server.processes) --------------------------------------------


@attrs.frozen(kw_only=True)
class _ChildSpec:
    """What a server process of ``--processes N`` is told on its stdin (a pipe, never argv:
    ``db`` may be a URL with a password)."""

    db: str
    config: ServerConfig
    limits: ConnectionLimits
    login_limits: LoginLimits
    log_level: str
    fd: int
    run_worker: bool


def _run_processes(args: argparse.Namespace, limits: ConnectionLimits) -> int:
    if args.processes < 1:
        raise ConfigError(f"--processes must be at least 1, not {args.processes}")
    try:
        sock = processes.listen(args.host, args.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    with sock:
        db = resolve_db(args.db)
        spec = _ChildSpec(
            db=str(db),
            config=config_from_args(args),
            limits=limits,
            login_limits=login_limits_from_args(args),
            log_level=args.log_level,
            fd=sock.fileno(),
            run_worker=not args.no_worker,
        )
        command = [sys.executable, "-c", "from bulkops.server.serve import child; child()"]
        supervisor = processes.Supervisor(
            command, pickle.dumps(spec), sock.fileno(), args.processes
        )
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        logger.info(
            "serving the API at http://%s:%d/ws/customers/{username}/ with %d processes (db %s)",
            shown,
            port,
            args.processes,
            shown_db(db),
        )
        return supervisor.run()


def child() -> None:
    """A server process of ``bulkops serve --processes N`` (its spec pickled on stdin)."""
    spec = pickle.loads(sys.stdin.buffer.read())  # from our own parent, through a pipe
    if not isinstance(spec, _ChildSpec):
        raise SystemExit("bulkops serve: not started by a bulkops serve parent")
    processes.stop_with_parent(os.getppid())
    configure_logging(spec.log_level)
    for handler in logging.getLogger("bulkops").handlers:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s")
        )
    store = open_storage(spec.db)
    state = ApiState(
        store=store,
        config=spec.config,
        authenticator=Authenticator(limits=spec.login_limits, shared=True),
    )
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        trio.run(_serve_until_signal, state, "", 0, spec.limits, spec.run_worker, spec.fd)
    finally:
        store.close()


async def _serve_until_signal(
    state: ApiState,
    host: str,
    port: int,
    limits: ConnectionLimits,
    run_worker: bool = True,
    listen_fd: int | None = None,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def shutdown_trigger() -> None:
            async for signum in signals:
                logger.info("received %s, shutting down", signal.Signals(signum).name)
                return

        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve_api(
                    state,
                    host=host,
                    port=port,
                    shutdown_trigger=shutdown_trigger,
                    limits=limits,
                    listen_fd=listen_fd,
                    run_worker=run_worker,
                    task_status=task_status,
                )
            )
            logger.info(
                "serving the API at %s/ws/customers/{username}/ (db %s)", url, state.store.location
            )
