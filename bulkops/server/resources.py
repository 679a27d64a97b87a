"""The route lists of every resource module, gathered for :func:`bulkops.server.app.create_app`.

Each resource module owns its handlers and exposes ``routes: list[BaseRoute]``; the data they
use is reached through :class:`~bulkops.server.storage.Storage`.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from bulkops.server import activities, campaigns, contacts, events, lists, settings


def routes() -> list[BaseRoute]:
    """Every resource route, in matching order."""
    return [
        *lists.routes,
        *contacts.routes,
        *activities.routes,
        *campaigns.routes,
        *events.routes,
        *settings.routes,
    ]
