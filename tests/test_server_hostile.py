"""Hostile requests against a real ``bulkops serve`` process: cheap 400/413/415 answers, no
500, the server keeps serving, and its resident memory stays under 200 MB.

"Cheap" is the server's CPU time per request (``utime + stime`` of ``/proc/PID/stat``), which
other processes on a busy machine do not inflate, with a wide margin: a refusal costs a few
milliseconds, expanding entities or parsing 50 MB would cost seconds. The 50 MB bodies are
also checked by bytes: the server answers before the client could send them all.

The server runs as a subprocess (module-scoped) so its memory can be read from
``/proc/PID/status``; requests are sent with a sync httpx client, and the 50 MB body over a
raw socket (the server answers 413 from the headers, before the client could finish
sending, so a normal client would see a broken pipe instead of the answer).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkops.server.app import create_app
from tests.pgkit import BOTH_STORES, fresh_database
from tests.serverkit import HANG_GUARD, basic, make_state
from tests.test_server_lists import ATOM, CTCT, contact_body, list_body, list_uri

with warnings.catch_warnings():  # starlette suggests httpx2 for its TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ATOM_XML = "application/atom+xml"
RSS_LIMIT_KB = 200 * 1024
BIG = 50 * 1024 * 1024
CPU_LIMIT = 0.5  # server CPU seconds a refused request may cost (it costs a few ms)


@attrs.frozen
class Served:
    """A ``bulkops serve`` subprocess and the lines it has logged so far."""

    origin: str
    proc: subprocess.Popen[bytes]
    lines: list[str]

    def url(self, path: str) -> str:
        """An absolute URL on the demo account."""
        return f"{self.origin}/ws/customers/demo/{path}"

    def log(self) -> str:
        """Everything logged so far."""
        return "".join(self.lines)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the server process, in kB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
        return int(found["VmRSS"]), int(found["VmHWM"])


@pytest.fixture(scope="module", params=BOTH_STORES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """``python -m bulkops serve --port 0`` with the demo account, for the whole module, on
    each store (PostgreSQL's URL through ``BULKOPS_DB``, never argv)."""
    home = tmp_path_factory.mktemp("hostile")
    env = {**os.environ, "BULKOPS_SERVE_ACCOUNTS": "demo:demo-password:demo-key"}
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            env["BULKOPS_DB"] = stack.enter_context(fresh_database())
            db_args: list[str] = []
        else:
            env.pop("BULKOPS_DB", None)
            db_args = ["--db", str(home / "s.db")]
        yield from _serve_process(env, db_args)


def _serve_process(env: dict[str, str], db_args: list[str]) -> Iterator[Served]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkops", "serve", "--port", "0", *db_args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[str] = []
    started = threading.Event()

    def drain() -> None:  # keeps the pipe empty so logging never blocks the server
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode("utf-8", "replace"))
            if "serving the API at" in lines[-1]:
                started.set()
        started.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert started.wait(HANG_GUARD), "server did not start"
        found = re.search(r"serving the API at (http://\S+?)/ws/", "".join(lines))
        assert found is not None, "".join(lines)
        served = Served(origin=found.group(1), proc=proc, lines=lines)
        # Warm up: the first requests import and build what later ones reuse, which is not
        # the cost the CPU limits below are about.
        with httpx.Client(headers={"Authorization": basic()}, timeout=HANG_GUARD) as client:
            client.get(served.url(""))
            client.post(served.url("contacts"), content=b"<", headers={"Content-Type": ATOM_XML})
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_database_password_never_reaches_the_log(served: Served) -> None:
    """The server's log names its database without the password (PostgreSQL's URL)."""
    password = urlsplit(os.environ.get("BULKOPS_TEST_POSTGRES", "")).password
    log = "".join(served.lines)
    assert "serving the API at" in log
    assert not password or password not in log


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[httpx.Client]:
    """A sync client with the demo credentials."""
    with httpx.Client(headers={"Authorization": basic()}, timeout=HANG_GUARD) as client:
        yield client


