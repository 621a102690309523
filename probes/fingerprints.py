"""Known marks of censorship: injected DNS answers, block pages, censor headers.

A fingerprint lets the classifier name blocking even without a control
(CONTRACT §2: "fingerprints decide ``*_blocked`` even without a control").
Because a fingerprint is trusted without comparison, a false match is costly,
so pages that merely *look* like blocking (a Cloudflare challenge, a stock
nginx 403, a server-side geo-block) are listed as false positives and checked
first: a page matching one of them is never named a block page.

The built-in entries are in :mod:`probes.fingerprint_facts`, each a single
published fact with its source in a comment:
  - OONI blocking-fingerprints (github.com/ooni/blocking-fingerprints, the
    ``fingerprints_dns.csv`` / ``fingerprints_http.csv`` rows named there);
  - Censored Planet (github.com/censoredplanet/censoredplanet-analysis,
    ``pipeline/metadata/data/blockpage_signatures.json`` and
    ``false_positive_signatures.json``, fingerprint names there);
  - Cloudflare's documentation of its challenge pages.
This module compiles them with the config's own (``fingerprints:`` and its
files) and matches them.

Nothing here ever connects anywhere: the injected addresses are only compared
with recorded answers (and handed to the engine so that it never dials them).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urljoin, urlsplit

from probes.evidence import HTTPStage
from probes.fingerprint_facts import (
    _BLOCK_HOSTS,
    _BLOCK_SIGNATURES,
    _BODY,
    _BODY_START,
    _CONFIGURED_DNS,
    _DNS_INJECTED,
    _FALSE_POSITIVES,
    _HEADER,
    _LOCATION,
    _PAGE_HEAD,
    _SERVER,
    _TITLE,
    PAGE_HEAD_CHARS,
)
from probes.model import FingerprintRow, Fingerprints, is_ip

__all__ = ["BodyScan", "FingerprintSet", "normalize_address"]


# --- records -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signature:
    """One compiled signature: where it looks, what it is called, the pattern."""

    where: str  # "body" | "body_start" | "title" | "server" | "location" | "header:<name>"
    name: str
    regex: re.Pattern[str]
    #: casefolded texts one of which every match contains (_literal_hints); None: always search
    hints: tuple[str, ...] | None = None

    def matches(
        self, http: HTTPStage, folded: dict[str, str] | None = None, scanned: bool = False
    ) -> bool:
        """``folded``: casefolded texts already made for this response (shared by the
        signatures of one :meth:`FingerprintSet.match_http` call, so each text is
        folded once rather than once per hint of every signature). ``scanned``: the
        whole body was scanned with this signature's set (its head is not looked at)."""
        texts = _texts(http, self.where, scanned)
        if self.hints is not None:  # substring tests rule ordinary pages out ~10x faster
            if folded is None:
                folded = {}
            kept = []
            for t in texts:
                f = folded.get(t)
                if f is None:
                    f = folded[t] = _folded(t)
                if any(h in f for h in self.hints):
                    kept.append(t)
            texts = kept
        return any(self.regex.search(text) for text in texts)


@functools.lru_cache(maxsize=8192)  # the classifier asks for every answer, every measurement
def normalize_address(address: str) -> str:
    """The canonical text of an address ("D0:0::11" -> "d0::11"), or the input lowered.

    IPv4-mapped IPv6 answers are reduced to their IPv4 address, so an injector
    cannot slip past an exact-string comparison by changing the notation.
    """
    text = address.strip().strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return address.strip().lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass(frozen=True, slots=True)
