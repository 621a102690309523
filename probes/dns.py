"""The DNS stage: A and AAAA for the target's host, from the vantage's resolver.

Both questions go out at once; each keeps its own rcode, answers and TTLs
(records.DNSQuery), because censors often treat them differently. The stage
succeeds when either yields an address. The resolver is only ever the one the
vantage names: never the system resolver unless the config says "system", and
never for the DoH server's own name (which must therefore be an address).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.inet
import dns.ipv4
import dns.ipv6
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from probes import wire
from probes.deadline import Deadline
from probes.dnswindow import Listening, injected_pair
from probes.errors import NotMeasurable, StageError, mapped
from probes.evidence import DNSAnswer, DNSQuery, DNSStage
from probes.failures import Failure
from probes.model import ResolverSpec, is_ip
from probes.net import StageContext, VantageNet

__all__ = ["dns_stage", "resolve_addresses"]

#: Answers kept per query; a resolver answering hundreds must not bloat the log.
MAX_ANSWERS = 32
#: How long the second question may lag once the first has an address: a censor
#: that drops AAAA must not eat the budget of the later stages.
SECOND_ANSWER_GRACE_S = 1.0
#: First UDP retransmission interval; it doubles while the budget lasts.
UDP_FIRST_TRY_S = 1.0
_DOH_MAX_BYTES = 65_535
_UDP_MAX_BYTES = 65_535
_RCODE_FAILURES = {
    "NXDOMAIN": Failure.DNS_NXDOMAIN,
    "SERVFAIL": Failure.DNS_SERVFAIL,
    "REFUSED": Failure.DNS_REFUSED,
}


async def dns_stage(ctx: StageContext) -> DNSStage:
    """Resolve the target's host through the vantage's resolver."""
    spec = ctx.vantage.resolver
    host = ctx.target.host
    if ctx.target.host_is_ip:
        return DNSStage(True, None, 0.0, host, str(spec), addresses=[host], skipped=True)
    started = time.monotonic()
    window = ctx.vantage.dns_window
    listening = Listening(window, ctx.deadline) if spec.kind == "udp" and window > 0 else None
    try:
        queries = await _ask_both(ctx.net, spec, host, ctx.deadline, listening)
    except BaseException:
        if listening is not None:
            await listening.aclose()
        raise
    answered = time.monotonic()
    addresses = _addresses(queries)
    failure = None if addresses else _stage_failure(queries)
    record = DNSStage(
        ok=bool(addresses),
        failure=failure,
        duration_s=answered - started,  # until the answers were in: the window is not latency
        name=host,
        resolver=str(spec),
        addresses=addresses,
        queries=queries,
    )
    if listening is not None:
        if listening.listening:  # later replies are evidence: TCP, TLS, HTTP go on meanwhile
            ctx.pending.append(_Window(record, listening, answered))
        else:
            await listening.aclose()
    return record


class _Window:
    """A DNS stage's listening window, finished once the later stages are done."""

    def __init__(self, record: DNSStage, listening: Listening, answered: float) -> None:
        self.record, self.listening, self.answered = record, listening, answered

    async def finish(self) -> None:
        try:
            later = await self.listening.collect()
            self.record.listen_s = time.monotonic() - self.answered
            for q in self.record.queries:
                q.later_responses = later.get(q.qtype, [])
                q.injected = injected_pair(q) is not None
            self.record.injection = any(q.injected for q in self.record.queries)
        finally:
            await self.listening.aclose()

    async def aclose(self) -> None:
        await self.listening.aclose()


async def resolve_addresses(net: VantageNet, host: str, deadline: Deadline) -> list[str]:
    """Addresses of ``host`` from the vantage's resolver (for redirects to other hosts).

    Raises StageError with the DNS failure when there is none.
    """
    if is_ip(host):
        return [host]
    queries = await _ask_both(net, net.vantage.resolver, host, deadline)
    addresses = _addresses(queries)
    if not addresses:
        raise StageError(_stage_failure(queries), f"cannot resolve {host}")
    return addresses


