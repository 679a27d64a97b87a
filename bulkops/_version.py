"""The package version, in a module of its own: engine modules name it without importing the
top-level package, which re-exports them (no import cycle)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
