"""Server URLs as people write them: the root, ``…/ws/customers`` or an account's URL, with
or without a scheme, made into the server's root (and the username the URL names).

Pure: strings in, strings out (no httpx, no IO), so the rules are checked without a server.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from bulkops.errors import ConfigError

__all__ = ["LOOPBACK", "split_server_url"]

#: Host names that are this machine: ``http://`` is assumed for them without a scheme.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _is_loopback(host: str) -> bool:
    return host.lower() in LOOPBACK or host.startswith("127.")


def split_server_url(url: str) -> tuple[str, str | None]:
    """The server's root and the username a URL names, from what people paste.

    Accepted: the root (``https://api.constantcontact.com``), the collection of accounts
    (``…/ws/customers``) or an account's URL (``…/ws/customers/USER/``, any trailing part
    after it ignored). Without a scheme, ``http://`` is assumed for loopback hosts
    (``127.0.0.1:8080``, ``localhost``, ``[::1]``) and ``https://`` for any other.

    Returns:
        (root without a trailing slash, the username in the URL or None).

    Raises:
        ConfigError: not an http(s) URL, no host, or credentials or a query in it.
    """
    text = url.strip()
    if not text:
        raise ConfigError("the server URL is empty")
    if "://" not in text:
        bare = urlsplit(f"//{text}").hostname or ""
        text = f"{'http' if _is_loopback(bare) else 'https'}://{text}"
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"the server URL {_redacted(text)!r} must start with http:// or https://")
    host: str | None
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        host = None
    if not host:
        raise ConfigError(f"the server URL {_redacted(text)!r} names no host (or a bad port)")
    if "@" in parts.netloc:
        raise ConfigError(
            "the server URL must not hold credentials: give them in the environment or a "
            "credentials file"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"the server URL {_redacted(text)!r} must not have a query")
    segments = [s for s in parts.path.split("/") if s]
    username: str | None = None
    for i in range(len(segments) - 1):
        if segments[i] == "ws" and segments[i + 1] == "customers":
            if i + 2 < len(segments):
                username = unquote(segments[i + 2])
            segments = segments[:i]
            break
    path = "/" + "/".join(segments) if segments else ""
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, "", "")), username


def _redacted(url: str) -> str:
    """A URL for messages: no userinfo, no query."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))
