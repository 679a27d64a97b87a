"""The one narrow interface between the server and its database: :class:`Storage`.

Request handlers (through ``ApiState.store``) and the activity worker reach the data only
through these methods; :class:`~bulkops.server.sqlite_storage.SqliteStorage` implements
them on SQLite, and another database implements the same protocol.

The contract every implementation keeps:

* **Accounts are walls.** Every method taking ``account_id`` reads and writes only that
  account's rows; another account's id is the same as no such id.
* **Refusals are domain errors** (:mod:`bulkops.server.errors`: ``NotFound``, ``Conflict``,
  ``Invalid``, ``Forbidden``, ``QueueFull``), never HTTP statuses; "no such owner" on a read
  is ``None``.
* **Keyset paging**: a page is "the next ``limit`` rows after a key" on an index, so its cost
  never depends on its position; the keys are those each method names.
* **Times** are integer milliseconds since the epoch (UTC); ``now`` is passed in (tests pin
  it), except where the lifecycle stamps the wall clock (activity status changes).
* **Lazy sending**: methods taking ``now`` on campaigns and events first send the account's
  scheduled campaigns due at ``now`` (one ``sends`` event per Active member, status Sent).
* **Activities are all or nothing**: :meth:`Storage.apply_activity` applies every row and
  completes the activity in one transaction, or changes nothing; status changes follow
  :func:`~bulkops.wire.activity.next_status`.
* Methods may block on IO only inside their ``await``: they never block the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from bulkops.server.auth import Authenticator
from bulkops.server.datafile import ActivityRequest, ExportRequest
from bulkops.server.leases import Claim
from bulkops.server.records import ActivityRow, RowError
from bulkops.server.store import Account
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

__all__ = ["EventKeyset", "Storage"]

#: The keyset ``(time, id)`` of the previous page's last event, None for the first page.
EventKeyset = tuple[int, int] | None


class Storage(Protocol):
    """What the resources and the worker need of a database (see the module's contract)."""

    @property
    def data_dir(self) -> Path:
        """The directory for export files (``data_dir/exports``)."""
        ...

    @property
    def location(self) -> str:
        """Where the data lives, for logs (a path or a DSN without secrets)."""
        ...

    def close(self) -> None:
        """Release every connection (once serving has stopped)."""
        ...

    # -- accounts ------------------------------------------------------------------------

    async def check_credentials(
        self,
        authenticator: Authenticator,
        header: str | None,
        username: str,
        client: str = "",
    ) -> Account:
        """The account of ``username`` if ``header`` proves access (raises ``auth.Denied``).

        ``client`` is the client's address, for the failed-login throttle.
        """
        ...

    # -- lists and members ---------------------------------------------------------------

    async def list_page(self, account_id: int, after: int, limit: int) -> list[ContactList]:
        """User lists with ``id > after``, ascending, at most ``limit``."""
        ...

    async def get_list(self, account_id: int, list_id: int) -> ContactList | None:
        """One user list, or None."""
        ...

    async def write_seq(self, account_id: int) -> tuple[int, int]:
        """The account's write sequence and the clock (ms), read under the write lock."""
        ...

    @property
    def write_margin_ms(self) -> int:
        """How far (ms) a write committed after a :meth:`write_seq` reading may stamp its
        contacts before that reading's time: 0 when every writer shares the reading's clock,
        more when writers on other hosts share the database."""
        ...

    async def create_list(self, account_id: int, spec: ListInput, now: int) -> ContactList:
        """A new user list named ``spec.name`` (``Conflict`` when the name is taken)."""
        ...

    async def update_list(self, account_id: int, list_id: int, spec: ListInput, now: int) -> None:
        """Change the given attributes (``NotFound``, ``Conflict``)."""
        ...

    async def delete_list(self, account_id: int, list_id: int, now: int) -> None:
        """Delete a list; members left on none become Removed (``NotFound``)."""
        ...

    async def member_page(
        self, account_id: int, list_key: str, before: int | None, limit: int
    ) -> list[ContactListMember] | None:
        """Members with ``contact id < before``, newest first (None: no such list); a system
        list key (``active``, …) stands for the contacts with that status."""
        ...

    # -- contacts ------------------------------------------------------------------------

    async def contact_page(self, account_id: int, before: int | None, limit: int) -> list[Contact]:
        """Contacts with ``id < before``, newest first, summary view."""
        ...

    async def contacts_by_email(self, account_id: int, emails: Sequence[str]) -> list[Contact]:
        """Contacts whose address is one of ``emails`` (case-insensitive), newest first."""
        ...

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
        """Contacts updated at or after ``since`` with that status or on that list, keyset
        ``(last_update_time, id)`` ascending."""
        ...

    async def get_contact(self, account_id: int, contact_id: int) -> Contact | None:
        """One contact in the full view (fields and lists), or None."""
        ...

    async def create_contact(
        self,
        account_id: int,
        fields: dict[str, str],
        list_uris: Sequence[str],
        source: str,
        now: int,
    ) -> Contact:
        """A new Active contact on the lists (``Invalid`` list URI, ``Conflict`` email)."""
        ...

    async def update_contact(
        self, account_id: int, contact_id: int, data: ContactInput, source: str | None, now: int
    ) -> None:
        """Apply a PUT (``NotFound``, ``Conflict``, ``Invalid``, ``Forbidden``)."""
        ...

    async def opt_out_contact(self, account_id: int, contact_id: int, now: int) -> None:
        """Move a contact to Do Not Mail, off every list (``NotFound``)."""
        ...

    # -- campaigns (the methods taking ``now`` send what is due first) -------------------

    async def campaign_page(
        self, account_id: int, status: str | None, before: int | None, limit: int, *, now: int
    ) -> list[Campaign]:
        """Campaigns (summary view) with ids below ``before``, newest first."""
        ...

    async def get_campaign(self, account_id: int, campaign_id: int, *, now: int) -> Campaign | None:
        """The full campaign with counters, URLs, lists and senders; or None."""
        ...

    async def create_campaign(self, account_id: int, spec: CampaignInput, now: int) -> Campaign:
        """A new Draft from a checked request (``Invalid`` senders, lists or XHTML)."""
        ...

    async def update_campaign(
        self, account_id: int, campaign_id: int, spec: CampaignInput, now: int
    ) -> None:
        """Merge a checked request into a Draft (``NotFound``, ``Conflict``, ``Invalid``)."""
        ...

    async def delete_campaign(self, account_id: int, campaign_id: int, now: int) -> None:
        """Delete a Draft (``NotFound``, ``Conflict``)."""
        ...

    async def get_schedule(self, account_id: int, campaign_id: int, *, now: int) -> Schedule | None:
        """The campaign's schedule, None when not Scheduled (``NotFound``: no campaign)."""
        ...

    async def schedule_campaign(
        self, account_id: int, campaign_id: int, when: int, now: int
    ) -> Schedule:
        """Schedule a Draft for ``when`` (``NotFound``, ``Conflict``, ``Invalid``)."""
        ...

    async def unschedule_campaign(self, account_id: int, campaign_id: int, now: int) -> None:
        """A Scheduled campaign back to Draft (``NotFound``, ``Conflict`` when Running)."""
        ...

    # -- events (``since`` is the window's start) ----------------------------------------

    async def campaign_name(self, account_id: int, campaign_id: int) -> str | None:
        """The campaign's name, or None when the account has no such campaign."""
        ...

    async def contact_email(self, account_id: int, contact_id: int) -> str | None:
        """The contact's address, or None when the account has no such contact."""
        ...

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
        """Events of one kind of a campaign, newest first (None: no such campaign)."""
        ...

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
        """Click events of one tracked link, newest first (None: no such link)."""
        ...

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
        """Events of one kind of a contact, newest first (None: no such contact)."""
        ...

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
        """Per-campaign summaries of a contact's events, by descending campaign id."""
        ...

    # -- sender addresses ----------------------------------------------------------------

    async def email_address_page(
        self, account_id: int, after: int, limit: int
    ) -> list[AccountEmail]:
        """Addresses with ids above ``after``, ascending."""
        ...

    async def get_email_address(self, account_id: int, address_id: int) -> AccountEmail | None:
        """One address, or None."""
        ...

    # -- activities ----------------------------------------------------------------------

    async def create_activity(
        self, account_id: int, request: ActivityRequest, blob: bytes, max_queued: int | None
    ) -> ActivityRow:
        """A PENDING activity holding ``blob`` (``NotFound`` list, ``QueueFull``)."""
        ...

    async def activity_page(
        self,
        account_id: int,
        before: int | None,
        status: str | None,
        activity_type: str | None,
        cutoff: int,
    ) -> list[ActivityRow]:
        """A page and one of activities with ``seq < before``, newest first, without finished
        ones last changed before ``cutoff``."""
        ...

    async def activity_errors(self, activity_id: str) -> list[RowError]:
        """The row errors of an activity."""
        ...

    async def get_activity(
        self, account_id: int, activity_id: str, cutoff: int
    ) -> tuple[ActivityRow, list[RowError]] | None:
        """One activity and its errors, or None (also when expired before ``cutoff``)."""
        ...

    # -- the worker ----------------------------------------------------------------------

    async def recover_running(self) -> int:
        """RUNNING activities (left by a crash) back to QUEUED; how many."""
        ...

    async def take_next(self) -> tuple[str, int] | None:
        """Queue PENDING activities, start the oldest QUEUED: ``(id, account_id)`` or None."""
        ...

    async def load_request(self, activity_id: str) -> ActivityRequest:
        """The stored request of an activity (``ActivityCannotRun`` when unreadable)."""
        ...

    async def apply_activity(
        self,
        activity_id: str,
        account_id: int,
        request: ActivityRequest,
        before_commit: Callable[[str], None] | None = None,
    ) -> tuple[int, int]:
        """Apply an add/remove/clear activity and complete it, all or nothing:
        ``(TransactionCount, errors)`` (``ActivityCannotRun`` when a list is gone).
        ``before_commit`` (tests only) is called with the id before the commit."""
        ...

    async def write_export(
        self, account_id: int, activity_id: str, export: ExportRequest
    ) -> tuple[str, int]:
        """Write an export file atomically: ``(FileName, rows)``."""
        ...

    async def complete_export(self, activity_id: str, file_name: str, count: int) -> None:
        """Complete an export whose file is in place."""
        ...

    async def fail_activity(self, activity_id: str, owner: str | None = None) -> None:
        """A RUNNING activity to ERROR (``LeaseError`` when ``owner`` is given and does not
        hold its lease)."""
        ...

    async def purge_expired(self, cutoff_ms: int) -> int:
        """Delete finished activities last changed before ``cutoff_ms`` and their files."""
        ...

    async def checkpoint(self) -> None:
        """Housekeeping after an activity (SQLite: a passive WAL checkpoint)."""
        ...

    # -- leases: many workers on one database (bulkops.server.leases) ---------------------

    async def claim_activity(self, worker_id: str, now: int, lease_seconds: float) -> Claim | None:
        """Queue PENDING activities, then lease the oldest QUEUED one, or RUNNING one whose
        lease expired at or before ``now``, to ``worker_id`` for ``lease_seconds``; None when
        none. Atomic: two workers never claim the same activity (PostgreSQL: ``SELECT … FOR
        UPDATE SKIP LOCKED``, see :mod:`bulkops.server.activity_queries`)."""
        ...

    async def renew_lease(
        self, activity_id: str, worker_id: str, now: int, lease_seconds: float
    ) -> bool:
        """Extend the worker's lease to ``now + lease_seconds``; False when it holds it no more."""
        ...

    async def release_activity(self, activity_id: str, worker_id: str, now: int) -> bool:
        """Give back an unfinished activity the worker holds (QUEUED again); False if not held."""
        ...

    async def lease_owners(self) -> list[str]:
        """Workers named by the leases of RUNNING activities."""
        ...

    async def expire_leases(self, owners: Sequence[str]) -> int:
        """Make the leases of workers known to be dead claimable now; how many activities."""
        ...

    # -- throttles shared by every process (bulkops.server.throttle_queries) --------------

    async def take_token(self, key: str, now: int, rate: float, burst: float) -> bool:
        """Take a token from the bucket of ``key`` at ``now`` (ms): at most ``burst`` held,
        starting full, refilled at ``rate`` per second; whether there was one. Atomic."""
        ...

    async def count_request(self, username: str, day: int, quota: int) -> bool:
        """Count a request of account ``username`` on UTC ``day`` unless it has used
        ``quota`` that day (then False); a name of no account is always True. Atomic."""
        ...
