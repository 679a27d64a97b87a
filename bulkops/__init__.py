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

__all__ = [
    "ActivityFailed",
    "ActivityStalled",
    "ApiError",
    "AuthError",
    "BulkOpsError",
    "ConfigError",
    "Conflict",
    "InputError",
    "LifecycleError",
    "NotFound",
    "OutcomeUnknown",
    "ProtocolError",
    "Throttled",
    "TransportError",
    "XmlError",
    "__version__",
]
