"""Property tests of the parsing paths we own, fed what a hostile network may send.

Each property says: whatever the input, the code ends with a value of the
documented shape or a failure from the vocabulary (never another exception),
and its output is bounded. Example counts stay modest so the suite stays fast.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from probes.dns import MAX_ANSWERS, _addresses, _fast_record, _parse_reply, _Question, _record
from probes.errors import StageError, failure_of
from probes.failures import Failure, is_known
from probes.http import (
    HEADERS_OF_INTEREST,
    MAX_HEADER_VALUE,
    MAX_TITLE,
    TITLE_SCAN_BYTES,
    _Body,
    _decode,
    _title,
    address_reach,
    headers_of_interest,
    next_url,
)
from probes.lab import clienthello

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
HOST = "www.lifeline.test"

# --- HTTP: title, decoding, headers, body cap, redirects ---------------------------------

_HTMLISH = st.lists(
    st.sampled_from(["<title>", "<TITLE lang=en>", "</title>", "<title", "&amp;", "&#x1F600;",
                     "&#99999999;", " ", "\n", "x", "<", ">", "\x00", "\ud7ff", "é"]),
    max_size=200,
).map("".join)  # fmt: skip


@FAST
@given(st.one_of(st.text(max_size=3000), _HTMLISH))
def test_title_is_none_or_short_text(text: str) -> None:
    title = _title(text)
    assert title is None or (len(title) <= MAX_TITLE and title == title.strip())


def test_title_of_many_unclosed_tags_is_found_quickly() -> None:
    assert _title("<title" * 20_000) is None
    assert _title("<title>" * 20_000) == ("<title>" * 40)[:MAX_TITLE]  # the text after the first
    assert _title("<title>" + "T" * 1_000_000) == "T" * MAX_TITLE


_CHARSETS = st.one_of(
    st.none(),
    st.sampled_from(["utf-8", "idna", "punycode", "utf-7", "rot13", "hex", "zlib", "uu",
                     "utf-16", "cp1252", "koi8-r", "gb18030", "", "nonsense", "utf-8\x00"]),
    st.text(max_size=20),
)  # fmt: skip


@FAST
@given(st.binary(max_size=2000), _CHARSETS)
def test_decode_never_fails(data: bytes, charset: str | None) -> None:
    assert isinstance(_decode(data, charset), str)


_HEADER_NAMES = st.one_of(st.sampled_from(HEADERS_OF_INTEREST), st.text(min_size=1, max_size=12))


@FAST
@given(st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=9000)), max_size=60))
def test_headers_of_interest_are_bounded(pairs: list[tuple[str, str]]) -> None:
    out = headers_of_interest(CIMultiDictProxy(CIMultiDict(pairs)))
    assert set(out) <= set(HEADERS_OF_INTEREST)
    assert all(len(v) <= MAX_HEADER_VALUE for v in out.values())
    assert set(out) <= {k.lower() for k, _ in pairs}


@FAST
@given(st.lists(st.binary(max_size=5000), max_size=40), st.integers(min_value=0, max_value=70_000))
def test_body_is_capped_and_hashed_as_kept(chunks: list[bytes], cap: int) -> None:
    body = _Body()
    for chunk in chunks:
        if body.truncated:
            break
        body.add(chunk, cap)
    whole = b"".join(chunks)
    assert body.length == min(len(whole), cap) or body.truncated
    assert body.length <= cap
    assert body.truncated == (len(whole) > cap)
    assert body.sha256.hexdigest() == hashlib.sha256(whole[: body.length]).hexdigest()
    assert bytes(body.scan) == whole[: min(body.length, TITLE_SCAN_BYTES)]


_LOCATIONS = st.one_of(
    st.text(max_size=300),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["http://", "https://", "//", "file://", "ftp://", "javascript:",
                         "data:", "HTTP://", "http:\\\\", ""]),
        st.sampled_from(["10.0.0.1", "169.254.169.254", "[::ffff:169.254.169.254]", "127.0.0.1",
                         "[::1]", "0.0.0.0", "224.0.0.1", "example.test", "x" * 300, "[zz]",
                         "a..b", "%00", "\u2603.test", "1.2.3.4:99999", "user@h", ""]),
        st.text(max_size=30),
    ),
)  # fmt: skip
_REACHES = st.sets(st.sampled_from(["global", "loopback", "private"]), min_size=1).map(frozenset)


@FAST
@given(_LOCATIONS, _REACHES)
def test_redirect_targets_are_followable_or_bad_redirects(
    location: str, reach: frozenset[str]
) -> None:
    try:
        target = next_url(URL(f"http://{HOST}/a/b"), location, reach)
    except StageError as exc:
        assert exc.failure == Failure.HTTP_BAD_REDIRECT
        return
    assert target.scheme in ("http", "https") and target.host
    try:
        address = ipaddress.ip_address(target.host)
    except ValueError:
        return  # a name: the vantage's resolver decides, then within_reach again
    assert address_reach(str(address)) in reach


@FAST
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_every_address_has_a_reach(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    reach = address_reach(str(address))
    assert reach in ("global", "loopback", "private", None)
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        assert reach is None


# --- DNS: answer processing of arbitrary messages and wire bytes -------------------------

_NAMES = st.sampled_from([f"{HOST}.", "edge.lifeline.test.", "loop.lifeline.test.", "other.test."])
_RRSETS = st.one_of(
    st.builds(lambda n, a: dns.rrset.from_text(n, 60, "IN", "A", a), _NAMES,
              st.ip_addresses(v=4).map(str)),
    st.builds(lambda n, a: dns.rrset.from_text(n, 60, "IN", "AAAA", a), _NAMES,
              st.ip_addresses(v=6).map(str)),
    st.builds(lambda n, t: dns.rrset.from_text(n, 60, "IN", "CNAME", t), _NAMES, _NAMES),
    st.builds(lambda n: dns.rrset.from_text(n, 60, "CH", "A", "chaos. 177401"), _NAMES),
    st.builds(lambda n, t: dns.rrset.from_text(n, 60, "IN", "TXT", f'"{t}"'), _NAMES,
              st.text(alphabet="abc ", max_size=20)),
    st.builds(lambda n, t: dns.rrset.from_text(n, 60, "IN", "DNAME", t), _NAMES, _NAMES),
)  # fmt: skip


def _response(qtype: str, rcode: int, rrsets: list[dns.rrset.RRset]) -> dns.message.Message:
    query = dns.message.make_query(HOST, qtype)
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    response.answer.extend(rrsets)
    return response


@FAST
@given(
    st.sampled_from(["A", "AAAA"]),
    st.sampled_from([0, 1, 2, 3, 4, 5, 9]),
    st.lists(_RRSETS, max_size=80),
)
def test_dns_answer_processing_is_bounded_and_named(
    qtype: str, rcode: int, rrsets: list[dns.rrset.RRset]
) -> None:
    record = _record(_response(qtype, rcode, rrsets), HOST, qtype, 0.01)
    assert len(record.answers) <= MAX_ANSWERS
    assert record.ok == (record.failure is None)
    assert record.failure is None or is_known(record.failure)
    for answer in record.answers:
        if answer.rtype in ("A", "AAAA"):
            assert ipaddress.ip_address(answer.value).version == (4 if answer.rtype == "A" else 6)
    assert len(_addresses([record])) <= MAX_ANSWERS


def _reply_wire(query: dns.message.Message) -> bytes:
    response = dns.message.make_response(query)
    owner = f"{HOST}."
    response.answer.append(dns.rrset.from_text(owner, 60, "IN", "A", "127.0.0.1", "127.0.0.2"))
    response.answer.append(dns.rrset.from_text(owner, 60, "IN", "TXT", '"hello"'))
    return response.to_wire()


def _mutated(base: bytes) -> st.SearchStrategy[bytes]:
    edits = st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=8)
    return st.builds(_apply, st.just(base), edits, st.integers(0, len(base)))


def _apply(base: bytes, edits: list[tuple[int, int]], keep: int) -> bytes:
    data = bytearray(base)
    for at, value in edits:
        data[at] = value
    return bytes(data[: max(keep, 2)])


_QUERY = dns.message.make_query(HOST, "A", id=4242)


@FAST
@given(st.one_of(st.binary(max_size=600), _mutated(_reply_wire(_QUERY))))
def test_dns_wire_is_answer_ignored_or_misbehaving(wire: bytes) -> None:
    try:
        reply = _parse_reply(wire, _QUERY)
    except StageError as exc:
        assert exc.failure == Failure.DNS_SERVER_MISBEHAVING
        assert wire[:2] == (4242).to_bytes(2, "big")  # only a reply that claims to be ours
        return
    except dns.message.Truncated as exc:  # the caller retries over TCP
        assert failure_of(exc) == Failure.DNS_SERVER_MISBEHAVING
        return
    if reply is None:
        return
    assert _QUERY.is_response(reply)
    record = _record(reply, HOST, "A", 0.0)
    assert len(record.answers) <= MAX_ANSWERS
    assert record.failure is None or is_known(record.failure)


def test_a_reply_with_another_id_is_ignored_not_fatal() -> None:
    wire = bytearray(_reply_wire(_QUERY))
    wire[0:2] = (4243).to_bytes(2, "big")
    assert _parse_reply(bytes(wire), _QUERY) is None
    assert _parse_reply(b"\x10\x93" + b"\xff" * 30, _QUERY) is None  # garbage, not ours
    with pytest.raises(StageError):
        _parse_reply((4242).to_bytes(2, "big") + b"\x81\x80" + b"\xff" * 30, _QUERY)


# --- the lab's ClientHello and Host parsers -------------------------------------------------


def _client_hello(server_name: str) -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HELLO = _client_hello(HOST)


def test_the_sample_hello_parses() -> None:
    assert clienthello.sni(HELLO) == HOST
    assert clienthello.tls_record_length(HELLO) == len(HELLO)


@FAST
@given(st.one_of(st.binary(max_size=600), _mutated(HELLO)))
def test_sni_is_none_or_a_name(data: bytes) -> None:
    name = clienthello.sni(data)
    assert name is None or (isinstance(name, str) and len(name) < len(data))
    length = clienthello.tls_record_length(data)
    assert length is None or 5 <= length <= 5 + 0xFFFF


_REQUEST = b"GET / HTTP/1.1\r\nHost: www.lifeline.test:8080\r\nAccept: */*\r\n\r\n"


@FAST
@given(st.one_of(st.binary(max_size=600), _mutated(_REQUEST)))
def test_http_host_is_none_or_a_short_name(data: bytes) -> None:
    host = clienthello.http_host(data)
    assert host is None or (isinstance(host, str) and len(host) <= 16384)


def test_http_host_of_the_sample_request() -> None:
    assert clienthello.http_host(_REQUEST) == HOST


# --- DNS: the fast reader reads what dnspython reads, or leaves it to dnspython ----------

_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63)


@FAST
@given(st.lists(_LABEL, min_size=1, max_size=5), st.sampled_from(["A", "AAAA"]))
def test_the_hand_written_query_is_dnspythons(labels: list[str], qtype: str) -> None:
    host = ".".join(labels)
    ask = _Question.make(host, qtype)
    assert ask.wire == dns.message.make_query(host, qtype, id=ask.id).to_wire()
    assert ask.message().to_wire() == ask.wire


def _any_case(text: str, flips: int) -> str:
    return "".join(c.upper() if (flips >> (i % 16)) & 1 else c for i, c in enumerate(text))


_TTLS = st.one_of(st.integers(0, 86400), st.just(2**31 - 1), st.just(2**31), st.just(2**32 - 1))
_FAST_RRSETS = st.one_of(
    _RRSETS,
    st.builds(lambda n, a, t, f: dns.rrset.from_text(_any_case(n, f), t, "IN", "A", *a), _NAMES,
              st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=4), _TTLS,
              st.integers(0, 2**16)),
    st.builds(lambda n, a, t: dns.rrset.from_text(n, t, "IN", "AAAA", *a), _NAMES,
              st.lists(st.ip_addresses(v=6).map(str), min_size=1, max_size=3), _TTLS),
    st.builds(lambda n, c, t, f: dns.rrset.from_text(n, t, "IN", "CNAME", _any_case(c, f)),
              _NAMES, _NAMES, _TTLS, st.integers(0, 2**16)),
)  # fmt: skip


def _same_as_dnspython(wire: bytes, ask: _Question) -> bool:
    """The fast reader agrees with dnspython on ``wire``; True when it read it itself."""
    fast = _fast_record(wire, ask)
    if fast is None:
        return False
    reply = _parse_reply(wire, ask.message())  # dnspython must accept it as our reply
    assert reply is not None
    slow = _record(reply, HOST, ask.qtype, 0.0)
    assert (fast.qtype, fast.ok, fast.failure, fast.rcode) == (
        slow.qtype, slow.ok, slow.failure, slow.rcode
    )  # fmt: skip
    assert fast.answers == slow.answers
    return True


@settings(FAST, max_examples=600)
@given(
    st.sampled_from(["A", "AAAA"]),
    st.sampled_from([0, 1, 2, 3, 4, 5, 9, 15]),
    st.lists(_FAST_RRSETS, max_size=12),
    st.booleans(),
)
def test_the_fast_reader_agrees_with_dnspython(
    qtype: str, rcode: int, rrsets: list[dns.rrset.RRset], shout: bool
) -> None:
    ask = _Question.make(HOST, qtype)
    response = dns.message.make_response(ask.message())
    response.set_rcode(dns.rcode.Rcode(rcode))
    response.answer.extend(rrsets)
    if shout:  # a resolver may echo the question in another case (0x20 encoding)
        response.question[0].name = dns.name.from_text(HOST.upper())
    _same_as_dnspython(response.to_wire(), ask)


@settings(FAST, max_examples=1500)
@given(st.data())
def test_the_fast_reader_on_mutated_replies(data: st.DataObject) -> None:
    ask = _Question.make(HOST, "A")
    response = dns.message.make_response(ask.message())
    owner = f"{HOST}."
    response.answer.append(dns.rrset.from_text(owner, 60, "IN", "CNAME", "edge.lifeline.test."))
    response.answer.append(
        dns.rrset.from_text("edge.lifeline.test.", 60, "IN", "A", "127.0.0.1", "127.0.0.2")
    )
    base = response.to_wire()
    edits = st.lists(st.tuples(st.integers(2, len(base) - 1), st.integers(0, 255)), max_size=3)
    keep = st.one_of(st.just(len(base)), st.integers(2, len(base)))
    wire = data.draw(st.one_of(_mutated(base), st.builds(_apply, st.just(base), edits, keep)))
    try:
        _same_as_dnspython(wire, ask)
    except StageError:
        raise AssertionError("the fast reader took a reply dnspython refuses") from None


def test_the_fast_reader_takes_the_common_reply_and_leaves_the_rest() -> None:
    ask = _Question.make(HOST, "A")
    response = dns.message.make_response(ask.message())
    response.answer.append(dns.rrset.from_text(f"{HOST}.", 60, "IN", "A", "127.0.0.1"))
    assert _same_as_dnspython(response.to_wire(), ask)  # read without dnspython
    response.authority.append(dns.rrset.from_text("lifeline.test.", 60, "IN", "NS", "ns.test."))
    assert _fast_record(response.to_wire(), ask) is None  # another section: dnspython's
    response.authority.clear()
    response.flags |= dns.flags.TC
    assert _fast_record(response.to_wire(), ask) is None  # truncated: dnspython (then TCP)