class FingerprintSet:
    """Built-in fingerprints plus the config's, compiled once; read-only.

    It pickles as the config's :class:`Fingerprints` (rebuilt, cached, on the
    other side), so a worker process gets the same set without a copy of every
    compiled pattern.
    """

    dns: Mapping[str, str]  # normalized injected address -> who injects it
    block_pages: tuple[_Signature, ...]
    false_positives: tuple[_Signature, ...]
    extra: Fingerprints = field(default=Fingerprints(), compare=False)
    #: normalized block-page host or address -> name (redirects stop there)
    hosts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: one pattern matching (in folded text) wherever any body signature's hint
    #: occurs: a text it finds nothing in needs no hinted body signature searched
    prefilter: AnyOf | None = field(default=None, compare=False)
    #: "sha256:<hex>" of everything the set matches, built-in and configured alike: two
    #: sets with the same digest judge every record the same way (records' judged_with)
    digest: str = field(default="", compare=False)

    @classmethod
    def build(cls, extra: Fingerprints = Fingerprints()) -> FingerprintSet:  # noqa: B008 (frozen)
        """The built-in fingerprints plus ``extra`` (from the config's ``fingerprints:``).

        ``http_body_patterns`` are regular expressions searched in the page;
        an invalid one raises ValueError naming it (config validation should
        have caught it already). Built once per ``extra`` (cached).
        """
        return _build(extra)

    def __reduce__(self) -> tuple[Callable[..., FingerprintSet], tuple[Any, ...]]:
        return (_build, (self.extra,))

    def injected_addresses(self) -> frozenset[str]:
        """Every known injected DNS answer (normalized): measure must never dial these."""
        return frozenset(self.dns)

    def match_dns(self, addresses: Sequence[str]) -> str | None:
        """'<address> (<who injects it>)' for the first answer that is a known injection."""
        for address in addresses:
            who = self.dns.get(normalize_address(address))
            if who is not None:
                return f"{normalize_address(address)} ({who})"
        return None

    def block_host(self, host: str | None) -> str | None:
        """The name of the block page served at ``host`` (a name or an address), else None.

        A listed name covers its subdomains (``x.lamanlabuh.aduankonten.id``).
        """
        if not host:
            return None
        name = normalize_address(host).rstrip(".")
        while name:
            found = self.hosts.get(name)
            if found is not None:
                return found
            if ":" in name or is_ip(name):
                return None
            name = name.partition(".")[2]
        return None

    def body_scan(self) -> BodyScan:
        """A scanner of one body, fed decoded text as it arrives (the HTTP stage)."""
        return BodyScan(self)

    def match_http(self, http: HTTPStage) -> str | None:
        """The name of the block page or censor header this response shows, else None.

        False positives are checked first: a Cloudflare challenge or a stock
        nginx 403 is never named a block page, whatever else it contains. What
        the HTTP stage found scanning the whole body (``body_signatures``,
        ``body_false_positives``) counts for the signatures of this set with
        those names; the stored head, title, headers and hops are matched again,
        except the head by body signatures when this very set made the scan
        (``body_scanned_with``): the head is part of the body it scanned.
        """
        folded: dict[str, str] = {}
        scanned = bool(self.digest) and http.body_scanned_with == self.digest
        quiet = self._quiet(http, folded, scanned)
        if self._false_positive(http, folded, quiet, scanned) is not None:
            return None
        found = set(http.body_signatures or ())
        for sig in self.block_pages:
            if sig.where == _BODY and sig.name in found:
                return sig.name
            if quiet and sig.where == _BODY and sig.hints is not None:
                continue
            if sig.matches(http, folded, scanned):
                return sig.name
        for target in _redirect_hosts(http):
            name = self.block_host(target)
            if name is not None:
                return name
        return None

    def false_positive(self, http: HTTPStage) -> str | None:
        """The name of the look-alike (challenge, stock error page) this response is, else None."""
        folded: dict[str, str] = {}
        scanned = bool(self.digest) and http.body_scanned_with == self.digest
        return self._false_positive(http, folded, self._quiet(http, folded, scanned), scanned)

    def _false_positive(
        self, http: HTTPStage, folded: dict[str, str], quiet: bool, scanned: bool
    ) -> str | None:
        found = set(http.body_false_positives or ())
        for sig in self.false_positives:
            if sig.where == _BODY and sig.name in found:
                return sig.name
            if quiet and sig.where == _BODY and sig.hints is not None:
                continue
            if sig.matches(http, folded, scanned):
                return sig.name
        return None

    def _quiet(self, http: HTTPStage, folded: dict[str, str], scanned: bool) -> bool:
        """No hint of any body signature occurs in the page's texts (one pass each)."""
        if self.prefilter is None:
            return False
        for text in _texts(http, _BODY, scanned):
            f = folded.get(text)
            if f is None:
                f = folded[text] = _folded(text)
            if self.prefilter.found(f):
                return False
        return True


