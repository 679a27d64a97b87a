"""parse_xml against hostile and broken input: every case is an XmlError, and a cheap one.

"Cheap" is counted in this thread's CPU time (``time.thread_time``), which other processes on
a busy machine do not inflate; the limits are hundreds of times what the checks cost (tens of
microseconds to half a millisecond), and far below what expanding entities, reading 50 MB or
building 10,000 levels would take.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from lxml import etree

from bulkops.errors import XmlError
from bulkops.wire.atom.reading import local_name
from bulkops.wire.atom.syntax import hardened_parser, parse_xml

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
<entry xmlns="http://www.w3.org/2005/Atom"><title>&lol9;</title></entry>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE entry [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<entry xmlns="http://www.w3.org/2005/Atom"><title>&xxe;</title></entry>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE entry SYSTEM "http://127.0.0.1:9/evil.dtd">
<entry xmlns="http://www.w3.org/2005/Atom"/>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE entry [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x"> %remote;]>
<entry/>"""

UNDEFINED_ENTITY = b"<entry><title>&xxe;</title></entry>"

HUGE = b"<entry><title>" + b"x" * (50 * 1024 * 1024) + b"</title></entry>"
DEEP = b"<a>" * 10_000 + b"</a>" * 10_000
ENTRY = '<entry xmlns="http://www.w3.org/2005/Atom"><title>héllo</title></entry>'


