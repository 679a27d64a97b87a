"""Lenient parsing of resource URIs."""

from __future__ import annotations

import pytest

from bulkops.wire.uris import account_path, list_id_from_uri, resource_id_from_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://api.constantcontact.com/ws/customers/joe/lists/7", "7"),
        ("https://api.constantcontact.com/ws/customers/joe/lists/7/", "7"),
        ("http://127.0.0.1:8080/ws/customers/joe/lists/active", "active"),
        ("/ws/customers/joe/lists/do-not-mail", "do-not-mail"),
        # the typo in the fixtures' contact-create request body
        ("http://api.constantcontact.com/ws/customers/geeksquad/joesflowers/lists/1", "1"),
        ("http://api.constantcontact.com/ws/customers/joe/lists/abc", None),
        ("http://api.constantcontact.com/ws/customers/joe/lists/", None),
        ("http://api.constantcontact.com/ws/customers/joe/contacts/7", None),
        ("not a uri", None),
        ("", None),
    ],
)
def test_list_uris_are_matched_by_path(uri: str, expected: str | None) -> None:
    """Any origin works; the path must end in /lists/{id}."""
    assert list_id_from_uri(uri) == expected


def test_resource_ids_and_account_paths() -> None:
    """Ids come from the last collection segment; usernames are lower-cased in paths."""
    assert (
        resource_id_from_uri("/ws/customers/u/activities/a07e1ffa?x=1", "activities") == "a07e1ffa"
    )
    assert account_path("JoesFlowers") == "/ws/customers/joesflowers/"