@functools.lru_cache(maxsize=16)
def _build(extra: Fingerprints) -> FingerprintSet:
    dns = {normalize_address(a): who for a, who in _DNS_INJECTED}
    for address in extra.dns_addresses:
        dns.setdefault(normalize_address(address), _CONFIGURED_DNS)
    pages = [_compile(where, name, rx) for where, name, rx in _BLOCK_SIGNATURES]
    for pattern in extra.http_body_patterns:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid http_body_pattern {pattern!r}: {exc}") from None
        pages.append(_Signature(_BODY, f"configured pattern {pattern!r}", regex, _hints_for(regex)))
    fps = [_compile(where, name, rx) for where, name, rx in _FALSE_POSITIVES]
    hosts = {normalize_address(h): name for h, name in _BLOCK_HOSTS}
    for row in extra.rows:
        if row.location_found == "dns":
            dns.setdefault(normalize_address(row.pattern), f"fingerprint {row.name}")
            continue
        sig = _row_signature(row)
        (fps if row.scope == "fp" else pages).append(sig)
    hints = {h for sig in (*pages, *fps) if sig.where == _BODY for h in sig.hints or ()}
    return FingerprintSet(
        dns=MappingProxyType(dns),
        block_pages=tuple(pages),
        false_positives=tuple(fps),
        extra=extra,
        hosts=MappingProxyType(hosts),
        prefilter=AnyOf(hints) if hints else None,
        digest=_digest(dns, pages, fps, hosts),
    )