async def _ask_both(
    net: VantageNet,
    spec: ResolverSpec,
    host: str,
    deadline: Deadline,
    listening: Listening | None = None,
) -> list[DNSQuery]:
    """A and AAAA concurrently; the slower one gets a short grace once the other answered.

    With ``listening``, each UDP question's socket stays open after its first
    reply (the caller collects what else arrives); the questions still end at
    their first reply, so the grace and the durations mean what they did.
    """
    started = time.monotonic()
    tasks = [
        asyncio.create_task(_query(net, spec, host, qtype, deadline, listening))
        for qtype in ("A", "AAAA")
    ]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending and any(t.result().ok for t in done):
            grace = min(SECOND_ANSWER_GRACE_S, deadline.remaining())
            await asyncio.wait(pending, timeout=grace)
        elif pending:
            await asyncio.wait(pending)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    waited = time.monotonic() - started
    return [_finished(t, q, waited) for t, q in zip(tasks, ("A", "AAAA"), strict=True)]


def _finished(task: asyncio.Task[DNSQuery], qtype: str, waited: float) -> DNSQuery:
    """The task's query record, or a timeout record if it was cut off after the grace."""
    if task.cancelled():
        return DNSQuery(qtype, False, Failure.TIMEOUT, None, duration_s=waited)
    return task.result()


async def _query(
    net: VantageNet,
    spec: ResolverSpec,
    host: str,
    qtype: str,
    deadline: Deadline,
    listening: Listening | None = None,
) -> DNSQuery:
    started = time.monotonic()
    try:
        with mapped():
            if spec.kind == "system":
                answers = await _system_lookup(host, qtype, deadline)
                return _system_record(qtype, answers, time.monotonic() - started)
            ask = _Question.make(host, qtype)
            response = await _exchange(net, spec, ask, deadline, listening)
    except StageError as exc:
        return DNSQuery(qtype, False, exc.failure, None, duration_s=time.monotonic() - started)
    if isinstance(response, DNSQuery):  # read straight from the wire (_fast_record)
        response.duration_s = time.monotonic() - started
        return response
    return _record(response, host, qtype, time.monotonic() - started)


async def _exchange(
    net: VantageNet,
    spec: ResolverSpec,
    ask: _Question,
    deadline: Deadline,
    listening: Listening | None = None,
) -> dns.message.Message | DNSQuery:
    """One question to the configured resolver, by its transport."""
    if spec.kind == "udp":
        return await _udp(net, spec, ask, deadline, listening)
    local = net.local_addr(spec.host) if spec.kind in ("tcp", "tls") else None
    source = local[0] if local is not None else None
    query = ask.message()
    if spec.kind == "tcp":
        return await dns.asyncquery.tcp(
            query, spec.host, timeout=deadline.remaining(), port=spec.port, source=source
        )
    if spec.kind == "tls":
        return await dns.asyncquery.tls(
            query,
            spec.host,
            timeout=deadline.remaining(),
            port=spec.port,
            source=source,
            ssl_context=net.dot_ssl_context,
            server_hostname=spec.host,
        )
    if spec.kind == "https":
        return await _doh(net, spec, query, deadline)
    raise NotMeasurable(f"resolver kind {spec.kind!r} is not supported")


async def _udp(
    net: VantageNet,
    spec: ResolverSpec,
    ask: _Question,
    deadline: Deadline,
    listening: Listening | None = None,
) -> dns.message.Message | DNSQuery:
    """UDP with retransmission inside the budget; TCP when the answer is truncated."""
    wait = UDP_FIRST_TRY_S
    while True:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise StageError(Failure.TIMEOUT, "no answer from the resolver")
        try:
            return await _udp_try(net, spec, ask, min(wait, remaining), listening)
        except dns.message.Truncated:
            local = net.local_addr(spec.host)
            return await dns.asyncquery.tcp(
                ask.message(), spec.host, timeout=deadline.remaining(), port=spec.port,
                source=local[0] if local is not None else None,
            )  # fmt: skip
        except TimeoutError:
            wait *= 2


