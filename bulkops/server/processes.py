"""``bulkops serve --processes N``: one listening socket, N server processes, one supervisor.

The parent binds and listens on the socket, then starts ``N`` children that inherit it (by
descriptor number) and each run the whole server — hypercorn's trio worker under our accept
loop (:func:`bulkops.server.connections.serve_hypercorn`), and unless ``--no-worker`` an
activity worker. The kernel gives each connection to one child. The children share nothing
but the database: activities are leased (:mod:`bulkops.server.leases`) and the throttles
count in the database, so N processes allow exactly what one does.

Why a parent that binds rather than ``SO_REUSEPORT`` in each child: port 0 then means one
port for all, a bind error is reported once, before any child starts, and a restarted child
joins the same socket (with ``SO_REUSEPORT`` a crashed child's queued connections are lost).

Invariants:

* What a child needs comes through a pipe on its stdin, never its argv (``ps``): the
  database URL, whose password (when ``--db`` or ``BULKOPS_DB`` carries one) is the only
  secret in it (the parent has already set up accounts and tokens in the database).
* SIGINT and SIGTERM to the parent are forwarded to every child as SIGTERM (each stops
  gracefully: it stops accepting and finishes its requests); the parent exits once all have,
  with 0 when every child exited 0. A child still running :data:`STOP_TIMEOUT` seconds
  later is killed.
* A child whose supervisor is gone (SIGKILLed: it could forward nothing) stops as if sent
  SIGTERM within a second (:func:`stop_with_parent`), so no orphan keeps the port.
* A child that dies while serving is replaced; one that dies within :data:`EARLY_EXIT`
  seconds of its start :data:`MAX_EARLY_EXITS` times in a row stops the whole server (it
  cannot start: a broken configuration or database), exit status 1.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

import attrs

__all__ = [
    "EARLY_EXIT",
    "MAX_EARLY_EXITS",
    "STOP_TIMEOUT",
    "Supervisor",
    "listen",
    "stop_with_parent",
]

logger = logging.getLogger("bulkops.server")

#: Seconds after SIGTERM before a child that has not exited is killed.
STOP_TIMEOUT = 30.0

#: A child exiting within this many seconds of its start did not start.
EARLY_EXIT = 5.0

#: Children in a row that did not start before the supervisor gives up.
MAX_EARLY_EXITS = 3

_TICK = 0.1  # seconds between looks at the children (a supervisor has nothing else to do)


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port`` that children can inherit.

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host.strip("[]"), port), family=family, backlog=backlog)
    sock.set_inheritable(True)
    return sock


def stop_with_parent(parent: int, interval: float = 1.0) -> None:
    """In a child: SIGTERM this process once ``parent`` is no longer its parent (the
    supervisor died without stopping it). Looks every ``interval`` seconds, in a daemon
    thread (Linux's ``PR_SET_PDEATHSIG`` would need ctypes)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        logger.warning("the supervisor (pid %d) is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="bulkops-parent-watch", daemon=True).start()


@attrs.define
class _Child:
    process: subprocess.Popen[bytes]
    started: float


class Supervisor:
    """Starts ``count`` copies of ``command``, each handed ``payload`` on stdin and the
    descriptor ``fd``; replaces those that die; stops them all on SIGINT/SIGTERM.

    Args:
        command: the child's argv (never a secret in it).
        payload: bytes written to each child's stdin, which is then closed.
        fd: the descriptor the children inherit (the listening socket).
        count: how many children run at once.
    """

    def __init__(self, command: Sequence[str], payload: bytes, fd: int, count: int) -> None:
        self.command = list(command)
        self.payload = payload
        self.fd = fd
        self.count = count
        self._children: dict[int, _Child] = {}
        self._stopping = False
        self._early_exits = 0

    def _spawn(self, slot: int) -> None:
        process = subprocess.Popen(self.command, stdin=subprocess.PIPE, pass_fds=(self.fd,))
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(self.payload)
        self._children[slot] = _Child(process, time.monotonic())
        logger.info("server process %d started (pid %d)", slot, process.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stopping:
            logger.info("received %s, stopping the server processes", signal.Signals(signum).name)
        self._stop()

    def _stop(self) -> None:
        self._stopping = True
        for child in self._children.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Supervise until stopped; the exit status (0: every child exited 0 when asked)."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        failed = False
        try:
            for slot in range(self.count):
                self._spawn(slot)
            deadline: float | None = None
            while self._children:
                time.sleep(_TICK)
                if self._stopping and deadline is None:
                    deadline = time.monotonic() + STOP_TIMEOUT
                for slot, child in list(self._children.items()):
                    code = child.process.poll()
                    if code is None:
                        if deadline is not None and time.monotonic() > deadline:
                            child.process.kill()
                        continue
                    del self._children[slot]
                    if self._stopping:
                        failed = failed or code != 0
                    else:  # died while serving: replaced (its status is logged there)
                        failed = self._replace(slot, child, code) or failed
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for child in self._children.values():  # only on an error in this loop
                child.process.kill()
                child.process.wait()
        return 1 if failed else 0

    def _replace(self, slot: int, child: _Child, code: int) -> bool:
        """Start another child in ``slot``, or stop all; True when giving up."""
        early = time.monotonic() - child.started < EARLY_EXIT
        self._early_exits = self._early_exits + 1 if early else 0
        if self._early_exits >= MAX_EARLY_EXITS:
            logger.error("server processes exit as they start (status %s); stopping", code)
            self._stop()
            return True
        logger.warning("server process %d exited with status %s; starting another", slot, code)
        self._spawn(slot)
        return False
