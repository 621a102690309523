"""Contract cases of the classifier found in OONI's measurements (issue 15).

Each test takes its situation from one of OONI's simulated QA scenarios (the
scenario name is the ground truth) or real measurements in
``../shared/ooni-real/`` (SOURCES.md): the facts of the measurement (what the
vantage's own resolver answered, what the control saw, which failure ended the
exchange) become the records lifeline's stages would have written, and the
classifier judges them. The OONI files are read where they are, never copied;
without that folder the tests skip and say why. One case is also recreated on
the loopback lab (a redirect to a name this vantage's resolver denies).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from exporter.export.ooni import ooni_record
from probes.classify import classify
from probes.measure import measure
from probes.model import ResolverSpec, Target, Vantage
from probes.net import VantageNet
from probes.records import (
    HTTPHop,
    HTTPStage,
    Measurement,
    Result,
    TCPAttempt,
    TCPStage,
    TLSCertificate,
    TLSStage,
    Verdict,
)
from tests.fakes import LOOPBACK, FakeDNS
from tests.test_classify import FPS, RATIO, assert_sentence, dns_stage

OONI = Path(__file__).resolve().parents[1].parent / "shared" / "ooni-real"
OONI = OONI if OONI.is_dir() else Path("/work/shared/ooni-real")
SIMULATED = OONI / "simulated" / "ooni_probe-cli"


def scenario(name: str) -> dict[str, Any]:
    """One of OONI's simulated QA measurements (test_keys), or skip saying why."""
    path = SIMULATED / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"OONI's simulated scenario {name} is not in {SIMULATED} (../shared/ooni-real)")
    keys: dict[str, Any] = json.loads(path.read_text())["test_keys"]
    return keys


def system_answers(keys: dict[str, Any], host: str) -> tuple[list[str], str | None]:
    """What the vantage's own resolver (OONI's getaddrinfo) said about ``host``."""
    for q in keys["queries"]:
        if q["engine"] == "getaddrinfo" and q["hostname"] == host:
            found = [a.get("ipv4") or a.get("ipv6") for a in q.get("answers") or []]
            return [a for a in found if a], q["failure"]
    raise AssertionError(f"no getaddrinfo query for {host}")


def control_dns_failure(keys: dict[str, Any]) -> str | None:
    """The test helper's DNS failure in lifeline's words."""
    failure = keys["control"]["dns"]["failure"]
    return {None: None, "dns_name_error": "dns_nxdomain_error"}.get(failure, failure)


def response_page(keys: dict[str, Any], index: int = 0) -> HTTPStage:
    req = keys["requests"][index]
    body = req["response"]["body"]
    text = body if isinstance(body, str) else ""
    title = (
        text.split("<title>", 1)[1].split("</title>", 1)[0].strip() if "<title>" in text else None
    )
    return HTTPStage(
        ok=True,
        failure=None,
        duration_s=0.1,
        url=req["request"]["url"],
        status=req["response"]["code"],
        title=title,
        body_length=len(text.encode()),
        body_head=text[:2048],
        request_sent=True,
    )


def reached(
    url: str, vantage: str, addresses: list[str], http: HTTPStage | None, *, dns_fail: str | None
) -> Measurement:
    """A measurement of ``url``: DNS (and, when it resolved, TCP, TLS for https, HTTP)."""
    host = url.split("/")[2]
    https = url.startswith("https:")
    m = Measurement(target=url, vantage=vantage, time="2024-05-01T12:00:00Z", service="site")
    m.dns = dns_stage(host, [] if dns_fail else addresses, dns_fail)
    if dns_fail:
        return m
    port = 443 if https else 80
    m.tcp = TCPStage(
        ok=True,
        failure=None,
        duration_s=0.01,
        attempts=[TCPAttempt(addresses[0], port, True, None, 0.01)],
        address=addresses[0],
        port=port,
    )
    if https:
        m.tls = TLSStage(
            ok=True,
            failure=None,
            duration_s=0.02,
            address=addresses[0],
            server_name=host,
            certificate=TLSCertificate(subject_cn=host, san=[host]),
        )
    m.http = http
    return m