@pytest.fixture(scope="module")
def list_id(served: Served, http: httpx.Client) -> int:
    """A list of the demo account."""
    response = http.post(
        served.url("lists"), content=list_body("Hostile"), headers={"Content-Type": ATOM_XML}
    )
    assert response.status_code == 201, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def entry_with(payload: bytes) -> bytes:
    """An Atom entry whose content holds ``payload``."""
    return (
        (
            f'<entry xmlns="{ATOM}"><id>data:,</id><title/><author/><updated>2010-03-02</updated>'
            '<content type="application/vnd.ctct+xml">'
        ).encode()
        + payload
        + b"</content></entry>"
    )


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
""" + entry_with(f'<Contact xmlns="{CTCT}"><EmailAddress>&lol9;</EmailAddress></Contact>'.encode())

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE entry [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
""" + entry_with(f'<Contact xmlns="{CTCT}"><Note>&xxe;</Note></Contact>'.encode())

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE entry SYSTEM "http://127.0.0.1:9/evil.dtd">
""" + entry_with(b"")

DEEP = entry_with(b"<a>" * 10_000 + b"</a>" * 10_000)
INVALID_UTF8 = entry_with(
    f'<Contact xmlns="{CTCT}"><EmailAddress>a@example.com</EmailAddress>'.encode()
    + b"<Note>\xff\xfe\xc3\x28</Note></Contact>"
)
UTF16 = entry_with(b"").decode().encode("utf-16")

HOSTILE: dict[str, tuple[Callable[[int], bytes], int]] = {
    "billion laughs": (lambda _l: BILLION_LAUGHS, 400),
    "external entity": (lambda _l: EXTERNAL_ENTITY, 400),
    "external dtd": (lambda _l: EXTERNAL_DTD, 400),
    "10,000-deep nesting": (lambda _l: DEEP, 400),
    "invalid UTF-8": (lambda _l: INVALID_UTF8, 400),
    "UTF-16": (lambda _l: UTF16, 400),
    "just over the size limit": (lambda _l: b" " * (1024 * 1024 + 1), 413),
    "junk": (lambda _l: b"\x00\x01\x02 not xml", 400),
    "an HTML page": (lambda _l: b"<html><body>403 Forbidden<br></body></html>", 400),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("target", ["POST contacts", "POST lists", "PUT contacts/1"])
def test_hostile_bodies_are_refused_cheaply(
    served: Served, http: httpx.Client, list_id: int, case: str, target: str
) -> None:
    """Entities, DTDs, depth, encodings, size, junk: 400 or 413, little server CPU time, a
    short text body."""
    make, expected = HOSTILE[case]
    method, path = target.split(" ")
    if path == "contacts/1":
        http.post(
            served.url("contacts"),
            content=contact_body("target@example.com", [list_uri(list_id)]),
            headers={"Content-Type": ATOM_XML},
        )
    body = make(list_id)
    cpu = served.cpu_seconds()
    response = http.request(
        method, served.url(path), content=body, headers={"Content-Type": ATOM_XML}
    )
    assert response.status_code == expected, response.text
    assert served.cpu_seconds() - cpu < CPU_LIMIT
    assert response.headers["content-type"].startswith("text/plain")
    assert len(response.content) < 1000
    assert b"root:" not in response.content


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
def test_a_wrong_content_type_is_415_before_the_body_is_read(
    served: Served, http: httpx.Client, list_id: int, content_type: str
) -> None:
    """415 at little server CPU time, whatever the body."""
    cpu = served.cpu_seconds()
    response = http.post(
        served.url("contacts"),
        content=contact_body("typed@example.com", [list_uri(list_id)]),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 415
    assert served.cpu_seconds() - cpu < CPU_LIMIT


def _send_big(served: Served, *, chunked: bool) -> tuple[int, int]:
    """POST 50 MB of '<' to /contacts over a raw socket; (status, bytes sent before the
    answer came)."""
    host, port = served.origin.removeprefix("http://").rsplit(":", 1)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BIG}"
    head = (
        f"POST /ws/customers/demo/contacts HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {basic()}\r\nContent-Type: {ATOM_XML}\r\n{framing}\r\n\r\n"
    ).encode()
    piece = b"<" * 65536
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece
    with socket.create_connection((host, int(port)), timeout=HANG_GUARD) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        started = time.monotonic()
        sent, answer, writing = 0, b"", True
        while b"\r\n\r\n" not in answer:
            assert time.monotonic() - started < HANG_GUARD, "no answer"  # a hang guard, not a limit
            want_write = [sock] if writing and sent < BIG else []
            readable, writable, _ = select.select([sock], want_write, [], 1.0)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break  # whatever answer there was has been read
                if not data:
                    break
                answer += data
            elif writable:
                try:
                    sent += sock.send(frame)
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    writing = False  # closed by the server: its answer may still be unread
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent


@pytest.mark.parametrize("chunked", [False, True])
def test_a_50_mb_body_is_413_without_being_read(served: Served, chunked: bool) -> None:
    """Declared or streamed, 50 MB is refused at the 1 MB limit, without reading it all: the
    answer comes before the client could send half of it (1 MB read plus the socket buffers),
    at little server CPU time."""
    cpu = served.cpu_seconds()
    status, sent = _send_big(served, chunked=chunked)
    assert status == 413
    assert sent < BIG // 2
    assert served.cpu_seconds() - cpu < CPU_LIMIT


def test_the_server_keeps_serving_in_bounded_memory(
    served: Served, http: httpx.Client, list_id: int
) -> None:
    """After every hostile request above (and more of them) the server answers normally,
    logged no 500, and its peak resident memory is under 200 MB."""
    for _ in range(3):
        for make, _expected in HOSTILE.values():
            http.post(
                served.url("contacts"), content=make(list_id), headers={"Content-Type": ATOM_XML}
            )
        _send_big(served, chunked=False)
        _send_big(served, chunked=True)
    assert http.get(served.url("")).status_code == 200
    created = http.post(
        served.url("contacts"),
        content=contact_body("survivor@example.com", [list_uri(list_id)]),
        headers={"Content-Type": ATOM_XML},
    )
    assert created.status_code == 201, created.text
    rss, peak = served.memory_kb()
    assert rss < RSS_LIMIT_KB
    assert peak < RSS_LIMIT_KB
    log = served.log()
    assert " 500 " not in log, log[log.find(" 500 ") - 3000 :]
    assert "unhandled error" not in log, log[log.find("unhandled error") :]
    assert "demo-password" not in log
    assert "demo-key" not in log


# -- no input gives a 500 (in-process, hypothesis) ----------------------------------------


@pytest.fixture(scope="module", params=BOTH_STORES)
def sync_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The app in-process through starlette's TestClient on trio, with list 1, on each store."""
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(fresh_database()) if request.param == "postgres" else None
        yield from _sync_client(tmp_path_factory, db)


