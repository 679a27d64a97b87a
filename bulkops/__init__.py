"""bulkops: move millions of email-marketing contacts in and out of a Constant Contact
Web Services API v1 account — streaming, concurrent, crash-safe — and the API server itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bulkops._version import __version__
from bulkops.errors import (
    ActivityFailed,
    ActivityStalled,
    ApiError,
    AuthError,
    BodyBrokenOff,
    BulkOpsError,
    ConfigError,
    Conflict,
    InputError,
    LifecycleError,
    NotFound,
    OutcomeUnknown,
    ProtocolError,
    StateError,
    Throttled,
    TransportError,
    XmlError,
)

# The engine's public entry points, imported on first access (PEP 562): importing
# ``bulkops.stream`` or ``bulkops.wire`` alone must not pull in trio and httpx (~20 MiB of
# the stream pipeline's peak RSS). ``from bulkops import run_import`` works as before.
_LAZY: dict[str, str] = {
    "ClientConfig": "bulkops.engine.client",
    "Credentials": "bulkops.engine.client",
    "open_client": "bulkops.engine.client",
    "ExportOptions": "bulkops.engine.export_options",
    "ExportReport": "bulkops.engine.export_options",
    "open_records": "bulkops.engine.feeds",
    "resume_export": "bulkops.engine.exports",
    "run_export": "bulkops.engine.exports",
    "ImportOptions": "bulkops.engine.imports",
    "import_file": "bulkops.engine.imports",
    "resume_run": "bulkops.engine.imports",
    "run_clear": "bulkops.engine.imports",
    "run_import": "bulkops.engine.imports",
    "SyncOptions": "bulkops.engine.sync",
    "SyncReport": "bulkops.engine.sync",
    "resume_sync": "bulkops.engine.sync",
    "run_sync": "bulkops.engine.sync",
}

if TYPE_CHECKING:
    from bulkops.engine.client import ClientConfig, Credentials, open_client
    from bulkops.engine.export_options import ExportOptions, ExportReport
    from bulkops.engine.exports import resume_export, run_export
    from bulkops.engine.feeds import open_records
    from bulkops.engine.imports import (
        ImportOptions,
        import_file,
        resume_run,
        run_clear,
        run_import,
    )
    from bulkops.engine.sync import SyncOptions, SyncReport, resume_sync, run_sync


def __getattr__(name: str) -> Any:
    """Import an engine entry point on first access and cache it in the module."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "ActivityFailed",
    "ActivityStalled",
    "ApiError",
    "AuthError",
    "BodyBrokenOff",
    "BulkOpsError",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "Credentials",
    "ExportOptions",
    "ExportReport",
    "ImportOptions",
    "InputError",
    "LifecycleError",
    "NotFound",
    "OutcomeUnknown",
    "ProtocolError",
    "StateError",
    "SyncOptions",
    "SyncReport",
    "Throttled",
    "TransportError",
    "XmlError",
    "__version__",
    "import_file",
    "open_client",
    "open_records",
    "resume_export",
    "resume_run",
    "resume_sync",
    "run_clear",
    "run_export",
    "run_import",
    "run_sync",
]