def judge(obs: Measurement, control: Measurement) -> Any:
    return classify(obs, control=control, canaries=[], fingerprints=FPS, throttle_ratio=RATIO)


# --- invented answers for a name that does not exist ---------------------------------


@pytest.mark.parametrize("name", ["ghostDNSBlockingWithHTTP", "ghostDNSBlockingWithHTTPS"])
def test_answers_for_a_name_the_control_says_does_not_exist_are_not_ok(name: str) -> None:
    """ghostDNSBlocking: the name is gone (the control's NXDOMAIN), the ISP's resolver
    still answers with its own server's address. Never "consistent with the control"."""
    keys = scenario(name)
    url = keys["requests"][0]["request"]["url"] if keys["requests"] else "https://itsat.info/"
    host = url.split("/")[2]
    addresses, failure = system_answers(keys, host)
    assert addresses and failure is None
    ctl_failure = control_dns_failure(keys)
    assert ctl_failure == "dns_nxdomain_error"
    page = response_page(keys) if keys["requests"] else None
    obs = reached(url, "censored", addresses, page, dns_fail=None)
    if page is None:  # https: the vantage got no further than TLS in OONI's run either
        obs.http = HTTPStage(ok=True, failure=None, duration_s=0.1, url=url, status=200,
                             title="Access Denied", body_length=200, request_sent=True)  # fmt: skip
    control = reached(url, "control", [], None, dns_fail=ctl_failure)

    j = judge(obs, control)
    assert j.verdict is Verdict.ANOMALY, j.reason
    assert "does not exist" in j.reason and addresses[0] in j.reason
    assert_sentence(j)

    # the same invented answer, but a reserved address (dnsHijackingToLocalhost's
    # 127.0.0.1): a censor's mark the control does not see
    bogon, _ = system_answers(scenario("dnsHijackingToLocalhostWithHTTP"), "www.example.com")
    obs_bogon = reached(url, "censored", bogon, obs.http, dns_fail=None)
    j = judge(obs_bogon, control)
    assert j.verdict is Verdict.DNS_BLOCKED, j.reason
    assert "does not exist" in j.reason and bogon[0] in j.reason

    # a control that *failed* to resolve (SERVFAIL, timeout) says nothing about the name:
    # that stays "reachable, although the control fails"
    for failing in ("dns_servfail_error", "generic_timeout_error"):
        j = judge(obs, reached(url, "control", [], None, dns_fail=failing))
        assert j.verdict is Verdict.OK and "although the control fails" in j.reason


# --- failures while following a redirect ------------------------------------------------


def _redirect_obs(keys: dict[str, Any], failure: str, *, request_sent: bool) -> Measurement:
    """bit.ly answers 308 to www.example.com; following it fails with ``failure``."""
    hop = keys["requests"][-1]  # OONI lists the requests last first
    url = hop["request"]["url"]
    location = hop["response"]["headers"]["Location"]
    addresses, _ = system_answers(keys, url.split("/")[2])
    http = HTTPStage(
        ok=False,
        failure=failure,
        duration_s=0.2,
        url=url,
        redirects=[HTTPHop(url, hop["response"]["code"], location, addresses[0])],
        request_sent=request_sent,
    )
    return reached(url, "censored", addresses, http, dns_fail=None)


def _redirect_control(keys: dict[str, Any]) -> Measurement:
    hop = keys["requests"][-1]
    url = hop["request"]["url"]
    ctl = keys["control"]
    page = HTTPStage(
        ok=True,
        failure=None,
        duration_s=0.2,
        url=url,
        status=ctl["http_request"]["status_code"],
        title=ctl["http_request"].get("title"),
        body_length=ctl["http_request"]["body_length"],
        redirects=[HTTPHop(url, hop["response"]["code"], hop["response"]["headers"]["Location"])],
        request_sent=True,
    )
    return reached(url, "control", ctl["dns"]["addrs"], page, dns_fail=None)