@contextmanager
def costs_little_cpu(limit: float = 0.25) -> Iterator[None]:
    """The block uses less than ``limit`` seconds of this thread's CPU time (the garbage
    collector paused, so a collection of the whole test session's heap is not counted)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.thread_time()
        yield
        spent = time.thread_time() - started
    finally:
        if was_enabled:
            gc.enable()
    assert spent < limit


HOSTILE: dict[str, Callable[[], bytes]] = {
    "billion laughs": lambda: BILLION_LAUGHS,
    "external entity": lambda: EXTERNAL_ENTITY,
    "external dtd": lambda: EXTERNAL_DTD,
    "parameter entity": lambda: PARAMETER_ENTITY,
    "undefined entity": lambda: UNDEFINED_ENTITY,
    "50 MB body": lambda: HUGE,
    "10,000-deep nesting": lambda: DEEP,
    "invalid UTF-8": lambda: b"<entry><title>\xff\xfe\xc3\x28</title></entry>",
    "overlong UTF-8": lambda: b"<entry><title>\xc0\xaf</title></entry>",
    "UTF-8 encoded surrogate": lambda: b"<entry><title>\xed\xa0\x80</title></entry>",
    "UTF-16 without declaration": lambda: ENTRY.encode("utf-16-le"),
    "UTF-16 with BOM": lambda: ENTRY.encode("utf-16"),
    "UTF-16 with declaration": lambda: ("<?xml version='1.0' encoding='UTF-16'?>" + ENTRY).encode(
        "utf-16"
    ),
    "UTF-32": lambda: ENTRY.encode("utf-32"),
    "Latin-1 declared and used": lambda: (
        "<?xml version='1.0' encoding='ISO-8859-1'?>" + ENTRY
    ).encode("latin-1"),
    "NUL byte": lambda: b"<entry><title>a\x00b</title></entry>",
    "control character reference": lambda: b"<entry><title>&#1;</title></entry>",
    "empty": lambda: b"",
    "blank": lambda: b" \r\n",
    "not XML": lambda: b"HTTP/1.1 403 Forbidden",
    "HTML error page": lambda: b"<html><body><p>403 Forbidden<br></body></html>",
    "truncated": lambda: ENTRY.encode()[:-3],
    "two roots": lambda: (ENTRY + ENTRY).encode(),
    "junk after root": lambda: ENTRY.encode() + b'"',
    "unbound prefix": lambda: b"<atom:entry/>",
    "invalid namespace URI": lambda: b'<entry xmlns=" http://www.w3.org/2005/Atom"/>',
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_and_broken_input_is_an_xml_error_at_little_cost(case: str) -> None:
    """Entities, DTDs, size, depth, encodings, junk: XmlError, cheaply, nothing read."""
    data = HOSTILE[case]()
    with costs_little_cpu(), pytest.raises(XmlError) as caught:
        parse_xml(data)
    assert "root:" not in str(caught.value)  # nothing of /etc/passwd leaks into messages


def test_the_big_and_the_deep_are_refused_in_milliseconds_of_cpu() -> None:
    """Size is checked before anything else; depth stops libxml2 early (both well under
    50 ms of CPU; they cost ~0.01 and ~0.5 ms)."""
    for data in (HUGE, DEEP):
        with costs_little_cpu(0.05), pytest.raises(XmlError):
            parse_xml(data)


def test_size_limit_is_inclusive() -> None:
    """A document of exactly max_bytes parses; one byte more does not."""
    data = ENTRY.encode()
    assert local_name(parse_xml(data, max_bytes=len(data))) == "entry"
    with pytest.raises(XmlError, match="exceeds"):
        parse_xml(data, max_bytes=len(data) - 1)


def test_depth_limit_is_inclusive() -> None:
    """max_depth levels parse; one more does not; the limit is configurable."""
    ok = b"<a>" * 100 + b"</a>" * 100
    assert parse_xml(ok) is not None
    too_deep = b"<a>" * 101 + b"</a>" * 101
    with pytest.raises(XmlError, match="deeper than 100"):
        parse_xml(too_deep)
    with pytest.raises(XmlError, match="deeper than 5"):
        parse_xml(b"<a>" * 6 + b"</a>" * 6, max_depth=5)
    wide = b"<a>" + b"<b><c/></b>" * 1000 + b"</a>"
    assert len(parse_xml(wide, max_depth=3)) == 1000


def test_friendly_input_still_parses() -> None:
    """The checks are not over-eager: BOM, escaped DOCTYPE text, CDATA, comments, PIs,
    ASCII or UTF-8 declarations."""
    cases = [
        b"\xef\xbb\xbf" + ENTRY.encode(),
        b'<?xml version="1.0" encoding="utf-8"?>' + ENTRY.encode(),
        b'<?xml version="1.0" encoding="US-ASCII"?><entry><title>a</title></entry>',
        b"<entry><title>&lt;!DOCTYPE x&gt; &amp;lt;!ENTITY</title></entry>",
        b"<entry><title><![CDATA[a <b> & c]]></title></entry>",
        b"<entry><title>a<!-- c -->b<?pi x?>c</title></entry>",
    ]
    titles = [parse_xml(data).findtext("{*}title") for data in cases]
    assert titles == ["héllo", "héllo", "a", "<!DOCTYPE x> &lt;!ENTITY", "a <b> & c", "abc"]


def test_a_parser_is_configured_defensively() -> None:
    """The factory's options are the hardened ones (no entities, network, DTD, huge trees)."""
    parser = hardened_parser()
    assert parser is not hardened_parser()  # parsers are not shared between callers
    # An external entity that slipped past the pre-check would still not be resolved.
    doc = etree.fromstring(EXTERNAL_ENTITY, parser)
    assert "root:" not in (doc.findtext("{*}title") or "")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (BILLION_LAUGHS, "DOCTYPE or ENTITY"),
        (EXTERNAL_ENTITY, "DOCTYPE or ENTITY"),
        (b"<!ENTITY x 'y'><entry/>", "DOCTYPE or ENTITY"),
        (ENTRY.encode("utf-16"), "UTF-8"),
        (ENTRY.encode("utf-32-be"), "malformed"),
        (HUGE, "exceeds the limit"),
        (DEEP, "depth"),
    ],
)
def test_cheap_checks_answer_before_the_parser_runs(data: bytes, message: str) -> None:
    """Declarations and foreign byte-order marks are refused by the byte pre-checks (their
    own messages), not left to libxml2."""
    with pytest.raises(XmlError, match=message):
        parse_xml(data)
