"""`bulkops import FILE --dry-run` as a process: it reads the file without the network stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SAMPLES = Path(__file__).parent.parent / "samples"

# Runs the command in a fresh interpreter, then prints the top-level packages it loaded.
_PROBE = """
import json, sys
from bulkops.__main__ import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""

#: What a dry run has no use for: the HTTP client, the async runtime, the XML parser (the
#: input is CSV), the server. Importing them cost ~0.4 s of CPU and ~13-20 MiB before.
NETWORK_STACK = {"trio", "httpx", "httpcore", "lxml", "hypercorn", "starlette", "stamina"}


def _args(tmp_path: Path) -> list[str]:
    sample = str(SAMPLES / "contacts.csv")
    run_dir = str(tmp_path / "run")
    return ["import", sample, "--list", "X", "--dry-run", "--quiet", "--run-dir", run_dir]


def _dry_run(tmp_path: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *_args(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_a_dry_run_imports_no_network_stack(tmp_path: Path) -> None:
    """A CSV dry run plans every chunk without importing trio, httpx, lxml or the server."""
    result = _dry_run(tmp_path)
    assert result["code"] == 0
    modules = set(result["modules"])  # type: ignore[call-overload]
    assert "bulkops" in modules
    assert modules & NETWORK_STACK == set()


def test_the_probe_sees_the_network_stack_when_it_is_loaded(tmp_path: Path) -> None:
    """The check above can fail: the same probe, with the engine's import runner loaded
    first (what a real import needs), reports trio and httpx."""
    probe = "import bulkops.engine.imports\n" + _PROBE
    proc = subprocess.run(
        [sys.executable, "-c", probe, *_args(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    modules = set(json.loads(proc.stdout.splitlines()[-1])["modules"])
    assert {"trio", "httpx"} <= modules & NETWORK_STACK
