"""Run directories: where a run's journal, outcome files and ``report.json`` live.

Rules:

* A run directory holds one run: a new run refuses a directory that already has a journal
  (``resume`` finishes it instead) — unless that run **never started** (it failed before
  anything was sent: a usage or input error, unknown lists, an unreachable server). Such a
  journal is marked ``not-started`` with its error and is replaced by the next run, so the
  corrected command can be repeated with the same ``--run-dir``.
* Default names are unique: ``./bulkops-runs/{stem}-{command}-{YYYYmmdd-HHMMSS}``, with
  ``-2``, ``-3``, … when that directory exists (two runs in one second, two dry-runs). The
  directory is created (atomically, ``mkdir``) when the name is chosen.
* Files hold contact data, so they are private: directories a run creates are ``0700``,
  journals and outcome files ``0600`` (less when the umask is stricter).
* The process that runs a run holds an exclusive ``flock`` on ``run.lock`` until it ends
  (the kernel drops it when the process dies, even by SIGKILL). A journal that says
  ``running`` while nobody holds the lock belongs to a run that was killed: it is
  *interrupted*, and ``resume`` may take it over; a held lock refuses a second process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from bulkops.engine.journal import JOURNAL_NAME, Journal
from bulkops.errors import ConfigError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "LOCK_NAME",
    "NOT_STARTED",
    "REPORT_NAME",
    "RunLock",
    "command_name",
    "default_run_dir",
    "is_running",
    "make_private_dir",
    "mark_not_started",
    "new_journal",
    "open_new_run",
]

#: Every run's report, next to its journal.
REPORT_NAME = "report.json"
#: Held (``flock``) by the process running the run.
LOCK_NAME = "run.lock"
#: The journal state of a run that failed before anything was sent.
NOT_STARTED = "not-started"
#: Modes of what a run creates (the umask may only take more away).
DIR_MODE = 0o700
FILE_MODE = 0o600

#: The names of the commands in run-directory names (the engine's ``add`` is ``import``).
_COMMAND_NAMES = {"add": "import"}


def command_name(kind: str) -> str:
    """The command as the user typed it (the engine's kind ``add`` is ``import``)."""
    return _COMMAND_NAMES.get(kind, kind)


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) as ``0700``; an existing one is left as it is."""
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=DIR_MODE)


def default_run_dir(path: Path | None, command: str, *, root: Path | None = None) -> Path:
    """A new, empty directory ``{root}/{stem}-{command}-{YYYYmmdd-HHMMSS}[-N]`` (created
    ``0700``; ``root`` defaults to ``./bulkops-runs``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = path.stem if path is not None else "lists"
    base = (root if root is not None else Path("bulkops-runs")) / (
        f"{stem}-{command_name(command)}-{stamp}"
    )
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            candidate.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        return candidate
    raise ConfigError(f"too many runs named {base}: choose one with --run-dir")


class RunLock:
    """The exclusive lock of a run directory, held while a process runs the run.

    Raises:
        ConfigError: (:meth:`acquire`) another process holds it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (without waiting) and write this process's id into the file."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent} is being run by another process right now"
                f"{_pid_note(self.path)}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file drops it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pid_note(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def is_running(directory: Path) -> bool:
    """True when a live process holds the run directory's lock."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock taken just now
    return False


def new_journal(directory: Path) -> Journal:
    """The journal of a new run; a directory that already holds a run is refused, one that
    holds a run that never started is reused (its journal replaced). Call it holding the
    directory's :class:`RunLock`.

    Raises:
        ConfigError: ``directory`` already holds a run.
    """
    path = directory / JOURNAL_NAME
    if path.exists():
        journal = Journal(directory, create=False)
        try:
            state = journal.meta().get("state")
        finally:
            journal.close()
        if state != NOT_STARTED:
            raise ConfigError(f"{directory} already holds a run: use `bulkops resume {directory}`")
        for name in (JOURNAL_NAME, f"{JOURNAL_NAME}-wal", f"{JOURNAL_NAME}-shm", REPORT_NAME):
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
    return Journal(directory, create=True)


def open_new_run(directory: Path) -> tuple[Journal, RunLock]:
    """Make ``directory`` (private), take its lock, and open the journal of a new run.

    Raises:
        ConfigError: another process runs it, or it already holds a run.
    """
    make_private_dir(directory)
    lock = RunLock(directory).acquire()
    try:
        return new_journal(directory), lock
    except BaseException:
        lock.release()
        raise


def mark_not_started(journal: Journal, exc: BaseException) -> None:
    """A run that failed before it sent anything never started: say so in its journal (with
    the error and its exit code), so ``status`` and ``resume`` can tell, and a new run may
    take the directory."""
    if any(chunk.posts for chunk in journal.chunks()):
        return
    code = 64 if isinstance(exc, ConfigError) else 4
    journal.set_meta(state=NOT_STARTED, error=str(exc), exit_code=code)
