"""Server URLs as people paste them (engine/server_urls.py): properties over any root."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from bulkops.engine.server_urls import split_server_url

_labels = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "127.0.0.2"]),
    st.lists(_labels, min_size=2, max_size=3).map(".".join),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
prefixes = st.lists(_labels.filter(lambda s: s != "ws"), max_size=2)
usernames = st.text(
    st.characters(codec="utf-8", exclude_characters="/?#\x00", exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() == s and s not in (".", ".."))


def _root(scheme: str, host: str, port: int | None, prefix: list[str]) -> str:
    netloc = host if port is None else f"{host}:{port}"
    return f"{scheme}://{netloc}" + "".join(f"/{p}" for p in prefix)


@given(st.sampled_from(["http", "https"]), hosts, ports, prefixes)
def test_a_root_is_its_own_root(
    scheme: str, host: str, port: int | None, prefix: list[str]
) -> None:
    """The root, with or without a trailing slash, comes back unchanged, naming no user."""
    root = _root(scheme, host, port, prefix)
    assert split_server_url(root) == (root, None)
    assert split_server_url(root + "/") == (root, None)
    assert split_server_url(f"{root}/ws/customers") == (root, None)


@given(st.sampled_from(["http", "https"]), hosts, ports, prefixes, usernames, prefixes)
def test_an_account_url_gives_its_root_and_its_user(
    scheme: str, host: str, port: int | None, prefix: list[str], user: str, tail: list[str]
) -> None:
    """ROOT/ws/customers/USER[/anything]: (ROOT, USER), and splitting ROOT again is stable."""
    root = _root(scheme, host, port, prefix)
    url = f"{root}/ws/customers/{quote(user, safe='')}/" + "/".join(tail)
    assert split_server_url(url) == (root, user)
    assert split_server_url(split_server_url(url)[0]) == (root, None)


@given(hosts, ports)
def test_without_a_scheme_loopback_is_http_and_anything_else_https(
    host: str, port: int | None
) -> None:
    """A bare host[:port]: http:// for this machine, https:// for any other."""
    bare = host if port is None else f"{host}:{port}"
    root, _user = split_server_url(bare)
    local = host in ("localhost", "[::1]") or host.startswith("127.")
    assert root == f"{'http' if local else 'https'}://{bare}"
