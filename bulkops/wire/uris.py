"""The URL layout of the API and lenient parsing of resource URIs (spec §1.1).

Ids are absolute URIs on the server's public origin (``http://api.constantcontact.com`` on
the retired service); ``rel="edit"`` links are root-relative paths. URIs sent *by clients*
(list URIs in a contact or an activity) are matched by path only, so any origin works, and
sloppy paths that end in ``/lists/{id}`` are accepted as the real service did.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

__all__ = [
    "LEGACY_ORIGIN",
    "SYSTEM_LISTS",
    "account_path",
    "list_id_from_uri",
    "resource_id_from_uri",
]

#: Origin of the retired service; ids it issued look like ``http://api.constantcontact.com/ws/...``.
LEGACY_ORIGIN = "http://api.constantcontact.com"

#: System list ids and their names, in the order the lists feed shows them (spec §4.1).
SYSTEM_LISTS: dict[str, str] = {
    "active": "Active",
    "do-not-mail": "Do Not Mail",
    "removed": "Removed",
}


def account_path(username: str) -> str:
    """Root-relative base path of an account, with the trailing slash: ``/ws/customers/joe/``.

    Usernames are lower case in paths (spec §1.1).
    """
    return f"/ws/customers/{quote(username.lower(), safe='')}/"


_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def resource_id_from_uri(uri: str, collection: str) -> str | None:
    """The id after the last ``/{collection}/`` segment of a URI's path, or None.

    ``resource_id_from_uri("http://x/ws/customers/joe/lists/7", "lists") == "7"``. Query and
    fragment are ignored; a trailing slash is tolerated.
    """
    path = urlsplit(uri.strip()).path.rstrip("/")
    marker = f"/{collection}/"
    at = path.rfind(marker)
    if at < 0:
        return None
    candidate = path[at + len(marker) :]
    if "/" in candidate or _ID_RE.fullmatch(candidate) is None:
        return None
    return candidate


def list_id_from_uri(uri: str) -> str | None:
    """The list id (numeric, or a system list name) a list URI names, or None when malformed."""
    found = resource_id_from_uri(uri, "lists")
    if found is None:
        return None
    if found.isdigit() or found in SYSTEM_LISTS:
        return found
    return None