def _sync_client(tmp_path_factory: pytest.TempPathFactory, db: str | None) -> Iterator[TestClient]:
    state = make_state(tmp_path_factory.mktemp("fuzz"), db=db)
    with TestClient(
        create_app(state), backend="trio", base_url="http://testserver/ws/customers/demo/"
    ) as client:
        client.headers["Authorization"] = basic()
        response = client.post(
            "lists", content=list_body("Fuzz"), headers={"Content-Type": ATOM_XML}
        )
        assert response.status_code == 201
        yield client
    state.store.close()


_TEMPLATES = [
    contact_body("fuzz@example.com", [list_uri(1)], FirstName="F", StateCode="MA"),
    list_body("Fuzzed", extra="<DisplayOnSignup>Yes</DisplayOnSignup>"),
]


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid request body with a slice replaced by arbitrary bytes."""
    body = draw(st.sampled_from(_TEMPLATES))
    start = draw(st.integers(0, len(body)))
    end = draw(st.integers(start, min(len(body), start + 40)))
    return body[:start] + draw(st.binary(max_size=40)) + body[end:]


@settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(mangled(), st.binary(max_size=300)),
    target=st.sampled_from(["lists", "contacts", "lists/1", "contacts/1"]),
)
def test_no_body_gives_a_500(sync_client: TestClient, body: bytes, target: str) -> None:
    """Mangled and random bodies on every writable resource: never a 5xx."""
    method = "POST" if target in ("lists", "contacts") else "PUT"
    response = sync_client.request(method, target, content=body, headers={"Content-Type": ATOM_XML})
    assert response.status_code < 500, response.text


@pytest.mark.parametrize(
    "target",
    [
        "contacts?email=%00",
        "contacts?email=a%00@example.org",
        "contacts?updatedsince=%00",
        "lists?next=%00",
        "lists/1/members?next=a%00",
        "lists/%00",
        "activities/%00",
        "/ws/customers/%00/lists",
        "/ws/customers/de%00mo/contacts",
    ],
)
def test_a_nul_in_the_uri_is_a_400_on_every_store(sync_client: TestClient, target: str) -> None:
    """PostgreSQL cannot hold a NUL in text: a NUL anywhere in the path or the query is
    refused up front (400), the same on every store, instead of reaching a query."""
    response = sync_client.get(target)
    assert response.status_code == 400, response.text
    assert "NUL" in response.text


def test_a_nul_in_the_basic_username_is_a_401(sync_client: TestClient) -> None:
    """No account name holds a NUL: unknown user (401), not a query PostgreSQL refuses."""
    credentials = base64.b64encode(b"key%de\x00mo:secret").decode("ascii")
    response = sync_client.get("lists", headers={"Authorization": f"Basic {credentials}"})
    assert response.status_code == 401, response.text


@settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(["contacts", "lists", "lists/1/members", "lists/active/members"]),
    params=st.lists(
        st.tuples(
            st.sampled_from(["email", "next", "updatedsince", "listtype", "listid", "x"]),
            st.text(max_size=30),
        ),
        max_size=6,
    ),
)
def test_no_query_gives_a_500(
    sync_client: TestClient, path: str, params: list[tuple[str, str]]
) -> None:
    """Arbitrary query parameters on every feed: never a 5xx."""
    response = sync_client.get(path, params=params)
    assert response.status_code < 500, response.text
