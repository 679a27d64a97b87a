"""``bulkops serve`` (placeholder until the server lands)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise SystemExit("bulkops serve: not implemented yet")