async def _udp_try(
    net: VantageNet,
    spec: ResolverSpec,
    ask: _Question,
    window: float,
    listening: Listening | None = None,
) -> dns.message.Message | DNSQuery:
    """One datagram out, then the first reply that answers it (TimeoutError after ``window``).

    Anyone on the path can send datagrams: one from another address or port,
    or with another ID or question (an off-path injector's guess, a late
    reply), is ignored, as a stub resolver does. A reply carrying our ID that
    does not parse is the resolver's answer, broken: that is the failure
    (dns_server_misbehaving), not a timeout.

    A plain non-blocking socket on the loop, not dnspython's async path: that
    one builds a datagram endpoint and its transport per query, several times
    the cost of the exchange itself (docs/performance.md).

    With ``listening``, the socket outlives the first reply: it is handed over
    to listen for further replies to the same question (dnswindow.py).
    """
    destination = (spec.host, spec.port)
    family = dns.inet.af_for_address(spec.host)
    net.source_for(family)  # no source of the resolver's family: raised before a socket exists
    sock = socket.socket(family, socket.SOCK_DGRAM)
    kept = False
    try:
        sock.setblocking(False)
        net.bind_source(sock)
        async with asyncio.timeout(window):
            await wire.sendto(sock, ask.wire, destination)
            while True:
                datagram, sender = await wire.recvfrom(sock, _UDP_MAX_BYTES)
                if not _same_endpoint(sender, destination):
                    continue
                if len(datagram) < 2 or int.from_bytes(datagram[:2], "big") != ask.id:
                    continue  # another exchange's, or a guess: never ours, whatever it holds
                reply: dns.message.Message | DNSQuery | None = _fast_record(datagram, ask)
                if reply is None:
                    reply = _parse_reply(datagram, ask.message())
                if reply is not None:
                    if listening is not None:
                        kept = listening.keep(ask.qtype, sock, _later_reader(ask, destination))
                    return reply
    finally:
        if not kept:
            sock.close()


def _later_reader(
    ask: _Question, destination: tuple[str, int]
) -> Callable[[bytes, object], DNSQuery | None]:
    """How a later datagram is read: as the first was, skipping what is not a reply to ``ask``."""

    def read(datagram: bytes, sender: object) -> DNSQuery | None:
        if not _same_endpoint(sender, destination):
            return None
        if len(datagram) < 2 or int.from_bytes(datagram[:2], "big") != ask.id:
            return None
        fast = _fast_record(datagram, ask)
        if fast is not None:
            return fast
        try:
            reply = _parse_reply(datagram, ask.message())
        except (StageError, dns.message.Truncated):
            return None  # broken or truncated: nothing to compare
        return _record(reply, ask.host, ask.qtype, 0.0) if reply is not None else None

    return read


#: Labels the fast path writes by hand: lower-case letters, digits, "-" and "_".
_PLAIN_HOST_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_QTYPES = {"A": 1, "AAAA": 28}
_CNAME, _IN = 5, 1
_HEADER = struct.Struct(">HHHHHH")
_RR = struct.Struct(">HHIH")
_RCODES = {i: dns.rcode.to_text(dns.rcode.Rcode(i)) for i in range(16)}
#: Label bytes the fast path takes; anything else (escapes in text, IDNA, binary) is
#: left to dnspython so that names read the same either way.
_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_-]+")


@dataclass(slots=True)
class _Question:
    """One query: its wire, its ID, its question section as our own bytes.

    The wire is what ``dns.message.make_query(host, qtype)`` writes (RD set, no
    EDNS; a test compares them); dnspython's message is only made when needed
    (TCP, DoT, DoH, and a reply the fast reader leaves to dnspython).
    """

    host: str
    qtype: str
    id: int
    wire: bytes
    question: bytes  # the question section, the name in lower case
    _message: dns.message.Message | None = None

    @classmethod
    def make(cls, host: str, qtype: str) -> _Question:
        ident = secrets.randbits(16)
        question = _question_bytes(host, qtype)
        if question is None:  # an unusual name: dnspython writes it
            message = dns.message.make_query(host, qtype, id=ident)
            return cls(host, qtype, ident, message.to_wire(), b"", message)
        return cls(host, qtype, ident, _HEADER.pack(ident, 0x0100, 1, 0, 0, 0) + question, question)

    def message(self) -> dns.message.Message:
        if self._message is None:
            self._message = dns.message.make_query(self.host, self.qtype, id=self.id)
        return self._message


