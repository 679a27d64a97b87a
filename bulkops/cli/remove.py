"""``bulkops remove FILE --list …``: take the file's contacts off lists."""

from __future__ import annotations

from bulkops.cli.transfer import add_remove_arguments as add_arguments
from bulkops.cli.transfer import run_remove as run

__all__ = ["add_arguments", "run"]
