"""The README's Python snippet runs as written against a real ``bulkops serve``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.clikit import DEMO_ENV, clean_env, served

ROOT = Path(__file__).parent.parent


def python_blocks(markdown: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.DOTALL | re.MULTILINE)


def test_the_python_api_snippet_runs_as_written(tmp_path: Path) -> None:
    """Extracted from README.md, run in a directory holding contacts.csv with the server in
    BULKOPS_SERVER and the demo account's credentials: it imports all 120 sample rows."""
    (snippet,) = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    script = tmp_path / "snippet.py"
    script.write_text(snippet, encoding="utf-8")
    shutil.copy(ROOT / "samples" / "contacts.csv", tmp_path / "contacts.csv")
    with served(tmp_path / "server.db", tmp_path / "home") as origin:
        result = subprocess.run(
            [sys.executable, str(script)],
            env=clean_env(tmp_path / "home", {**DEMO_ENV, "BULKOPS_SERVER": origin}),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert "read=120" in result.stdout
    assert "applied=120" in result.stdout
