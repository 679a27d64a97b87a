"""Acceptance 1: a client written for the retired service works unchanged against the server.

:class:`LegacyClient` is written the way the era's libraries were (the official Python
``CTCTConnection``, the PHP ``ConstantContact`` class): blocking HTTP, XML picked out with
namespace-qualified XPath, ``Basic {APIKEY}%{user}`` credentials offered only after the
server's 401 challenge (as urllib2's ``HTTPBasicAuthHandler`` did), ``Content-Type: text/xml``
sent on every request that has no body, ids taken from the last path segment of
``Location``/``<id>``, single resources changed by GET → edit → PUT of the whole entry, and
paged feeds walked by following ``rel="next"`` hrefs verbatim (root-relative ones prefixed
with the service origin). It runs in a worker thread against the real server on loopback.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

import httpx
import pytest
import trio
from lxml import etree

from bulkops.server.app import ApiState
from bulkops.server.seed import seed_contacts
from tests.pgkit import BOTH_STORES
from tests.serverkit import API_KEY, HANG_GUARD, PASSWORD, USER, start_server

STORES = BOTH_STORES

ATOM_NS = "http://www.w3.org/2005/Atom"
CTCT_NS = "http://ws.constantcontact.com/ns/1.0/"
NS = {"atom": ATOM_NS, "cc": CTCT_NS}


class LegacyError(Exception):
    """What the era's libraries raised: the status and the raw body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status


