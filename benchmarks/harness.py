"""Small helpers shared by the benchmark scripts: figures, child processes, tables, JSON.

A benchmark prints the project's figure next to a baseline measured in the same run, and the
ratio (design.md §2.8). The pieces here are generic:

* :class:`Figure` — one line of a results table (``ratio`` is ``value / baseline``, or
  ``baseline / value`` for figures where lower is better);
* :func:`run_child` — run one case in a fresh Python process (so that each case's peak RSS is
  its own) and return the JSON object it printed last, with ``peak_rss_mib`` added;
* :func:`child_result` — what a child calls at its end: prints its result as JSON with its
  own peak RSS (:func:`peak_rss_mib`: ``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` is
  not used, since on Linux a child can inherit its parent's peak through fork);
* :func:`peak_rss_mib` — this process's peak RSS so far, in MiB;
* :func:`best_of` — the fastest of several timed runs (noise on a shared machine is one-sided);
* :func:`print_table` / :func:`to_json` / :func:`machine` — output;
* :func:`add_check` / :func:`check_figures` — every script's ``--check``: all its cases at
  small sizes, in seconds, printing the same table (``tests/test_benchmarks.py`` runs it and
  compares the rows with the README's, via :func:`table_rows` and :func:`row_key`).

Typical use in a script::

    def child(case: str, args) -> None:          # runs in the subprocess
        seconds = best_of(lambda: work(args), repeat=args.repeat)
        child_result({"seconds": seconds, "rows": n})

    result = run_child(__file__, ["--child", "pipeline", "--file", path])
    figures = [Figure(case="pipeline", metric="rows/s", value=..., unit="rows/s",
                      baseline=..., baseline_label="csv.reader")]
    print_table(figures)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

__all__ = [
    "CHECK_HELP",
    "Figure",
    "add_check",
    "best_of",
    "check_cost",
    "check_figures",
    "child_result",
    "machine",
    "peak_rss_mib",
    "print_table",
    "row_key",
    "run_child",
    "table_rows",
    "to_json",
]

CHECK_HELP = (
    "a smoke run: every case once at small sizes (seconds), printing the same table; "
    "tests/test_benchmarks.py runs it (figures meaningless at these sizes)"
)


@attrs.frozen(kw_only=True)
class Figure:
    """One measured figure and, when there is one, its baseline from the same run.

    Attributes:
        case: the benchmark case.
        metric: what is measured, in words.
        value: the figure.
        unit: its unit (``rows/s``, ``MiB``, ``bytes``, ...).
        baseline: the baseline's value in the same unit, or None.
        baseline_label: what the baseline is.
        higher_is_better: whether a bigger value is the better one (rates) or not (memory).
    """

    case: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """``value / baseline`` (``baseline / value`` when lower is better), or None."""
        if not self.baseline or not self.value:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, the ratio included."""
        return {**attrs.asdict(self), "ratio": self.ratio}


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """The shortest wall-clock time of ``repeat`` runs of ``fn``, in seconds.

    Other processes only ever slow a run down, so the minimum is the least noisy estimate.
    """
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB.

    ``VmHWM`` ("high water mark") of ``/proc/self/status`` on Linux: the peak of this
    process alone. ``ru_maxrss`` is not used there: a child forked from a big parent starts
    with the parent's figure. Elsewhere, ``ru_maxrss`` (KiB on most systems).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # "VmHWM:   12345 kB"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_result(result: dict[str, Any]) -> None:
    """Print a child's result as one JSON line, with its own peak RSS in MiB added
    (:func:`peak_rss_mib`)."""
    print(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}), flush=True)


def run_child(script: str, args: Sequence[str], *, timeout: float = 3600) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh process and return the last JSON line it
    printed (see :func:`child_result`).

    Raises:
        RuntimeError: the child failed or printed no JSON.
    """
    done = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{done.stderr}")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError(f"{script} {' '.join(args)} printed no result:\n{done.stdout}")


def machine() -> dict[str, Any]:
    """Where the figures were measured: CPU count, Python, load average, date."""
    return {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _number(value: float, unit: str) -> str:
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}"


def print_table(figures: Iterable[Figure], *, file: Any = None) -> None:
    """Print figures as a Markdown table: case, metric, value, baseline, ratio."""
    out = file or sys.stdout
    print("| case | metric | value | baseline | vs. |", file=out)
    print("|---|---|---:|---:|---:|", file=out)
    for f in figures:
        baseline = (
            f"{_number(f.baseline, f.unit)} ({f.baseline_label})" if f.baseline is not None else ""
        )
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else ""
        print(
            f"| {f.case} | {f.metric} | {_number(f.value, f.unit)} | {baseline} | {ratio} |",
            file=out,
        )


def to_json(figures: Iterable[Figure], **extra: Any) -> str:
    """Figures (and extra keys, such as :func:`machine`) as a JSON document."""
    return json.dumps({**extra, "figures": [f.as_dict() for f in figures]}, indent=2)


# -- --check: the benchmarks in the test suite ----------------------------------------------


def add_check(parser: argparse.ArgumentParser) -> None:
    """Add the ``--check`` option every benchmark script has (:data:`CHECK_HELP`)."""
    parser.add_argument("--check", action="store_true", help=CHECK_HELP)


def check_figures(figures: Iterable[Any]) -> None:
    """What ``--check`` asserts besides running: some figures, every value a finite number.
    Prints :func:`check_cost` to stderr.

    Raises:
        RuntimeError: no figure, or a value that is NaN or infinite.
    """
    print(check_cost(), file=sys.stderr)
    found = list(figures)
    if not found:
        raise RuntimeError("--check: no figures")
    for f in found:
        if not math.isfinite(f.value) or (f.baseline is not None and not math.isfinite(f.baseline)):
            raise RuntimeError(f"--check: {f.case} / {f.metric}: {f.value} vs {f.baseline}")


_STARTED = time.monotonic()  # about when the script started: it imports this module first


def check_cost() -> str:
    """What a run cost so far: CPU seconds of this process and of its children that have
    ended (servers, cases), and wall seconds since this module was imported."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = own.ru_utime + own.ru_stime
    theirs = children.ru_utime + children.ru_stime
    return (
        f"cost: {mine + theirs:.1f} s CPU ({mine:.1f} s this process, {theirs:.1f} s its"
        f" children), {time.monotonic() - _STARTED:.1f} s wall, load {os.getloadavg()[0]:.1f}"
    )


_TABLE_ROW = re.compile(r"^\|([^|]*)\|([^|]*)\|[^|]*\|[^|]*\|[^|]*\|\s*$")
_NUMBER = re.compile(r"[−-]?\d[\d,.]*(?:\s?[kM]\b)?")


def table_rows(text: str) -> list[tuple[str, str]]:
    """``(case, metric)`` of every row of the five-column Markdown tables in ``text``."""
    rows = []
    for line in text.splitlines():
        match = _TABLE_ROW.match(line.strip())
        if match is None:
            continue
        case, metric = match.group(1).strip(), match.group(2).strip()
        if case == "case" or set(case) <= {"-", ":"}:
            continue  # the header and the alignment row
        rows.append((case, metric))
    return rows


def row_key(case: str, metric: str) -> tuple[str, str]:
    """A row's identity whatever the sizes: every number (``40,000``, ``1 M``, ``0.5``) → ``#``.

    So the rows a ``--check`` run prints at small sizes can be matched with the README's.
    """
    return (_NUMBER.sub("#", case), _NUMBER.sub("#", metric))