def test_a_redirect_targets_dns_failure_is_dns_blocked() -> None:
    """redirectWithConsistentDNSAndThenNXDOMAIN: the failing stage is the target's DNS."""
    keys = scenario("redirectWithConsistentDNSAndThenNXDOMAIN")
    _, failure = system_answers(keys, "www.example.com")
    assert failure == "dns_nxdomain_error"
    j = judge(_redirect_obs(keys, failure, request_sent=False), _redirect_control(keys))
    assert j.verdict is Verdict.DNS_BLOCKED, j.reason
    assert "redirect target www.example.com" in j.reason and failure in j.reason
    assert_sentence(j)


@pytest.mark.parametrize(
    ("failure", "verdict"),
    [
        ("connection_refused", Verdict.TCP_BLOCKED),
        ("ssl_invalid_hostname", Verdict.TLS_BLOCKED),
        ("connection_reset", Verdict.TLS_BLOCKED),  # https: before the request, it is the handshake
    ],
)
def test_tcp_and_tls_failures_at_a_redirect_target_name_their_stage(
    failure: str, verdict: Verdict
) -> None:
    """redirectWithConsistentDNSAndThenConnectionRefusedForHTTPS and its kin, failing
    before the request to the redirect target was written."""
    keys = scenario("redirectWithConsistentDNSAndThenConnectionRefusedForHTTPS")
    j = judge(_redirect_obs(keys, failure, request_sent=False), _redirect_control(keys))
    assert j.verdict is verdict, j.reason
    assert "redirect target www.example.com" in j.reason
    assert_sentence(j)


def test_a_timeout_reaching_a_redirect_target_says_which_host_and_what_is_unknown() -> None:
    """redirectWithConsistentDNSAndThenTimeoutForHTTPS, but hanging before the request to
    www.example.com was written: DNS, TCP or TLS, the record cannot say which."""
    keys = scenario("redirectWithConsistentDNSAndThenTimeoutForHTTPS")
    obs = _redirect_obs(keys, "generic_timeout_error", request_sent=False)
    j = judge(obs, _redirect_control(keys))
    assert j.verdict is Verdict.HTTP_BLOCKED, j.reason
    assert "redirect target www.example.com" in j.reason and "before the request" in j.reason
    assert_sentence(j)


async def test_a_redirect_to_a_name_the_vantage_resolver_denies_is_dns_blocked_on_loopback() -> (
    None
):
    """The same case measured for real: a loopback site redirects to another name; this
    vantage's resolver says NXDOMAIN for it, the control's resolves it."""

    async def short(request: web.Request) -> web.Response:
        port = request.url.port
        raise web.HTTPPermanentRedirect(f"http://dest.lifeline.test:{port}/")

    async def dest(request: web.Request) -> web.Response:
        return web.Response(text="<html><title>Destination</title>the page</html>",
                            content_type="text/html")  # fmt: skip

    app = web.Application()
    app.router.add_get("/go", short)
    app.router.add_get("/", dest)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    censored = await FakeDNS(
        {"short.lifeline.test": ["A 127.0.0.1"], "dest.lifeline.test": "nxdomain"}
    ).start()
    honest = await FakeDNS(
        {"short.lifeline.test": ["A 127.0.0.1"], "dest.lifeline.test": ["A 127.0.0.1"]}
    ).start()
    nets = [
        VantageNet(Vantage(name, ResolverSpec("udp", LOOPBACK, dns.port)), ca_file=None)
        for name, dns in (("censored", censored), ("control", honest))
    ]
    try:
        target = Target.parse(f"http://short.lifeline.test:{port}/go")
        obs, ctl = [
            await measure(target, net.vantage, net, timeout=5, max_body_bytes=1 << 16)
            for net in nets
        ]
    finally:
        for net in nets:
            await net.aclose()
        await censored.close()
        await honest.close()
        await runner.cleanup()
    assert ctl.http is not None and ctl.http.ok and ctl.http.status == 200
    j = judge(obs, ctl)
    assert j.verdict is Verdict.DNS_BLOCKED, j.reason
    assert "redirect target dest.lifeline.test" in j.reason and "dns_nxdomain_error" in j.reason


