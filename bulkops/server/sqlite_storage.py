"""The SQLite implementation of :class:`~bulkops.server.storage.Storage`.

:class:`SqliteStorage` is a :class:`~bulkops.server.store.Store` (one database file in WAL
mode, per-thread connections, a thread limiter) whose methods run the SQL modules —
:mod:`~bulkops.server.queries` (lists, contacts), :mod:`~bulkops.server.campaign_queries`,
:mod:`~bulkops.server.event_queries`, :mod:`~bulkops.server.setting_queries`,
:mod:`~bulkops.server.activity_queries`, :mod:`~bulkops.server.apply` and
:mod:`~bulkops.server.exports` — in a worker thread each (:meth:`Store.run`), so the event
loop never waits for SQLite. Nothing else in the server holds SQL but those modules,
:mod:`~bulkops.server.auth` (credentials) and the seeders.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from bulkops.server import (
    activity_queries,
    apply,
    campaign_queries,
    event_queries,
    exports,
    queries,
    setting_queries,
    throttle_queries,
)
from bulkops.server.auth import Authenticator
from bulkops.server.campaign_queries import after_due
from bulkops.server.datafile import ActivityRequest, ExportRequest
from bulkops.server.leases import Claim
from bulkops.server.records import ActivityRow, RowError
from bulkops.server.storage import EventKeyset
from bulkops.server.store import Account, Store, checkpoint_wal, read_write_seq
from bulkops.wire.model import (
    AccountEmail,
    Campaign,
    CampaignInput,
    Contact,
    ContactInput,
    ContactList,
    ContactListMember,
    Event,
    EventSummary,
    ListInput,
    Schedule,
)

__all__ = ["SqliteStorage"]


class SqliteStorage(Store):
    """:class:`~bulkops.server.storage.Storage` on one SQLite file (created when missing).

    Args:
        path: the SQLite file.
        max_threads: worker threads that may run queries at once.
    """

    @property
    def location(self) -> str:
        """The database file."""
        return str(self.path)

    @property
    def write_margin_ms(self) -> int:
        """0: a SQLite file is written on one host only (every process that writes it
        shares the clock), and every write stamps its contacts under the write lock."""
        return 0

    # -- accounts ------------------------------------------------------------------------

    async def check_credentials(
        self,
        authenticator: Authenticator,
        header: str | None,
        username: str,
        client: str = "",
    ) -> Account:
        return await self.run(authenticator.check, header, username, client)

    # -- lists and members ---------------------------------------------------------------

    async def list_page(self, account_id: int, after: int, limit: int) -> list[ContactList]:
        return await self.run(queries.list_page, account_id, after, limit)

    async def get_list(self, account_id: int, list_id: int) -> ContactList | None:
        return await self.run(queries.get_list, account_id, list_id)

    async def write_seq(self, account_id: int) -> tuple[int, int]:
        return await self.run(read_write_seq, account_id)

    async def create_list(self, account_id: int, spec: ListInput, now: int) -> ContactList:
        return await self.run(queries.create_list, account_id, spec, now)

    async def update_list(self, account_id: int, list_id: int, spec: ListInput, now: int) -> None:
        await self.run(queries.update_list, account_id, list_id, spec, now)

    async def delete_list(self, account_id: int, list_id: int, now: int) -> None:
        await self.run(queries.delete_list, account_id, list_id, now)

    async def member_page(
        self, account_id: int, list_key: str, before: int | None, limit: int
    ) -> list[ContactListMember] | None:
        return await self.run(queries.member_page, account_id, list_key, before, limit)

    # -- contacts ------------------------------------------------------------------------

    async def contact_page(self, account_id: int, before: int | None, limit: int) -> list[Contact]:
        return await self.run(queries.contact_page, account_id, before, limit)

    async def contacts_by_email(self, account_id: int, emails: Sequence[str]) -> list[Contact]:
        return await self.run(queries.contacts_by_email, account_id, emails)

    async def contacts_updated_since(
        self,
        account_id: int,
        since: int,
        after: tuple[int, int] | None,
        *,
        status: str | None,
        list_id: int | None,
        limit: int,
    ) -> list[Contact]:
        query = functools.partial(
            queries.contacts_updated_since, status=status, list_id=list_id, limit=limit
        )
        return await self.run(query, account_id, since, after)

    async def get_contact(self, account_id: int, contact_id: int) -> Contact | None:
        return await self.run(queries.get_contact, account_id, contact_id)

    async def create_contact(
        self,
        account_id: int,
        fields: dict[str, str],
        list_uris: Sequence[str],
        source: str,
        now: int,
    ) -> Contact:
        return await self.run(queries.create_contact, account_id, fields, list_uris, source, now)

    async def update_contact(
        self, account_id: int, contact_id: int, data: ContactInput, source: str | None, now: int
    ) -> None:
        await self.run(queries.update_contact, account_id, contact_id, data, source, now)

    async def opt_out_contact(self, account_id: int, contact_id: int, now: int) -> None:
        await self.run(queries.opt_out_contact, account_id, contact_id, now)

    # -- campaigns -----------------------------------------------------------------------

    async def campaign_page(
        self, account_id: int, status: str | None, before: int | None, limit: int, *, now: int
    ) -> list[Campaign]:
        return await self.run(
            after_due,
            account_id,
            now,
            campaign_queries.campaign_page,
            account_id,
            status,
            before,
            limit,
        )

    async def get_campaign(self, account_id: int, campaign_id: int, *, now: int) -> Campaign | None:
        return await self.run(
            after_due, account_id, now, campaign_queries.get_campaign, account_id, campaign_id
        )

    async def create_campaign(self, account_id: int, spec: CampaignInput, now: int) -> Campaign:
        return await self.run(campaign_queries.create_campaign, account_id, spec, now)

    async def update_campaign(
        self, account_id: int, campaign_id: int, spec: CampaignInput, now: int
    ) -> None:
        await self.run(
            after_due,
            account_id,
            now,
            campaign_queries.update_campaign,
            account_id,
            campaign_id,
            spec,
            now,
        )

    async def delete_campaign(self, account_id: int, campaign_id: int, now: int) -> None:
        await self.run(
            after_due, account_id, now, campaign_queries.delete_campaign, account_id, campaign_id
        )

    async def get_schedule(self, account_id: int, campaign_id: int, *, now: int) -> Schedule | None:
        return await self.run(
            after_due, account_id, now, campaign_queries.get_schedule, account_id, campaign_id
        )

    async def schedule_campaign(
        self, account_id: int, campaign_id: int, when: int, now: int
    ) -> Schedule:
        return await self.run(
            after_due,
            account_id,
            now,
            campaign_queries.schedule_campaign,
            account_id,
            campaign_id,
            when,
            now,
        )

    async def unschedule_campaign(self, account_id: int, campaign_id: int, now: int) -> None:
        await self.run(
            after_due,
            account_id,
            now,
            campaign_queries.unschedule_campaign,
            account_id,
            campaign_id,
            now,
        )

    # -- events --------------------------------------------------------------------------

    async def campaign_name(self, account_id: int, campaign_id: int) -> str | None:
        return await self.run(campaign_queries.campaign_name, account_id, campaign_id)

    async def contact_email(self, account_id: int, contact_id: int) -> str | None:
        return await self.run(event_queries.contact_email, account_id, contact_id)

    async def campaign_events(
        self,
        account_id: int,
        campaign_id: int,
        kind: str,
        since: int,
        after: EventKeyset,
        limit: int,
        *,
        now: int,
    ) -> list[Event] | None:
        return await self.run(
            after_due,
            account_id,
            now,
            event_queries.campaign_events,
            account_id,
            campaign_id,
            kind,
            since,
            after,
            limit,
        )

    async def url_events(
        self,
        account_id: int,
        campaign_id: int,
        url_id: int,
        since: int,
        after: EventKeyset,
        limit: int,
        *,
        now: int,
    ) -> list[Event] | None:
        return await self.run(
            after_due,
            account_id,
            now,
            event_queries.url_events,
            account_id,
            campaign_id,
            url_id,
            since,
            after,
            limit,
        )

    async def contact_events(
        self,
        account_id: int,
        contact_id: int,
        kind: str,
        since: int,
        after: EventKeyset,
        limit: int,
        *,
        now: int,
    ) -> list[Event] | None:
        return await self.run(
            after_due,
            account_id,
            now,
            event_queries.contact_events,
            account_id,
            contact_id,
            kind,
            since,
            after,
            limit,
        )

    async def contact_summary(
        self,
        account_id: int,
        contact_id: int,
        since: int,
        before: int | None,
        limit: int,
        *,
        now: int,
    ) -> list[EventSummary] | None:
        return await self.run(
            after_due,
            account_id,
            now,
            event_queries.contact_summary,
            account_id,
            contact_id,
            since,
            before,
            limit,
        )

    # -- sender addresses ----------------------------------------------------------------

    async def email_address_page(
        self, account_id: int, after: int, limit: int
    ) -> list[AccountEmail]:
        return await self.run(setting_queries.email_address_page, account_id, after, limit)

    async def get_email_address(self, account_id: int, address_id: int) -> AccountEmail | None:
        return await self.run(setting_queries.get_email_address, account_id, address_id)

    # -- activities ----------------------------------------------------------------------

    async def create_activity(
        self, account_id: int, request: ActivityRequest, blob: bytes, max_queued: int | None
    ) -> ActivityRow:
        return await self.run(
            activity_queries.create_activity, account_id, request, blob, max_queued
        )

    async def activity_page(
        self,
        account_id: int,
        before: int | None,
        status: str | None,
        activity_type: str | None,
        cutoff: int,
    ) -> list[ActivityRow]:
        return await self.run(
            activity_queries.activity_page, account_id, before, status, activity_type, cutoff
        )

    async def activity_errors(self, activity_id: str) -> list[RowError]:
        return await self.run(activity_queries.activity_errors, activity_id)

    async def get_activity(
        self, account_id: int, activity_id: str, cutoff: int
    ) -> tuple[ActivityRow, list[RowError]] | None:
        return await self.run(activity_queries.get_activity, account_id, activity_id, cutoff)

    # -- the worker ----------------------------------------------------------------------

    async def recover_running(self) -> int:
        return await self.run(activity_queries.recover_running)

    async def take_next(self) -> tuple[str, int] | None:
        return await self.run(activity_queries.take_next)

    async def load_request(self, activity_id: str) -> ActivityRequest:
        return await self.run(activity_queries.load_request, activity_id)

    async def apply_activity(
        self,
        activity_id: str,
        account_id: int,
        request: ActivityRequest,
        before_commit: Callable[[str], None] | None = None,
    ) -> tuple[int, int]:
        return await self.run(apply.apply_activity, activity_id, account_id, request, before_commit)

    async def write_export(
        self, account_id: int, activity_id: str, export: ExportRequest
    ) -> tuple[str, int]:
        return await self.run(exports.write_export, self.data_dir, account_id, activity_id, export)

    async def complete_export(self, activity_id: str, file_name: str, count: int) -> None:
        await self.run(activity_queries.complete_export, activity_id, file_name, count)

    async def fail_activity(self, activity_id: str, owner: str | None = None) -> None:
        await self.run(activity_queries.fail_activity, activity_id, owner)

    async def purge_expired(self, cutoff_ms: int) -> int:
        return await self.run(activity_queries.purge_expired, cutoff_ms, self.data_dir)

    async def checkpoint(self) -> None:
        await self.run(checkpoint_wal)

    # -- leases ----------------------------------------------------------------------------

    async def claim_activity(self, worker_id: str, now: int, lease_seconds: float) -> Claim | None:
        return await self.run(activity_queries.claim_activity, worker_id, now, _ms(lease_seconds))

    async def renew_lease(
        self, activity_id: str, worker_id: str, now: int, lease_seconds: float
    ) -> bool:
        return await self.run(
            activity_queries.renew_lease, activity_id, worker_id, now, _ms(lease_seconds)
        )

    async def release_activity(self, activity_id: str, worker_id: str, now: int) -> bool:
        return await self.run(activity_queries.release_activity, activity_id, worker_id, now)

    async def lease_owners(self) -> list[str]:
        return await self.run(activity_queries.lease_owners)

    async def expire_leases(self, owners: Sequence[str]) -> int:
        return await self.run(activity_queries.expire_leases, list(owners))

    # -- shared throttles ------------------------------------------------------------------

    async def take_token(self, key: str, now: int, rate: float, burst: float) -> bool:
        return await self.run(throttle_queries.take_token, key, now, rate, burst)

    async def count_request(self, username: str, day: int, quota: int) -> bool:
        return await self.run(throttle_queries.count_request, username, day, quota)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
