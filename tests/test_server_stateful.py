"""A hypothesis state machine of lists and contacts against a small in-memory model.

Random sequences of list creation, renaming and deletion, and of contact creation, list
changes, field updates, opt-outs and re-subscriptions run against the real app (in-process,
through starlette's TestClient on trio); after every step the lists feed (names, member
counts), the contacts feed (addresses, statuses) and the members feeds must agree with the
model, which applies the status rules of the spec (§6) in a dozen lines.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from pathlib import Path

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bulkops.server.app import ApiState, create_app
from bulkops.wire.atom.feeds import parse_feed
from bulkops.wire.model import Contact, ContactList, ContactListMember
from tests.pgkit import fresh_database, require_postgres
from tests.serverkit import basic, make_state
from tests.test_server_lists import contact_body, list_body, list_uri

with warnings.catch_warnings():  # starlette suggests httpx2 for its TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ATOM_XML = {"Content-Type": "application/atom+xml"}
SYSTEM_NAMES = {"active", "do not mail", "removed"}

names = st.sampled_from(["News", "news", "Clients", "VIP", "Active", "Local Shop", "Ünï"])
emails = st.sampled_from(
    ["ann@example.com", "Ann@Example.com", "bob@example.org", "cy@example.net", "dee@example.io"]
)
sources = st.sampled_from(["ACTION_BY_CUSTOMER", "ACTION_BY_CONTACT", None])


@attrs.define
class ModelContact:
    """What the model knows of one contact."""

    id: int
    email: str
    status: str = "Active"
    lists: set[int] = attrs.field(factory=set)
    city: str = ""


class ListsAndContacts(RuleBasedStateMachine):
    """Lists and contacts, against the model."""

    lists_bundle = Bundle("lists")
    contacts_bundle = Bundle("contacts")

    #: None: SQLite; "postgres": a fresh PostgreSQL database per example.
    store: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="bulkops-stateful-"))
        self._databases = contextlib.ExitStack()
        db = self._databases.enter_context(fresh_database()) if self.store else None
        self.state: ApiState = make_state(self.tmp, db=db)
        self.client = TestClient(
            create_app(self.state),
            backend="trio",
            base_url="http://testserver/ws/customers/demo/",
            headers={"Authorization": basic()},
        )
        self.client.__enter__()
        self.lists: dict[int, str] = {}
        self.contacts: dict[str, ModelContact] = {}

    def teardown(self) -> None:
        """Stop the client, close the store, remove the database."""
        self.client.__exit__(None, None, None)
        self.state.store.close()
        self._databases.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the model's rules ----------------------------------------------------------------

    def _taken(self, name: str, other_than: int | None = None) -> bool:
        folded = name.casefold()
        return folded in SYSTEM_NAMES or any(
            existing.casefold() == folded
            for lid, existing in self.lists.items()
            if lid != other_than
        )

    def _contact(self, contact_id: int) -> ModelContact:
        return next(c for c in self.contacts.values() if c.id == contact_id)

    # -- lists ----------------------------------------------------------------------------

    @rule(target=lists_bundle, name=names)
    def create_list(self, name: str) -> int:
        """POST /lists: 201, or 409 for a taken name (any case, or a system list's)."""
        response = self.client.post("lists", content=list_body(name), headers=ATOM_XML)
        if self._taken(name):
            assert response.status_code == 409, response.text
            return -1
        assert response.status_code == 201, response.text
        list_id = int(response.headers["location"].rsplit("/", 1)[1])
        self.lists[list_id] = name
        return list_id

    @rule(list_id=lists_bundle, name=names)
    def rename_list(self, list_id: int, name: str) -> None:
        """PUT /lists/{id} with a Name: 204, 404 for a gone list, 409 for a taken name."""
        response = self.client.put(f"lists/{list_id}", content=list_body(name), headers=ATOM_XML)
        if list_id not in self.lists:
            assert response.status_code == 404
        elif self._taken(name, other_than=list_id):
            assert response.status_code == 409
        else:
            assert response.status_code == 204, response.text
            self.lists[list_id] = name

    @rule(list_id=consumes(lists_bundle))
    def delete_list(self, list_id: int) -> None:
        """DELETE /lists/{id}: members on no other list become Removed."""
        response = self.client.delete(f"lists/{list_id}")
        if list_id not in self.lists:
            assert response.status_code == 404
            return
        assert response.status_code == 204
        del self.lists[list_id]
        for contact in self.contacts.values():
            if list_id in contact.lists:
                contact.lists.discard(list_id)
                if not contact.lists and contact.status == "Active":
                    contact.status = "Removed"

    # -- contacts -------------------------------------------------------------------------

    @rule(
        target=contacts_bundle,
        email=emails,
        picks=st.lists(st.integers(0, 5), max_size=3),
        source=sources,
    )
    def create_contact(self, email: str, picks: list[int], source: str | None) -> int:
        """POST /contacts: 400 without a (live) list, 409 for a known address, else 201."""
        known = sorted(self.lists)
        chosen = {known[p % len(known)] for p in picks} if known else set()
        body = contact_body(email, [list_uri(n) for n in sorted(chosen)], source=source)
        response = self.client.post("contacts", content=body, headers=ATOM_XML)
        if not chosen:
            assert response.status_code == 400
            return -1
        if email.lower() in self.contacts:
            assert response.status_code == 409
            return self.contacts[email.lower()].id
        assert response.status_code == 201, response.text
        contact_id = int(response.headers["location"].rsplit("/", 1)[1])
        self.contacts[email.lower()] = ModelContact(id=contact_id, email=email, lists=chosen)
        return contact_id

    @precondition(lambda self: bool(self.contacts))
    @rule(
        contact_id=contacts_bundle,
        picks=st.lists(st.integers(0, 5), max_size=3),
        source=sources,
    )
    def put_lists(self, contact_id: int, picks: list[int], source: str | None) -> None:
        """PUT with ContactLists: authoritative; Do Not Mail needs ACTION_BY_CONTACT."""
        if contact_id < 0:
            return
        known = sorted(self.lists)
        chosen = {known[p % len(known)] for p in picks} if known else set()
        body = contact_body(None, [list_uri(n) for n in sorted(chosen)], source=source)
        response = self.client.put(f"contacts/{contact_id}", content=body, headers=ATOM_XML)
        contact = self._contact(contact_id)
        if contact.status == "Do Not Mail" and chosen and source != "ACTION_BY_CONTACT":
            assert response.status_code == 403, response.text
            return
        assert response.status_code == 204, response.text
        contact.lists = chosen
        if contact.status != "Do Not Mail" or chosen:
            contact.status = "Active" if chosen else "Removed"

    @precondition(lambda self: bool(self.contacts))
    @rule(contact_id=contacts_bundle, city=st.sampled_from(["Oslo", "Lima", ""]))
    def put_city(self, contact_id: int, city: str) -> None:
        """PUT without ContactLists: the field changes (empty: not given), lists stay."""
        if contact_id < 0:
            return
        body = contact_body(None, None, source=None, City=city)
        response = self.client.put(f"contacts/{contact_id}", content=body, headers=ATOM_XML)
        assert response.status_code == 204, response.text
        if city:
            self._contact(contact_id).city = city

    @precondition(lambda self: bool(self.contacts))
    @rule(contact_id=contacts_bundle)
    def opt_out(self, contact_id: int) -> None:
        """DELETE /contacts/{id}: Do Not Mail, on no list."""
        if contact_id < 0:
            return
        response = self.client.delete(f"contacts/{contact_id}")
        assert response.status_code == 204
        contact = self._contact(contact_id)
        contact.status, contact.lists = "Do Not Mail", set()

    @precondition(lambda self: bool(self.contacts))
    @rule(email=emails)
    def search(self, email: str) -> None:
        """?email= finds the model's contact (any case) with its status, or nothing."""
        response = self.client.get("contacts", params={"email": email.upper()})
        assert response.status_code == 200
        found = parse_feed(response.content).entries
        expected = self.contacts.get(email.lower())
        if expected is None:
            assert found == []
        else:
            assert len(found) == 1
            entry = found[0]
            assert isinstance(entry, Contact)
            assert (int(entry.id), entry.status) == (expected.id, expected.status)
            assert entry.fields["EmailAddress"] == expected.email

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def lists_feed_agrees(self) -> None:
        """User lists by id with the model's names and member counts."""
        feed = parse_feed(self.client.get("lists").content)
        user = [e for e in feed.entries if isinstance(e, ContactList)][3:]
        assert [(int(e.id), e.name) for e in user] == sorted(self.lists.items())
        counts = {lid: 0 for lid in self.lists}
        for contact in self.contacts.values():
            for lid in contact.lists:
                counts[lid] += 1
        assert {int(e.id): e.contact_count for e in user} == counts

    @invariant()
    def contacts_feed_agrees(self) -> None:
        """Every contact, newest first, with the model's status."""
        feed = parse_feed(self.client.get("contacts").content)
        shown = [(int(e.id), e.status) for e in feed.entries if isinstance(e, Contact)]
        expected = sorted(((c.id, c.status) for c in self.contacts.values()), reverse=True)
        assert shown == expected

    @invariant()
    def do_not_mail_members_agree(self) -> None:
        """The do-not-mail system list holds exactly the opted-out contacts."""
        feed = parse_feed(self.client.get("lists/do-not-mail/members").content)
        shown = {int(e.contact_id) for e in feed.entries if isinstance(e, ContactListMember)}
        assert shown == {c.id for c in self.contacts.values() if c.status == "Do Not Mail"}


ListsAndContacts.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_lists_and_contacts = ListsAndContacts.TestCase


class ListsAndContactsOnPostgres(ListsAndContacts):
    """The same machine on the PostgreSQL store."""

    store = "postgres"


def test_lists_and_contacts_on_postgres() -> None:
    """The lists-and-contacts machine against the model, on PostgreSQL."""
    require_postgres()
    run_state_machine_as_test(
        ListsAndContactsOnPostgres, settings=ListsAndContacts.TestCase.settings
    )