# --- HTTP failures that are not a censor's --------------------------------------------------


def test_a_broken_redirect_is_an_anomaly_not_http_blocked() -> None:
    """redirectWithBrokenLocationForHTTP: the site's own broken Location (OONI calls it
    http-failure; the scenario is no censorship). Not a censor's reset/timeout/EOF."""
    keys = scenario("redirectWithBrokenLocationForHTTP")
    req = keys["requests"][0]
    url = req["request"]["url"]
    addresses, _ = system_answers(keys, url.split("/")[2])
    http = HTTPStage(
        ok=False,
        failure="http_bad_redirect",  # OONI: http_invalid_redirect_location_host
        duration_s=0.1,
        url=url,
        redirects=[HTTPHop(url, req["response"]["code"], "http:///nohost", addresses[0])],
        request_sent=True,
    )
    obs = reached(url, "censored", addresses, http, dns_fail=None)
    ctl_http = keys["control"]["http_request"]
    page = HTTPStage(ok=True, failure=None, duration_s=0.1, url=url,
                     status=ctl_http["status_code"], body_length=ctl_http["body_length"],
                     request_sent=True)  # fmt: skip
    control = reached(url, "control", keys["control"]["dns"]["addrs"], page, dns_fail=None)
    j = judge(obs, control)
    assert j.verdict is Verdict.ANOMALY, j.reason
    assert "http_bad_redirect" in j.reason and "not a censor's signature" in j.reason
    assert_sentence(j)


def test_an_unknown_failure_of_our_own_is_error_not_http_blocked() -> None:
    """successWithHTTP's site, but lifeline could not decode what came back: its own
    failure (unknown_failure), so the measurement cannot be judged."""
    keys = scenario("successWithHTTP")
    url = keys["requests"][0]["request"]["url"]
    addresses, _ = system_answers(keys, url.split("/")[2])
    broken = HTTPStage(ok=False, failure="unknown_failure: UnicodeDecodeError: bad header",
                       duration_s=0.1, url=url, request_sent=True)  # fmt: skip
    obs = reached(url, "censored", addresses, broken, dns_fail=None)
    control = reached(url, "control", keys["control"]["dns"]["addrs"], response_page(keys),
                      dns_fail=None)  # fmt: skip
    j = judge(obs, control)
    assert j.verdict is Verdict.ERROR, j.reason
    assert "unknown_failure" in j.reason
    assert_sentence(j)
    # the control failing the same way makes it the site's: service_down, as before
    ctl_broken = reached(url, "control", keys["control"]["dns"]["addrs"], broken, dns_fail=None)
    assert judge(obs, ctl_broken).verdict is Verdict.SERVICE_DOWN


