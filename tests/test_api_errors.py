"""Errors of the Python API name settings, not the CLI's flags; the CLI shows them as flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from bulkops.__main__ import main
from bulkops.engine.client import open_client
from bulkops.engine.export_options import ExportOptions
from bulkops.engine.lists import resolve_lists
from bulkops.errors import ConfigError
from tests.enginekit import client_config
from tests.serverkit import HANG_GUARD, RunningServer


@pytest.mark.parametrize(
    "settings",
    [
        {"what": "collection"},
        {"what": "members"},
        {"what": "lists", "via": "activity"},
        {"what": "contacts", "updated_since": "2024-01-01T00:00:00Z"},
        {"what": "lists", "list": "7"},
        {"what": "lists", "collection": "x"},
        {"what": "lists", "columns": ("First Name",)},
        {"what": "members", "list": "7", "columns": ("Shoe",)},
    ],
)
def test_export_option_errors_name_settings_not_flags(settings: dict[str, object]) -> None:
    """Every invalid ExportOptions combination: a message without a `--flag`."""
    with pytest.raises(ConfigError) as caught:
        ExportOptions(**settings)  # type: ignore[arg-type]
    assert "--" not in str(caught.value)


async def test_an_unknown_list_names_the_setting_that_creates_it(server: RunningServer) -> None:
    """resolve_lists: `create_lists`, not --create-lists."""
    async with open_client(client_config(server)) as client:
        with trio.fail_after(HANG_GUARD), pytest.raises(ConfigError) as caught:
            await resolve_lists(client, ["Nope"], create=False)
    assert "`create_lists` creates it" in str(caught.value)
    assert "--" not in str(caught.value)


def test_the_cli_shows_settings_as_its_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same errors on the command line name the flags (embedded server, empty home)."""
    for name in [n for n in os.environ if n.startswith("BULKOPS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BULKOPS_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "lists", "--via", "activity", "-o", "x.csv"]) == 64
    assert "--via activity exports a list's members only" in capsys.readouterr().err
    source = tmp_path / "in.csv"
    source.write_text("Email Address\nann@example.org\n", encoding="utf-8")
    code = main(["import", str(source), "--list", "Nope", "--quiet", "--run-dir", "r"])
    assert code == 64
    assert "no list 'Nope' (--create-lists creates it)" in capsys.readouterr().err