class LegacyClient:
    """A 2010-style Constant Contact v1 client (sync, lxml, XPath)."""

    def __init__(self, origin: str, username: str, password: str, api_key: str) -> None:
        self.origin = origin
        self.username = username
        self.base = f"{origin}/ws/customers/{username}"
        self._credentials = "Basic " + base64.b64encode(
            f"{api_key}%{username}:{password}".encode()
        ).decode("ascii")
        self._authorized = False
        self.challenges = 0
        self.http = httpx.Client(timeout=HANG_GUARD, headers={"Accept": "application/atom+xml"})

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # -- transport ------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: bytes | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/atom+xml" if body else "text/xml"}
        if self._authorized:
            headers["Authorization"] = self._credentials
        response = self.http.request(method, url, content=body, headers=headers)
        if response.status_code == 401 and not self._authorized:
            challenge = response.headers.get("WWW-Authenticate", "")
            if not challenge.startswith("Basic"):
                raise LegacyError(401, "no Basic challenge")
            self.challenges += 1
            self._authorized = True
            headers["Authorization"] = self._credentials
            response = self.http.request(method, url, content=body, headers=headers)
        if response.status_code >= 400:
            raise LegacyError(response.status_code, response.text)
        return response

    def _absolute(self, href: str) -> str:
        if href.startswith("/"):
            return self.origin + href
        if href.startswith("http"):
            return href
        return f"{self.base}/{href}"

    def _feed(self, url: str) -> list[etree._Element]:
        """Every entry of a paged feed, following next links verbatim."""
        found: list[etree._Element] = []
        pages = 0
        while url:
            root = etree.fromstring(self._request("GET", url).content)
            found.extend(root.findall("atom:entry", NS))
            pages += 1
            assert pages < 1000
            links = root.xpath("atom:link[@rel='next']/@href", namespaces=NS)
            url = self._absolute(links[0]) if links else ""
        return found

    @staticmethod
    def _id(uri: str) -> str:
        return uri.rstrip("/").rsplit("/", 1)[-1]

    # -- the API --------------------------------------------------------------------------

    def verify_credentials(self) -> bool:
        """GET the service document (S5 ``verify_credentials``)."""
        root = etree.fromstring(self._request("GET", self.base + "/").content)
        return bool(root.xpath("//*[local-name()='collection']"))

    def get_lists(self) -> list[tuple[str, str]]:
        """(id, name) of every list, system lists included."""
        return [
            (
                self._id(entry.findtext("atom:id", namespaces=NS)),
                entry.findtext("atom:content/cc:ContactList/cc:Name", namespaces=NS),
            )
            for entry in self._feed(self.base + "/lists")
        ]

    def create_list(self, name: str) -> str:
        """POST a list, as S1's ``addList`` wrote it; return the id from Location."""
        body = (
            f'<entry xmlns="{ATOM_NS}"><id>data:,</id><title/><author/>'
            "<updated>2010-03-02T00:00:00Z</updated>"
            '<content type="application/vnd.ctct+xml">'
            f'<ContactList xmlns="{CTCT_NS}"><OptInDefault>false</OptInDefault>'
            f"<Name>{name}</Name><SortOrder>99</SortOrder></ContactList></content></entry>"
        ).encode()
        response = self._request("POST", self.base + "/lists", body)
        assert response.status_code == 201
        return self._id(response.headers["Location"])

    def rename_list(self, list_id: str, name: str) -> None:
        """GET the entry, change Name, PUT the whole entry back."""
        url = f"{self.base}/lists/{list_id}"
        root = etree.fromstring(self._request("GET", url).content)
        root.find("atom:content/cc:ContactList/cc:Name", NS).text = name
        response = self._request("PUT", url, etree.tostring(root, xml_declaration=True))
        assert response.status_code == 204

    def delete_list(self, list_id: str) -> None:
        """DELETE a list."""
        assert self._request("DELETE", f"{self.base}/lists/{list_id}").status_code == 204

    def create_contact(self, email: str, first: str, last: str, list_ids: list[str]) -> str:
        """POST a contact with every element present (empty when unset), as the docs' sample
        clients did; return the id from Location."""
        lists = "".join(
            f'<ContactList id="http://api.constantcontact.com/ws/customers/'
            f'{self.username}/lists/{n}" />'
            for n in list_ids
        )
        body = (
            f'<entry xmlns="{ATOM_NS}"><title type="text"> </title>'
            "<updated>2010-03-02T15:04:05.000Z</updated><author></author><id>data:,none</id>"
            '<summary type="text">Contact</summary>'
            '<content type="application/vnd.ctct+xml">'
            f'<Contact xmlns="{CTCT_NS}"><Status></Status><EmailAddress>{email}</EmailAddress>'
            f"<EmailType></EmailType><Name></Name><FirstName>{first}</FirstName>"
            f"<MiddleName></MiddleName><LastName>{last}</LastName><JobTitle></JobTitle>"
            "<CompanyName></CompanyName><HomePhone></HomePhone><WorkPhone></WorkPhone>"
            "<Addr1></Addr1><City></City><StateCode></StateCode><PostalCode></PostalCode>"
            "<Note></Note><CustomField1></CustomField1>"
            f"<OptInSource>ACTION_BY_CUSTOMER</OptInSource><ContactLists>{lists}</ContactLists>"
            "</Contact></content></entry>"
        ).encode()
        response = self._request("POST", self.base + "/contacts", body)
        assert response.status_code == 201
        return self._id(response.headers["Location"])

    def search(self, email: str) -> list[dict[str, str]]:
        """?email= search (lower-cased and URL-encoded, as S1's change log says)."""
        entries = self._feed(f"{self.base}/contacts?email={quote(email.lower())}")
        return [
            {
                "id": self._id(entry.findtext("atom:id", namespaces=NS)),
                "status": entry.findtext(".//cc:Status", namespaces=NS),
                "name": entry.findtext(".//cc:Name", namespaces=NS),
            }
            for entry in entries
        ]

    def get_contact(self, contact_id: str) -> dict[str, object]:
        """The fields of one contact, and its list ids."""
        root = etree.fromstring(self._request("GET", f"{self.base}/contacts/{contact_id}").content)
        contact = root.find("atom:content/cc:Contact", NS)
        fields: dict[str, object] = {
            etree.QName(child).localname: child.text or "" for child in contact if len(child) == 0
        }
        fields["lists"] = [
            self._id(ref.get("id")) for ref in contact.findall("cc:ContactLists/cc:ContactList", NS)
        ]
        return fields

    def update_contact(
        self, contact_id: str, *, lists: list[str] | None = None, **fields: str
    ) -> None:
        """GET, edit elements (and ContactLists), PUT the whole entry back."""
        url = f"{self.base}/contacts/{contact_id}"
        root = etree.fromstring(self._request("GET", url).content)
        contact = root.find("atom:content/cc:Contact", NS)
        for name, value in fields.items():
            contact.find(f"cc:{name}", NS).text = value
        if lists is not None:
            container = contact.find("cc:ContactLists", NS)
            for ref in list(container):
                container.remove(ref)
            for list_id in lists:
                etree.SubElement(
                    container,
                    f"{{{CTCT_NS}}}ContactList",
                    id=f"{self.base}/lists/{list_id}",
                )
        response = self._request("PUT", url, etree.tostring(root))
        assert response.status_code == 204

    def opt_out(self, contact_id: str) -> None:
        """DELETE a contact (moves it to Do Not Mail)."""
        assert self._request("DELETE", f"{self.base}/contacts/{contact_id}").status_code == 204

    def members(self, list_id: str) -> list[tuple[str, str]]:
        """(contact id, email) of every member of a list, all pages."""
        return [
            (
                self._id(entry.findtext("atom:id", namespaces=NS)),
                entry.findtext(".//cc:EmailAddress", namespaces=NS),
            )
            for entry in self._feed(f"{self.base}/lists/{list_id}/members")
        ]

    def all_contacts(self) -> list[str]:
        """Ids of every contact, all pages."""
        return [
            self._id(entry.findtext("atom:id", namespaces=NS))
            for entry in self._feed(self.base + "/contacts")
        ]