def test_a_filters_redirect_to_a_private_address_stays_http_blocked() -> None:
    """AU, feminist.org (ooni/backend web_connectivity_b64_hdr): a 307 to a Check Point
    UserCheck portal on 192.168.22.1; lifeline refuses to follow a public site into a
    private network (http_bad_redirect), which is still the filter's redirect."""
    path = (
        OONI
        / "real"
        / "ooni_backend"
        / "fastpath_fastpath_tests_data_web_connectivity_b64_hdr.json"
    )
    if not path.is_file():
        pytest.skip(f"the AU measurement is not in {path.parent} (../shared/ooni-real)")
    keys = json.loads(path.read_text())["test_keys"]
    req = keys["requests"][0]
    location = base64.b64decode(req["response"]["headers"]["Location"]["data"]).decode("latin-1")
    url = req["request"]["url"]
    addresses = [a["ipv4"] for a in keys["queries"][0]["answers"] if a.get("ipv4")]
    http = HTTPStage(ok=False, failure="http_bad_redirect", duration_s=0.1, url=url,
                     redirects=[HTTPHop(url, req["response"]["code"], location, addresses[0])],
                     request_sent=True)  # fmt: skip
    obs = reached(url, "censored", addresses, http, dns_fail=None)
    ctl_http = keys["control"]["http_request"]
    page = HTTPStage(ok=True, failure=None, duration_s=0.1, url=url, status=ctl_http["status_code"],
                     title=ctl_http["title"], body_length=ctl_http["body_length"],
                     request_sent=True)  # fmt: skip
    control = reached(url, "control", addresses, page, dns_fail=None)
    j = judge(obs, control)
    assert j.verdict is Verdict.HTTP_BLOCKED, j.reason
    assert "192.168.22.1" in j.reason
    assert_sentence(j)


def test_the_ooni_export_tells_the_new_anomalies_apart() -> None:
    """An HTTP failure that is not a censor's is OONI's "http-failure", invented answers
    for a name that does not exist "dns": neither is a page that differs ("http-diff")."""
    keys = scenario("ghostDNSBlockingWithHTTP")
    url = keys["requests"][0]["request"]["url"]
    addresses, _ = system_answers(keys, "itsat.info")
    obs = reached(url, "censored", addresses, response_page(keys), dns_fail=None)
    control = reached(url, "control", [], None, dns_fail="dns_nxdomain_error")
    invented = ooni_record(Result(obs, Verdict.ANOMALY, judge(obs, control).reason, control))
    assert invented["test_keys"]["blocking"] == "dns"

    keys = scenario("successWithHTTP")
    url = keys["requests"][0]["request"]["url"]
    addresses, _ = system_answers(keys, "www.example.com")
    broken = HTTPStage(ok=False, failure="http_protocol_error", duration_s=0.1, url=url,
                       request_sent=True)  # fmt: skip
    obs = reached(url, "censored", addresses, broken, dns_fail=None)
    control = reached(url, "control", addresses, response_page(keys), dns_fail=None)
    j = judge(obs, control)
    assert j.verdict is Verdict.ANOMALY
    failed = ooni_record(Result(obs, j.verdict, j.reason, control))
    assert failed["test_keys"]["blocking"] == "http-failure"
    assert failed["test_keys"]["accessible"] is False


@pytest.mark.parametrize(
    "name", ["dnsHijackingToLocalhostWithHTTP", "dnsHijackingToLocalhostWithHTTPS"]
)
def test_answers_of_loopback_alone_are_judged_though_nothing_was_connected(name: str) -> None:
    """A measurer that does not dial loopback answers (OONI Probe) leaves a record that ends
    at DNS: loopback for a name the control resolves publicly is the resolver's tampering."""
    verdict = Verdict.DNS_BLOCKED
    keys = scenario(name)
    url = keys["requests"][0]["request"]["url"] if keys.get("requests") else None
    host = keys["queries"][0]["hostname"]
    url = url or f"{'https' if name.endswith('HTTPS') else 'http'}://{host}/"
    mine, _ = system_answers(keys, host)
    assert mine and all(a.startswith("127.") or a == "::1" for a in mine)
    obs = Measurement(target=url, vantage="censored", time="2024-05-01T12:00:00Z", service="s")
    obs.dns = dns_stage(host, mine, None)  # OONI did not connect: nothing after DNS
    theirs = keys["control"]["dns"]["addrs"]
    control = reached(url, "control", theirs, response_page(keys), dns_fail=None)
    j = judge(obs, control)
    assert j.verdict is verdict, j.reason
    assert mine[0] in j.reason and theirs[0] in j.reason
    assert_sentence(j)
    alone = classify(obs, control=None, canaries=(), fingerprints=FPS, throttle_ratio=RATIO)
    assert alone.verdict is Verdict.ERROR  # with no control to compare, still not judged
