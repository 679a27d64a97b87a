"""bulkops: move millions of email-marketing contacts in and out of a Constant Contact
Web Services API v1 account — streaming, concurrent, crash-safe — and the API server itself.
"""

from __future__ import annotations

from bulkops.errors import (
    ActivityFailed,
    ActivityStalled,
    ApiError,
    AuthError,
    BulkOpsError,
    ConfigError,
    Conflict,
    InputError,
    LifecycleError,
    NotFound,
    OutcomeUnknown,
    ProtocolError,
    Throttled,
    TransportError,
    XmlError,
)

__version__ = "0.1.0"

# The engine's public entry points (after __version__: the client's User-Agent uses it).
from bulkops.engine.client import ClientConfig, Credentials, open_client
from bulkops.engine.exports import (
    ExportOptions,
    ExportReport,
    open_records,
    resume_export,
    run_export,
)
from bulkops.engine.imports import (
    ImportOptions,
    import_file,
    resume_run,
    run_clear,
    run_import,
)

__all__ = [
    "ActivityFailed",
    "ActivityStalled",
    "ApiError",
    "AuthError",
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
    "Throttled",
    "TransportError",
    "XmlError",
    "__version__",
    "import_file",
    "open_client",
    "open_records",
    "resume_export",
    "resume_run",
    "run_clear",
    "run_export",
    "run_import",
]