def _digest(
    dns: Mapping[str, str],
    pages: Sequence[_Signature],
    fps: Sequence[_Signature],
    hosts: Mapping[str, str],
) -> str:
    def signatures(sigs: Sequence[_Signature]) -> list[list[object]]:
        return sorted([x.where, x.name, x.regex.pattern, int(x.regex.flags)] for x in sigs)

    canonical = {
        "dns": sorted(dns.items()),
        "block_pages": signatures(pages),
        "false_positives": signatures(fps),
        "hosts": sorted(hosts.items()),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


#: Up to this many hints, each is looked for with ``in`` (a C substring search, about
#: 0.3 µs per KiB of text each); above it, one pass of their trie as a regular
#: expression (about 34 µs per KiB, whatever their number) is cheaper.
#: (``python -m benchmarks.hotspots`` measures both.)
MAX_PLAIN_HINTS = 96


class AnyOf:
    """Whether one of a set of folded texts occurs in a text: the body signatures'
    prefilter, so that an ordinary page is ruled out in one cheap pass."""

    __slots__ = ("_plain", "_trie")

    def __init__(self, texts: set[str], max_plain: int = MAX_PLAIN_HINTS) -> None:
        self._plain = tuple(sorted(texts)) if len(texts) <= max_plain else None
        self._trie = None if self._plain is not None else _trie(texts)

    def found(self, text: str) -> bool:
        if self._plain is not None:
            return any(t in text for t in self._plain)
        assert self._trie is not None
        return self._trie.search(text) is not None


def _trie(texts: set[str]) -> re.Pattern[str]:
    """A pattern found wherever one of ``texts`` occurs: their trie, so that one pass
    over a text costs about the same for 10 texts as for 1,500 (an alternation of
    1,500 literals would try each at every position). A text that another one
    starts with makes the rest of its branch unnecessary."""
    root: dict[str, Any] = {}
    for text in texts:
        node = root
        for c in text:
            node = node.setdefault(c, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        if "" in node:
            return ""  # a whole text ends here: whatever follows, it occurred
        alts = []
        for c in sorted(node):
            run, child = c, node[c]
            while len(child) == 1 and "" not in child:
                ((c2, child),) = child.items()
                run += c2
            alts.append(re.escape(run) + build(child))
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return re.compile(build(root))


def _row_signature(row: FingerprintRow) -> _Signature:
    """A fingerprint file's row as a signature (OONI's matching: case-sensitive).

    ``full`` and ``prefix`` rows on the body are matched against the stored body
    head (the start of the body); every other body row is scanned over the
    whole body as it arrives.
    """
    where = row.location_found
    if where.startswith("header."):
        header = where.split(".", 1)[1]
        where = _LOCATION if header == "location" else f"{_HEADER}:{header}"
    if row.pattern_type == "regexp":
        pattern = row.pattern
    elif row.pattern_type == "contains":
        pattern = re.escape(row.pattern)
    elif row.pattern_type == "prefix":
        pattern = r"\A" + re.escape(row.pattern)
    else:
        pattern = r"\A" + re.escape(row.pattern) + r"\Z"
    anchored = where == _BODY and row.pattern_type in ("full", "prefix")
    if anchored:
        where = _BODY_START
    regex = re.compile(pattern)
    return _Signature(where, f"fingerprint {row.name}", regex, _hints_for(regex))


#: Body text is scanned in blocks of at least this many characters (so a body that
#: trickles in byte by byte still costs one pass), with the overlap below kept between.
SCAN_BLOCK_CHARS = 16_384
#: Characters kept from one block to the next: a signature whose match is at most
#: this long is found even across a chunk boundary (twice the longest pattern, at
#: least 512, at most MAX_OVERLAP_CHARS).
MAX_OVERLAP_CHARS = 16_384


class BodyScan:
    """The body signatures (block pages and false positives) found in one body.

    Fed decoded text in order; each piece is searched once, with the tail of the
    previous one kept before it so that a match across two chunks is found. The
    body itself is never kept whole.
    """

    def __init__(self, fps: FingerprintSet) -> None:
        self._sigs = [(sig, False) for sig in fps.block_pages if sig.where == _BODY] + [
            (sig, True) for sig in fps.false_positives if sig.where == _BODY
        ]
        longest = max((len(sig.regex.pattern) for sig, _ in self._sigs), default=0)
        self.overlap = min(MAX_OVERLAP_CHARS, max(512, 2 * longest))
        self._prefilter = fps.prefilter
        self.digest = fps.digest  # which set's names ``blocks`` and ``false_positives`` are
        self._tail = ""
        self._pending: list[str] = []
        self._pending_chars = 0
        self.blocks: list[str] = []  # names of block-page signatures found, in order
        self.false_positives: list[str] = []
        self.scanned_chars = 0

    def feed(self, text: str) -> None:
        if not text:
            return
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars >= SCAN_BLOCK_CHARS:
            self._scan()

    def finish(self) -> None:
        """Scan what is still pending (the end of the body), and the end of the last block
        again where a match touching it waited for what followed."""
        if self._pending or self._tail:
            self._scan(final=True)

    def _scan(self, final: bool = False) -> None:
        fresh = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        self.scanned_chars += len(fresh)
        window = self._tail + fresh
        # The tail's first character is context only (a match starting there would have
        # been longer than the overlap): "\b" or "^" must not see a false start of text.
        start = 1 if self._tail else 0
        folded = _folded(window)
        hit = self._prefilter is None or self._prefilter.found(folded)
        left = []
        for sig, is_fp in self._sigs:
            if sig.hints is not None:
                if not hit or not any(h in folded for h in sig.hints):
                    left.append((sig, is_fp))
                    continue
            if _found(sig.regex, window, start, final):
                names = self.false_positives if is_fp else self.blocks
                if sig.name not in names:
                    names.append(sig.name)
            else:
                left.append((sig, is_fp))
        self._sigs = left  # a signature found once is not searched again
        self._tail = window[-self.overlap :]


def _found(regex: re.Pattern[str], window: str, start: int, final: bool) -> bool:
    """A match in ``window`` from ``start``. Before the body's end, one that touches the
    window's end does not count yet ("\b" or "$" there may be a chunk boundary, not the
    text's end): the next window, which keeps it in its overlap, decides."""
    for match in regex.finditer(window, start):
        if final or match.end() < len(window):
            return True
    return False


# --- helpers -----------------------------------------------------------------


def _compile(where: str, name: str, pattern: str) -> _Signature:
    regex = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    return _Signature(where, name, regex, _hints_for(regex))


_MIN_HINT = 4
_CLASS_ESCAPES = frozenset("bBsSdDwWAZ")


def _folded(text: str) -> str:
    """What hints are looked for in: casefolded, with dotted capital I and dotless i as i.

    re.IGNORECASE matches both against "i", but casefold() turns U+0130 into
    two code points ("i" + combining dot) and leaves U+0131 alone.
    """
    return text.replace("\u0130", "i").casefold().replace("\u0131", "i")


def _hints_for(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    """Hints for a compiled signature: none in verbose mode, where spaces are not literal."""
    return None if regex.flags & re.VERBOSE else _literal_hints(regex.pattern)


def _literal_hints(pattern: str) -> tuple[str, ...] | None:
    """Folded texts (:func:`_folded`) one of which every match of ``pattern`` contains;
    None if unsure.

    One text per top-level alternative: the longest run of plain characters
    outside groups and classes (escaped punctuation is plain; a character
    made optional by ``?``, ``*`` or ``{`` after it is not). An alternative
    without a run of at least _MIN_HINT characters means no hints at all.
    """
    hints = []
    for branch in _top_level_branches(pattern):
        best = max(_plain_runs(branch), key=len, default="")
        if len(best) < _MIN_HINT:
            return None
        hints.append(_folded(best))
    return tuple(hints)


def _top_level_branches(pattern: str) -> list[str]:
    branches, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] == "]" else 1  # "[]...]": the first ] is literal
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            branches.append(pattern[start:i])
            start = i + 1
        i += 1
    return [*branches, pattern[start:]]


def _plain_runs(branch: str) -> list[str]:
    """The runs of literal characters at depth 0 of one alternative."""
    runs: list[str] = []
    run: list[str] = []
    i = 0

    def cut() -> None:
        runs.append("".join(run))
        run.clear()

    while i < len(branch):
        c = branch[i]
        if c in "?*{":  # the character before is optional
            if run:
                run.pop()
            cut()
            i = branch.find("}", i) + 1 if c == "{" else i + 1
            if i == 0:
                return []  # an unclosed brace: unsure
            continue
        if c == "\\":
            after = branch[i + 1 : i + 2]
            if after and not after.isalnum():  # escaped punctuation: a literal
                run.append(after)
            elif after in _CLASS_ESCAPES:
                cut()
            else:
                return []  # \\x41, \\n, \\1, \\N{…}: unsure
            i += 2
            continue
        if c in "([":
            cut()
            i = _skip_group(branch, i)
            if i < 0:
                return []
            continue
        if c in ".^$+)]}|":
            cut()
            i += 1
            continue
        run.append(c)
        i += 1
    cut()
    return runs


def _skip_group(text: str, i: int) -> int:
    """The index after the group or class opening at ``i`` (and its quantifier); -1 if unclosed."""
    close = "]" if text[i] == "[" else ")"
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if close == "]":
            if c == "]" and j > i + 1 and not (j == i + 2 and text[i + 1] == "^"):
                break
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                break
        j += 1
    else:
        return -1
    j += 1
    if j < len(text) and text[j] in "?*+":
        j += 1
    elif j < len(text) and text[j] == "{":
        k = text.find("}", j)
        return -1 if k < 0 else k + 1
    return j


def _texts(http: HTTPStage, where: str, scanned: bool = False) -> list[str]:
    """The parts of a response a signature of kind ``where`` looks at (its hops' too).

    ``scanned``: the whole body (the head is its start) was scanned already with the
    signature's set, so a body signature looks at the titles alone (a title's entities
    are decoded: it may read differently from the body's text).
    """
    hops = http.redirects
    if where == _BODY:
        head = None if scanned else http.body_head
        return [t for t in (http.title, head, *(h.title for h in hops)) if t]
    if where == _TITLE:
        return [t for t in (http.title, *(h.title for h in hops)) if t]
    if where == _BODY_START:
        return [http.body_head] if http.body_head else []
    if where == _PAGE_HEAD:
        head = (http.body_head or "")[:PAGE_HEAD_CHARS]
        return [t for t in (http.title, head, *(h.title for h in hops)) if t]
    if where == _SERVER:
        where = f"{_HEADER}:server"
    if where == _LOCATION:
        return _redirect_targets(http)
    if where.startswith(_HEADER + ":"):
        wanted = where.split(":", 1)[1]
        out = [v for k, v in http.headers.items() if k.lower() == wanted and v]
        for hop in hops:
            out += [v for k, v in (hop.headers or {}).items() if k.lower() == wanted and v]
        return out
    return []


def _redirect_targets(http: HTTPStage) -> list[str]:
    """Every URL the response pointed or led to: Location headers, hops, the final URL."""
    out = [hop.location for hop in http.redirects if hop.location]
    out += [hop.url for hop in http.redirects[1:] if hop.url]
    out += [v for k, v in http.headers.items() if k.lower() == "location" and v]
    if http.final_url and http.final_url != http.url:
        out.append(http.final_url)
    return out


def _redirect_hosts(http: HTTPStage) -> list[str]:
    """The host of every redirect target (relative Locations against their hop's URL)."""
    hosts = []
    targets = [(hop.url, hop.location) for hop in http.redirects]
    targets += [(http.url, t) for t in _redirect_targets(http)]
    for base, target in targets:
        if not target:
            continue
        try:
            host = urlsplit(urljoin(base or "", target)).hostname
        except ValueError:
            continue
        if host:
            hosts.append(host)
    return hosts