def scenario(client: LegacyClient, state: ApiState) -> None:
    """The whole scenario of acceptance 1, run synchronously."""
    assert client.verify_credentials()
    assert client.challenges == 1  # credentials were offered after the 401 challenge

    # Lists: create, rename, delete.
    assert [name for _id, name in client.get_lists()] == ["Active", "Do Not Mail", "Removed"]
    news = client.create_list("Newsletter")
    promos = client.create_list("Promotions")
    scratch = client.create_list("Scratch")
    client.rename_list(promos, "Spring Promotions")
    client.delete_list(scratch)
    assert client.get_lists()[3:] == [(news, "Newsletter"), (promos, "Spring Promotions")]
    with pytest.raises(LegacyError) as duplicate:
        client.create_list("Newsletter")
    assert duplicate.value.status == 409

    # Contacts: create, search, update, opt out.
    pat = client.create_contact("Pat.Lee@Example.org", "Pat", "Lee", [news])
    sam = client.create_contact("sam@example.org", "Sam", "", [news, promos])
    found = client.search("PAT.LEE@example.org")
    assert found == [{"id": pat, "status": "Active", "name": "Lee, Pat"}]
    assert client.search("nobody@example.org") == []
    client.update_contact(pat, lists=[news, promos], City="Boston", JobTitle="Florist")
    detail = client.get_contact(pat)
    assert (detail["City"], detail["JobTitle"], detail["lists"]) == (
        "Boston",
        "Florist",
        [news, promos],
    )
    client.update_contact(sam, lists=[])
    assert client.search("sam@example.org")[0]["status"] == "Removed"
    client.opt_out(pat)
    assert client.search("pat.lee@example.org")[0]["status"] == "Do Not Mail"
    assert client.get_contact(pat)["lists"] == []
    with pytest.raises(LegacyError) as refused:
        client.update_contact(pat, lists=[news])  # the customer cannot re-subscribe
    assert refused.value.status == 403

    # Paged feeds: 180 more members, walked by following next links.
    db = state.store.connection()
    account_id = db.execute("SELECT id FROM account WHERE username = ?", (USER,)).fetchone()[0]
    seed_contacts(db, account_id, 180, lists=[int(news)], seed=42)
    members = client.members(news)
    (expected,) = db.execute("SELECT member_count FROM list WHERE id = ?", (int(news),)).fetchone()
    assert len(members) == expected > 150
    assert len({cid for cid, _email in members}) == len(members)
    assert [int(cid) for cid, _email in members] == sorted(
        (int(cid) for cid, _email in members), reverse=True
    )
    everyone = client.all_contacts()
    assert len(everyone) == len(set(everyone)) == 182


async def test_a_legacy_client_runs_the_whole_scenario(
    server_state: ApiState, nursery: trio.Nursery
) -> None:
    """Credentials via the 401 challenge; lists created, renamed, deleted; contacts created,
    searched, updated, opted out; members and contacts feeds walked by next links."""
    running = await start_server(nursery, server_state)
    client = LegacyClient(running.origin, USER, PASSWORD, API_KEY)
    try:
        with trio.fail_after(HANG_GUARD):
            await trio.to_thread.run_sync(scenario, client, server_state)
    finally:
        client.close()