@functools.lru_cache(maxsize=4096)
def _question_bytes(host: str, qtype: str) -> bytes | None:
    """The question section for a plain lower-case host name; None for anything else."""
    name = host[:-1] if host.endswith(".") else host
    parts = name.split(".")
    if qtype not in _QTYPES or len(name) > 253 or not all(map(_PLAIN_HOST_LABEL.fullmatch, parts)):
        return None
    labels = b"".join(bytes([len(x)]) + x.encode("ascii") for x in parts)
    return labels + b"\x00" + struct.pack(">HH", _QTYPES[qtype], _IN)


def _read_name(wire: bytes, at: int) -> tuple[tuple[bytes, ...], int] | None:
    """The labels of the name at ``at`` and where the record goes on; None if unusual.

    Compression pointers must point strictly backwards, each before the
    last, as dnspython requires; a name over 255 octets, an extended label
    type or a label of other bytes than letters, digits, "-" and "_" is
    unusual (dnspython reads those, or refuses them).
    """
    labels: list[bytes] = []
    size = 1
    end = -1
    limit = at
    n = len(wire)
    while True:
        if at >= n:
            return None
        length = wire[at]
        if length == 0:
            at += 1
            break
        if length >= 0xC0:
            if at + 1 >= n:
                return None
            pointer = ((length & 0x3F) << 8) | wire[at + 1]
            if end < 0:
                end = at + 2
            if pointer >= limit:
                return None
            limit = at = pointer
            continue
        if length > 63 or at + 1 + length > n:
            return None
        label = wire[at + 1 : at + 1 + length]
        if not _PLAIN_LABEL.fullmatch(label):
            return None
        size += length + 1
        if size > 255:
            return None
        labels.append(label)
        at += 1 + length
    return tuple(labels), (end if end >= 0 else at)


def _fast_record(wire: bytes, ask: _Question) -> DNSQuery | None:
    """The query record of a common reply, read straight from the wire; else None.

    dnspython's reader costs more than the rest of a measurement's DNS work,
    and a stub resolver's reply is nearly always the same shape: our
    question, an answer section of A, AAAA and CNAME records of class IN,
    nothing else. Such a reply is read here, with the same result as
    :func:`_record` on dnspython's message (a property test compares them on
    generated and mutated replies). Anything else (truncation, another
    section, another type or class, trailing bytes, unusual names) returns
    None, and dnspython reads it as before, raising on what is broken.
    """
    if not ask.question or len(wire) < 12:
        return None
    ident, flags, qd, an, ns, ar = _HEADER.unpack_from(wire)
    if ident != ask.id or not flags & 0x8000 or flags & 0x7A00 or qd != 1 or ns or ar:
        return None  # not a reply, another opcode, truncated, or sections we do not read
    q_end = 12 + len(ask.question)
    asked = ask.question
    if wire[12 : q_end - 4].lower() != asked[:-4] or wire[q_end - 4 : q_end] != asked[-4:]:
        return None
    wanted = _QTYPES[ask.qtype]
    rrsets: dict[tuple[tuple[bytes, ...], int], list[object]] = {}
    ttls: dict[tuple[tuple[bytes, ...], int], int] = {}
    at = q_end
    for _ in range(an):
        read = _read_name(wire, at)
        if read is None or read[1] + 10 > len(wire):
            return None
        owner, at = read
        rtype, rclass, ttl, size = _RR.unpack_from(wire, at)
        at += 10
        data_end = at + size
        if rclass != _IN or data_end > len(wire):
            return None
        key = (tuple(x.lower() for x in owner), rtype)
        if rtype == 1 and size == 4:
            value: object = dns.ipv4.inet_ntoa(wire[at:data_end])
        elif rtype == 28 and size == 16:
            value = dns.ipv6.inet_ntoa(wire[at:data_end])
        elif rtype == _CNAME:
            alias = _read_name(wire, at)
            if alias is None or alias[1] != data_end or not alias[0] or key in rrsets:
                return None  # (a second CNAME for a name replaces the first in dnspython)
            value = alias[0]
        else:
            return None
        at = data_end
        if ttl > 0x7FFFFFFF:
            ttl = 0  # RFC 2181 §8, as dnspython reads it
        rdatas = rrsets.setdefault(key, [])
        ttls[key] = ttl if not rdatas else min(ttl, ttls[key])
        if value not in rdatas:
            rdatas.append(value)
    if at != len(wire):
        return None  # trailing bytes: dnspython refuses those
    rcode_number = flags & 0xF  # no OPT record here (ar == 0): no extended rcode bits
    rcode = _RCODES[rcode_number]
    answers: list[DNSAnswer] = []
    name = _labels(asked)
    seen: set[tuple[bytes, ...]] = set()
    while name not in seen and len(answers) < MAX_ANSWERS:
        seen.add(name)
        direct = rrsets.get((name, wanted))
        if direct is not None:
            answers += [DNSAnswer(ask.qtype, str(v), ttls[(name, wanted)]) for v in direct]
            break
        cname = rrsets.get((name, _CNAME))
        if cname is None:
            break
        alias_labels = cname[0]
        assert isinstance(alias_labels, tuple)
        text = b".".join(alias_labels).decode("ascii")
        answers.append(DNSAnswer("CNAME", text, ttls[(name, _CNAME)]))
        name = tuple(x.lower() for x in alias_labels)
    answers = answers[:MAX_ANSWERS]
    if rcode != "NOERROR":
        failure: str | None = _RCODE_FAILURES.get(rcode, Failure.DNS_SERVER_MISBEHAVING)
    elif not any(a.rtype == ask.qtype for a in answers):
        failure = Failure.DNS_NO_ANSWER
    else:
        failure = None
    return DNSQuery(ask.qtype, failure is None, failure, rcode, answers, 0.0, rcode_number)


