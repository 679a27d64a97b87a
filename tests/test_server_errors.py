"""The store's domain errors and the one place that turns them into HTTP statuses."""

from __future__ import annotations

import inspect
import re
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from bulkops.server import errors
from bulkops.server.http import ApiState, ServerConfig, problem_for


def _request(config: ServerConfig) -> Request:
    state = ApiState(store=None, config=config)  # type: ignore[arg-type]
    app = SimpleNamespace(state=SimpleNamespace(api=state))
    return Request({"type": "http", "path_params": {"username": "bob"}, "app": app})


def _documented_statuses() -> dict[str, int]:
    """``name -> status`` from the tree drawn in the errors module's docstring."""
    doc = errors.__doc__ or ""
    return {m[1]: int(m[2]) for m in re.finditer(r"── (\w+)\s.*?(\d{3})\s*$", doc, re.M)}


def test_every_domain_error_maps_to_the_status_its_docstring_names() -> None:
    """Each StoreError subclass has a status, the one drawn in bulkops.server.errors."""
    documented = _documented_statuses()
    kinds = {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.StoreError) and cls is not errors.StoreError
    }
    assert set(kinds) == set(documented)
    for name, cls in kinds.items():
        exc = cls(3) if cls is errors.QueueFull else cls("why")
        problem = problem_for(_request(ServerConfig()), exc)
        assert problem.status == documented[name], name


@pytest.mark.parametrize(("retry_after", "headers"), [(None, {}), (2.5, {"Retry-After": "3"})])
def test_a_full_queue_answers_like_a_throttle(
    retry_after: float | None, headers: dict[str, str]
) -> None:
    """429 naming the limit and the account, Retry-After only when configured."""
    problem = problem_for(_request(ServerConfig(retry_after=retry_after)), errors.QueueFull(4))
    assert problem.status == 429
    assert "account bob has 4 unfinished" in problem.message
    assert problem.headers == headers


def test_the_message_is_the_stores_reason() -> None:
    """A refusal carries the store's words to the client unchanged."""
    problem = problem_for(_request(ServerConfig()), errors.Conflict('"A" already exists'))
    assert (problem.status, problem.message) == (409, '"A" already exists')
