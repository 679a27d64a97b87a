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
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from bulkops.errors import BulkOpsError, ConfigError, collapse_group
from bulkops.server.app import ApiState, ServerConfig, create_app
from bulkops.server.auth import (
    AccountSpec,
    Secret,
    TokenSpec,
    count_accounts,
    ensure_account,
    ensure_token,
    parse_account_spec,
    parse_token_spec,
)
from bulkops.server.store import Store

__all__ = [
    "DEMO_ACCOUNT",
    "SWITCH_INTERVAL",
    "add_arguments",
    "default_db_path",
    "open_state",
    "run",
    "serve_api",
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


def open_state(
    db_path: str | Path,
    config: ServerConfig,
    *,
    accounts: Iterable[AccountSpec] = (),
    tokens: Iterable[TokenSpec] = (),
) -> ApiState:
    """Open (creating when missing) the database, set up accounts and tokens, return the state.

    With no account in the database and none given, the demo account is created and logged.
    """
    store = Store(db_path)
    db = store.connection()
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
    return ApiState(store=store, config=config)


def _hypercorn_config(host: str, port: int) -> HypercornConfig:
    config = HypercornConfig()
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    config.bind = [f"{bind_host}:{port}"]
    config.accesslog = None  # AccessLog middleware writes one line per request
    config.errorlog = logging.getLogger("bulkops.server.hypercorn")
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = 75.0
    config.include_server_header = False
    return config


async def serve_api(
    state: ApiState,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled (or until ``shutdown_trigger`` returns).

    Reports the server's origin (``http://127.0.0.1:PORT``) through ``task_status``, so
    ``url = await nursery.start(serve_api, state)`` works with port 0.
    """
    app = create_app(state)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            _serve_hypercorn,
            app,
            _hypercorn_config(host, port),
            shutdown_trigger,
            nursery.cancel_scope,
        )
        origin = str(binds[0]).rstrip("/")
        if state.origin is None:
            state.origin = origin
        background = state.extras.get("background", [])
        for task in background:
            await nursery.start(task, state)
        task_status.started(state.config.public_url or origin)


async def _serve_hypercorn(
    app: object,
    config: HypercornConfig,
    shutdown_trigger: Callable[[], Awaitable[None]] | None,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await hypercorn_serve(
        app,  # type: ignore[arg-type]
        config,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )
    # A graceful shutdown ends hypercorn; background tasks (the activity worker) end with it.
    scope.cancel()


# -- the command ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``bulkops serve``'s arguments."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port (default %(default)s; 0 = any)"
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help="SQLite database, created when missing (default $BULKOPS_HOME/server.db)",
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
    db_path = args.db if args.db is not None else default_db_path()
    state = open_state(db_path, config_from_args(args), accounts=accounts, tokens=tokens)
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        trio.run(_serve_until_signal, state, args.host, args.port)
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


async def _serve_until_signal(state: ApiState, host: str, port: int) -> None:
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
                    task_status=task_status,
                )
            )
            logger.info(
                "serving the API at %s/ws/customers/{username}/ (db %s)", url, state.store.path
            )