def _labels(question: bytes) -> tuple[bytes, ...]:
    """The labels of our own question's name (written by _question_bytes: no pointers)."""
    out: list[bytes] = []
    at = 0
    while question[at]:
        out.append(question[at + 1 : at + 1 + question[at]])
        at += 1 + question[at]
    return tuple(out)


def _same_endpoint(sender: object, destination: tuple[str, int]) -> bool:
    """Whether a datagram came from the resolver's address and port (any spelling)."""
    if not isinstance(sender, tuple) or len(sender) < 2 or sender[1] != destination[1]:
        return False
    if sender[0] == destination[0]:  # the kernel's spelling is the config's: the usual case
        return True
    try:
        return ipaddress.ip_address(str(sender[0])) == ipaddress.ip_address(destination[0])
    except ValueError:
        return False


def _parse_reply(wire: bytes, query: dns.message.Message) -> dns.message.Message | None:
    """The reply to ``query`` in ``wire``; None when the datagram is not one."""
    if len(wire) < 2 or int.from_bytes(wire[:2], "big") != query.id:
        return None  # another exchange's, or a guess: never ours, whatever it holds
    try:
        reply = dns.message.from_wire(wire, raise_on_truncation=True)
    except dns.message.Truncated as exc:
        if query.is_response(exc.message()):  # type: ignore[no-untyped-call]
            raise
        return None
    except Exception as exc:  # anything dnspython raises on bytes it cannot read
        raise StageError(Failure.DNS_SERVER_MISBEHAVING, f"malformed reply: {exc}") from exc
    return reply if query.is_response(reply) else None


async def _doh(
    net: VantageNet, spec: ResolverSpec, query: dns.message.Message, deadline: Deadline
) -> dns.message.Message:
    """DNS over HTTPS (RFC 8484, POST) to the address written in the DoH URL."""
    if not is_ip(spec.host):
        raise NotMeasurable(
            f"resolver {spec.url}: a DoH URL needs an IP address as its host, e.g. "
            "https://9.9.9.9/dns-query (lifeline never asks the system resolver)"
        )
    headers = {"content-type": "application/dns-message", "accept": "application/dns-message"}
    async with asyncio.timeout(deadline.remaining()):
        async with net.doh_session().post(
            spec.url, data=query.to_wire(), headers=headers, allow_redirects=False
        ) as resp:
            if resp.status != 200:
                raise StageError(Failure.DNS_SERVER_MISBEHAVING, f"DoH answered {resp.status}")
            wire = await resp.content.read(_DOH_MAX_BYTES + 1)
            while len(wire) <= _DOH_MAX_BYTES and not resp.content.at_eof():
                wire += await resp.content.read(_DOH_MAX_BYTES + 1 - len(wire))
    if len(wire) > _DOH_MAX_BYTES:
        raise StageError(Failure.DNS_SERVER_MISBEHAVING, "DoH answer too large")
    response = dns.message.from_wire(wire)
    if not query.is_response(response):
        raise StageError(Failure.DNS_SERVER_MISBEHAVING, "DoH answer is not for our query")
    return response


async def _system_lookup(host: str, qtype: str, deadline: Deadline) -> list[str]:
    """The operating system's resolver (only when the config asks for "system")."""
    family = socket.AF_INET if qtype == "A" else socket.AF_INET6
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(deadline.remaining()):
        infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _system_record(qtype: str, addresses: list[str], duration: float) -> DNSQuery:
    answers = [DNSAnswer(qtype, a, 0) for a in addresses[:MAX_ANSWERS]]  # TTL not exposed
    failure = None if answers else Failure.DNS_NO_ANSWER
    return DNSQuery(qtype, bool(answers), failure, None, answers, duration)


def _record(response: dns.message.Message, host: str, qtype: str, duration: float) -> DNSQuery:
    """The query record of a reply: rcode, the CNAME chain, the addresses."""
    rcode_number = int(response.rcode())
    rcode = dns.rcode.to_text(response.rcode())
    answers = _chain_answers(response, dns.name.from_text(host), qtype)
    if rcode != "NOERROR":
        failure: str | None = _RCODE_FAILURES.get(rcode, Failure.DNS_SERVER_MISBEHAVING)
    elif not any(a.rtype == qtype for a in answers):
        failure = Failure.DNS_NO_ANSWER
    else:
        failure = None
    return DNSQuery(qtype, failure is None, failure, rcode, answers, duration, rcode_number)


def _chain_answers(
    response: dns.message.Message, name: dns.name.Name, qtype: str
) -> list[DNSAnswer]:
    """Follow CNAMEs from the question's name within the answer section.

    Only class IN counts: an "A" of another class (CHAOS's is a name and a
    number) is not an address, whatever a hostile resolver puts there.
    """
    wanted = dns.rdatatype.from_text(qtype)
    out: list[DNSAnswer] = []
    seen: set[dns.name.Name] = set()
    while name not in seen and len(out) < MAX_ANSWERS:
        seen.add(name)
        rrsets = [r for r in response.answer if r.name == name and r.rdclass == dns.rdataclass.IN]
        direct = [r for r in rrsets if r.rdtype == wanted]
        if direct:
            for rd in direct[0]:
                out.append(DNSAnswer(qtype, rd.address, direct[0].ttl))
            break
        cname = next((r for r in rrsets if r.rdtype == dns.rdatatype.CNAME), None)
        if cname is None:
            break
        target = next(iter(cname)).target
        out.append(DNSAnswer("CNAME", target.to_text(omit_final_dot=True), cname.ttl))
        name = target
    return out[:MAX_ANSWERS]


def _addresses(queries: list[DNSQuery]) -> list[str]:
    """A answers first, then AAAA, de-duplicated, in answer order."""
    out: dict[str, None] = {}
    for q in queries:
        for a in q.answers:
            if a.rtype in ("A", "AAAA"):
                out.setdefault(_canonical(a.value), None)
    return list(out)


@functools.lru_cache(maxsize=8192)  # the same answers, measurement after measurement
def _canonical(address: str) -> str:
    """The canonical text of an answer's address (ValueError for anything else)."""
    return str(ipaddress.ip_address(address))


def _stage_failure(queries: list[DNSQuery]) -> str:
    """The most telling failure: an empty answer says less than NXDOMAIN or a timeout."""
    failures = [q.failure for q in queries if q.failure]
    telling = [f for f in failures if f != Failure.DNS_NO_ANSWER]
    return (telling or failures or [Failure.DNS_NO_ANSWER])[0]
