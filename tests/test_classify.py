"""The classifier: every verdict, every rule of the decision order, the lab catalogue.

Observations are constructed records (what the stages would have recorded);
classification is pure, so nothing here touches the network.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.classify import Judgement, classify
from probes.failures import Failure
from probes.fingerprints import FingerprintSet
from probes.model import Fingerprints
from probes.records import (
    DNSAnswer,
    DNSQuery,
    DNSStage,
    HTTPHop,
    HTTPStage,
    Measurement,
    TCPAttempt,
    TCPStage,
    TLSCertificate,
    TLSStage,
    Verdict,
)

# The lab config lists 127.0.0.66 as an injected address (it stands in for 10.10.34.34).
FPS = FingerprintSet.build(Fingerprints(dns_addresses=("127.0.0.66",)))
RATIO = 0.25
ORIGIN = "127.0.0.10"
STAGES = {
    "https": ("dns", "tcp", "tls", "http"),
    "http": ("dns", "tcp", "http"),
    "tls": ("dns", "tcp", "tls"),
    "tcp": ("dns", "tcp"),
    "dns": ("dns",),
}


# --- record builders ----------------------------------------------------------------


def page(
    status: int = 200,
    title: str | None = "Lifeline open page",
    body_length: int = 5120,
    *,
    body_head: str | None = "<html><body>the real page</body></html>",
    headers: dict[str, str] | None = None,
    throughput_bps: float | None = None,
    transfer_s: float | None = None,
    truncated: bool = False,
    redirects: list[HTTPHop] | None = None,
) -> HTTPStage:
    """A response that arrived (HTTP stage ok)."""
    return HTTPStage(
        ok=True,
        failure=None,
        duration_s=0.05,
        status=status,
        title=title,
        body_length=body_length,
        body_head=body_head,
        headers=headers if headers is not None else {"server": "lab"},
        throughput_bps=throughput_bps,
        transfer_s=transfer_s,
        body_truncated=truncated,
        redirects=redirects or [],
        request_sent=True,
    )


@dataclass
class Obs:
    """What one vantage saw of one target: a compact description turned into records."""

    target: str
    vantage: str = "censored"
    answers: Sequence[str] = (ORIGIN,)
    fail: tuple[str, str] | None = None  # (stage, failure)
    response: HTTPStage = field(default_factory=page)
    cert_names: Sequence[str] = ()
    via_proxy: bool = True
    throughput: bool = False
    expect_status: Sequence[int] = ()
    error: str | None = None
    http_failure_after_bytes: bool = False

    def build(self) -> Measurement:
        parts = urlsplit(self.target)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or {"https": 443, "http": 80}.get(scheme, 0)
        m = Measurement(
            target=self.target,
            vantage=self.vantage,
            time="2024-05-01T12:00:00Z",
            service=host.split(".")[0],
            throughput=self.throughput,
            expect_status=list(self.expect_status),
            error=self.error,
        )
        if self.error is not None:
            return m
        for stage in STAGES[scheme]:
            failure = self.fail[1] if self.fail and self.fail[0] == stage else None
            setattr(m, stage, self._stage(stage, failure, host, port))
            if failure is not None:
                break
        return m

    def _stage(
        self, stage: str, failure: str | None, host: str, port: int
    ) -> DNSStage | TCPStage | TLSStage | HTTPStage:
        address = self.answers[0] if self.answers else ORIGIN
        if stage == "dns":
            return dns_stage(host, [] if failure else list(self.answers), failure)
        if stage == "tcp":
            attempt = TCPAttempt(address, port, failure is None, failure, 0.01)
            return TCPStage(
                ok=failure is None,
                failure=failure,
                duration_s=0.01,
                attempts=[attempt],
                address=None if failure else address,
                port=port,
                via_proxy=self.via_proxy,
            )
        if stage == "tls":
            cert = TLSCertificate(
                subject_cn=(self.cert_names or [host])[0], san=list(self.cert_names or [host])
            )
            return TLSStage(
                ok=failure is None,
                failure=failure,
                duration_s=0.02,
                address=address,
                server_name=host,
                certificate=cert,
            )
        if failure is not None:
            return HTTPStage(
                ok=False, failure=failure, duration_s=0.1, url=self.target, request_sent=True
            )
        return self.response


def dns_stage(name: str, addresses: list[str], failure: str | None = None) -> DNSStage:
    rcode = {"dns_nxdomain_error": "NXDOMAIN", "dns_servfail_error": "SERVFAIL"}.get(
        failure or "", None if failure else "NOERROR"
    )
    answers = [DNSAnswer("AAAA" if ":" in a else "A", a, 60) for a in addresses]
    query = DNSQuery("A", failure is None, failure, rcode, answers, 0.01)
    return DNSStage(
        ok=failure is None,
        failure=failure,
        duration_s=0.01,
        name=name,
        resolver="udp://127.0.0.1:5353",
        addresses=addresses,
        queries=[query],
    )


def canary(vantage: str, *, down: bool = False) -> Measurement:
    fail = ("dns", Failure.TIMEOUT.value) if down else None
    return Obs("https://canary.lifeline.test:8443/", vantage=vantage, fail=fail).build()


def judge(
    obs: Obs | Measurement,
    control: Obs | Measurement | None = None,
    *,
    canaries: Sequence[Measurement] | None = None,
    control_canaries: Sequence[Measurement] = (),
    peers: Sequence[Measurement] = (),
    is_control: bool = False,
    fingerprints: FingerprintSet = FPS,
) -> Judgement:
    o = obs.build() if isinstance(obs, Obs) else obs
    c = control.build() if isinstance(control, Obs) else control
    return classify(
        o,
        control=c,
        canaries=[canary(o.vantage)] if canaries is None else canaries,
        fingerprints=fingerprints,
        throttle_ratio=RATIO,
        is_control=is_control,
        control_canaries=control_canaries,
        peers=peers,
    )


def ctl(target: str, **kw: Any) -> Obs:
    """The control's view: honest answers, direct connections."""
    return Obs(target, vantage="control", via_proxy=False, **kw)


HTTPS = "https://site.lifeline.test:8443/"
HTTP = "http://site.lifeline.test:8080/"
DNS = "dns://site.lifeline.test"


def assert_sentence(j: Judgement) -> None:
    assert j.reason and "\n" not in j.reason
    assert j.reason[0].isupper() and j.reason.endswith(".")


# --- 1. vantage_down ---------------------------------------------------------------------


def test_every_canary_failing_with_the_target_is_vantage_down() -> None:
    j = judge(
        Obs(HTTPS, fail=("dns", "generic_timeout_error")),
        ctl(HTTPS),
        canaries=[canary("censored", down=True), canary("censored", down=True)],
    )
    assert j.verdict is Verdict.VANTAGE_DOWN
    assert "All 2 canaries failed" in j.reason and "generic_timeout_error" in j.reason


def test_vantage_down_comes_before_fingerprints() -> None:
    obs = Obs(HTTPS, answers=["127.0.0.66"], fail=("tcp", "generic_timeout_error"))
    j = judge(obs, canaries=[canary("censored", down=True)])
    assert j.verdict is Verdict.VANTAGE_DOWN


def test_no_canaries_means_unknown_never_vantage_down() -> None:
    j = judge(Obs(HTTPS, fail=("dns", "generic_timeout_error")), canaries=[])
    assert j.verdict is Verdict.UNREACHABLE


def test_one_working_canary_means_the_vantage_is_up() -> None:
    cans = [canary("censored", down=True), canary("censored")]
    j = judge(Obs(HTTPS, fail=("dns", "generic_timeout_error")), ctl(HTTPS), canaries=cans)
    assert j.verdict is Verdict.DNS_BLOCKED


def test_canaries_that_could_not_be_measured_say_nothing() -> None:
    errored = Obs("https://canary.lifeline.test:8443/", error="internal error").build()
    j = judge(Obs(HTTPS, fail=("tcp", "connection_reset")), ctl(HTTPS), canaries=[errored])
    assert j.verdict is Verdict.TCP_BLOCKED


def test_a_target_that_works_during_a_shutdown_is_ok() -> None:
    # National shutdowns keep domestic services up: the target answered.
    j = judge(Obs(HTTPS), ctl(HTTPS), canaries=[canary("censored", down=True)])
    assert j.verdict is Verdict.OK


# --- 2. fingerprints ----------------------------------------------------------------------


BLOCK_PAGE = page(
    title="Blocked",
    body_length=640,
    body_head='<html><body><iframe src="http://10.10.34.34?type=Invalid Site"></iframe>'
    "peyvandha.ir</body></html>",
)


def test_known_injected_answer_is_dns_blocked_without_control() -> None:
    j = judge(Obs(DNS, answers=["10.10.34.34"]))
    assert j.verdict is Verdict.DNS_BLOCKED
    assert "10.10.34.34" in j.reason and "Iran national filter" in j.reason


def test_injected_aaaa_answer_is_dns_blocked() -> None:
    j = judge(Obs(DNS, answers=[ORIGIN, "d0::11"]), ctl(DNS))
    assert j.verdict is Verdict.DNS_BLOCKED
    assert "d0::11" in j.reason and "while the control resolved it to 127.0.0.10" in j.reason


def test_injected_answer_in_a_query_of_a_failed_stage_still_counts() -> None:
    obs = Obs(DNS, fail=("dns", "dns_server_misbehaving")).build()
    assert obs.dns is not None
    obs.dns.queries[0].answers.append(DNSAnswer("A", "10.10.34.35", 60))
    assert judge(obs).verdict is Verdict.DNS_BLOCKED


def test_injected_address_the_control_also_gets_is_not_injection() -> None:
    j = judge(Obs(DNS, answers=["127.0.0.66"]), ctl(DNS, answers=["127.0.0.66"]))
    assert j.verdict is Verdict.OK


def test_ip_literal_target_is_never_a_dns_fingerprint() -> None:
    obs = Obs("tcp://10.10.34.34:80", answers=["10.10.34.34"]).build()
    assert obs.dns is not None
    obs.dns.skipped = True
    assert judge(obs).verdict is Verdict.OK


def test_block_page_is_http_blocked_without_control() -> None:
    j = judge(Obs(HTTP, response=BLOCK_PAGE))
    assert j.verdict is Verdict.HTTP_BLOCKED
    assert "Iran national filter block page" in j.reason


def test_block_page_beats_a_failing_control() -> None:
    j = judge(Obs(HTTP, response=BLOCK_PAGE), ctl(HTTP, fail=("tcp", "connection_refused")))
    assert j.verdict is Verdict.HTTP_BLOCKED


def test_http_451_is_http_blocked_without_control() -> None:
    j = judge(Obs(HTTP, response=page(451, "Unavailable For Legal Reasons", 300)))
    assert j.verdict is Verdict.HTTP_BLOCKED
    assert "451" in j.reason


def test_451_at_the_control_too_is_the_sites_answer() -> None:
    gone = page(451, "Unavailable For Legal Reasons", 300)
    j = judge(Obs(HTTP, response=gone), ctl(HTTP, response=gone))
    assert j.verdict is Verdict.SERVICE_DOWN


def test_redirect_to_a_block_page_is_http_blocked() -> None:
    hops = [
        HTTPHop(HTTP, 302, "http://10.10.34.34/blocked"),
        HTTPHop("http://10.10.34.34/blocked", 200),
    ]
    j = judge(Obs(HTTP, response=page(redirects=hops)), ctl(HTTP))
    assert j.verdict is Verdict.HTTP_BLOCKED
    assert "redirect" in j.reason


def test_censor_header_is_http_blocked() -> None:
    resp = page(403, "Access denied", 400, headers={"server": "Protected by WireFilter 8"})
    assert judge(Obs(HTTP, response=resp)).verdict is Verdict.HTTP_BLOCKED


def test_cloudflare_challenge_is_never_named_blocking() -> None:
    challenge = page(
        403,
        "Just a moment...",
        9000,
        body_head="<title>Just a moment...</title> Checking your browser before accessing",
        headers={"cf-mitigated": "challenge"},
    )
    assert judge(Obs(HTTPS, response=challenge), ctl(HTTPS)).verdict is Verdict.ANOMALY
    assert judge(Obs(HTTPS, response=challenge)).verdict is Verdict.OK


def test_generic_nginx_403_is_not_blocking() -> None:
    nginx = page(
        403,
        "403 Forbidden",
        150,
        body_head="<center><h1>403 Forbidden</h1></center>\n<hr><center>nginx</center>",
    )
    j = judge(Obs(HTTP, response=nginx), ctl(HTTP))
    assert j.verdict is Verdict.ANOMALY


def test_block_page_the_control_also_gets_is_not_a_censors() -> None:
    j = judge(Obs(HTTP, response=BLOCK_PAGE), ctl(HTTP, response=BLOCK_PAGE))
    assert j.verdict is Verdict.OK


# --- 3. error ----------------------------------------------------------------------------


def test_measurement_error_is_error() -> None:
    j = judge(Obs(HTTPS, error="unsupported proxy scheme"), ctl(HTTPS))
    assert j.verdict is Verdict.ERROR
    assert "unsupported proxy scheme" in j.reason


def test_error_comes_before_a_failing_control() -> None:
    j = judge(Obs(HTTPS, error="bad target"), ctl(HTTPS, fail=("dns", "dns_nxdomain_error")))
    assert j.verdict is Verdict.ERROR


def test_measurement_that_stopped_silently_is_error() -> None:
    obs = Obs(HTTPS).build()
    obs.http = None  # TLS worked, then nothing: no failure recorded
    j = judge(obs, ctl(HTTPS))
    assert j.verdict is Verdict.ERROR
    assert "HTTP stage" in j.reason


# --- 4. service_down ----------------------------------------------------------------------


def test_failure_at_the_same_stage_at_the_control_is_service_down() -> None:
    j = judge(
        Obs(HTTPS, fail=("tcp", "connection_refused")),
        ctl(HTTPS, fail=("tcp", "connection_refused")),
    )
    assert j.verdict is Verdict.SERVICE_DOWN
    assert "control as well" in j.reason


def test_control_failing_earlier_is_service_down() -> None:
    j = judge(
        Obs(HTTPS, fail=("tls", "connection_reset")),
        ctl(HTTPS, fail=("dns", "dns_nxdomain_error")),
    )
    assert j.verdict is Verdict.SERVICE_DOWN


def test_control_failing_later_leaves_this_stage_blocked() -> None:
    j = judge(
        Obs(HTTPS, fail=("tcp", "connection_reset")),
        ctl(HTTPS, response=page(503, "Service Unavailable", 200)),
    )
    assert j.verdict is Verdict.TCP_BLOCKED


def test_unexpected_status_at_both_is_service_down() -> None:
    down = page(503, "Service Unavailable", 200)
    j = judge(Obs(HTTPS, response=down), ctl(HTTPS, response=down))
    assert j.verdict is Verdict.SERVICE_DOWN
    assert "status 503" in j.reason


def test_expected_status_missing_at_both_is_service_down() -> None:
    j = judge(
        Obs(HTTPS, expect_status=[204]),
        ctl(HTTPS, expect_status=[204]),
    )
    assert j.verdict is Verdict.SERVICE_DOWN


def test_failure_at_the_control_vantage_itself_is_service_down() -> None:
    obs = ctl(HTTPS, fail=("tcp", "connection_refused"))
    j = judge(obs, is_control=True, canaries=[canary("control")])
    assert j.verdict is Verdict.SERVICE_DOWN
    assert "control vantage itself" in j.reason


def test_success_at_the_control_vantage_is_ok() -> None:
    j = judge(ctl(HTTPS), is_control=True, canaries=[canary("control")])
    assert j.verdict is Verdict.OK
    assert "control vantage itself" in j.reason


def test_fingerprints_apply_at_the_control_vantage_too() -> None:
    j = judge(ctl(HTTP, response=BLOCK_PAGE), is_control=True)
    assert j.verdict is Verdict.HTTP_BLOCKED


def _nx(vantage: str, **kw: Any) -> Measurement:
    return Obs(DNS, vantage=vantage, fail=("dns", "dns_nxdomain_error"), **kw).build()


def test_every_vantage_failing_the_same_definite_way_without_control_is_service_down() -> None:
    j = judge(_nx("censored"), peers=[_nx("ir-2"), _nx("tr-1")])
    assert j.verdict is Verdict.SERVICE_DOWN
    assert "all 3 vantages" in j.reason and "no control" in j.reason


def test_two_vantages_agreeing_is_not_enough_for_an_outage() -> None:
    assert judge(_nx("censored"), peers=[_nx("ir-2")]).verdict is Verdict.UNREACHABLE


def test_peers_failing_differently_leave_it_unreachable() -> None:
    other = Obs(DNS, vantage="tr-1", fail=("dns", "dns_servfail_error")).build()
    assert judge(_nx("censored"), peers=[_nx("ir-2"), other]).verdict is Verdict.UNREACHABLE


def test_timeouts_everywhere_are_not_read_as_an_outage() -> None:
    def silent(v: str) -> Measurement:
        return Obs(DNS, vantage=v, fail=("dns", "generic_timeout_error")).build()

    j = judge(silent("censored"), peers=[silent("a"), silent("b")])
    assert j.verdict is Verdict.UNREACHABLE


def test_refusals_through_proxies_are_not_read_as_an_outage() -> None:
    def refused(v: str, proxy: bool) -> Measurement:
        return Obs(HTTPS, vantage=v, fail=("tcp", "connection_refused"), via_proxy=proxy).build()

    through = judge(refused("censored", True), peers=[refused("a", False), refused("b", False)])
    assert through.verdict is Verdict.UNREACHABLE
    direct = judge(refused("censored", False), peers=[refused("a", False), refused("b", False)])
    assert direct.verdict is Verdict.SERVICE_DOWN


def test_peers_are_ignored_when_there_is_a_control() -> None:
    j = judge(_nx("censored"), ctl(DNS), peers=[_nx("a"), _nx("b")])
    assert j.verdict is Verdict.DNS_BLOCKED


# --- 5. first failing stage ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "failure", "verdict", "words"),
    [
        (
            "dns",
            "dns_nxdomain_error",
            Verdict.DNS_BLOCKED,
            "while the control resolved it to 127.0.0.10",
        ),
        ("dns", "dns_servfail_error", Verdict.DNS_BLOCKED, "dns_servfail_error"),
        ("tcp", "connection_reset", Verdict.TCP_BLOCKED, "TCP connect to 127.0.0.10:8443"),
        ("tls", "connection_reset", Verdict.TLS_BLOCKED, "SNI site.lifeline.test"),
        ("tls", "generic_timeout_error", Verdict.TLS_BLOCKED, "while the control completed it"),
        ("http", "connection_reset", Verdict.HTTP_BLOCKED, "after the request was sent"),
        ("http", "eof_error", Verdict.HTTP_BLOCKED, "while the control got status 200"),
    ],
)
def test_first_stage_failing_where_the_control_succeeded(
    stage: str, failure: str, verdict: Verdict, words: str
) -> None:
    j = judge(Obs(HTTPS, fail=(stage, failure)), ctl(HTTPS))
    assert j.verdict is verdict
    assert words in j.reason and failure in j.reason
    assert_sentence(j)


def test_reason_names_the_evidence_like_the_contract_example() -> None:
    j = judge(Obs(DNS, fail=("dns", "dns_nxdomain_error")), ctl(DNS))
    assert (
        j.reason
        == "DNS failed with dns_nxdomain_error while the control resolved it to 127.0.0.10."
    )


# --- 5b. the CDN rule ---------------------------------------------------------------------------


def test_differing_answers_with_a_valid_certificate_stay_ok() -> None:
    j = judge(Obs(HTTPS, answers=["127.0.0.12"]), ctl(HTTPS, answers=["127.0.0.11"]))
    assert j.verdict is Verdict.OK
    assert "TLS is valid for the name" in j.reason


def test_differing_answers_with_a_certificate_for_another_name_are_dns_blocked() -> None:
    obs = Obs(
        HTTPS,
        answers=["127.0.0.13"],
        fail=("tls", "ssl_invalid_hostname"),
        cert_names=["impostor.lifeline.test"],
    )
    j = judge(obs, ctl(HTTPS))
    assert j.verdict is Verdict.DNS_BLOCKED
    assert "127.0.0.13" in j.reason and "127.0.0.10" in j.reason
    assert "impostor.lifeline.test" in j.reason


def test_differing_answers_with_an_unknown_authority_are_dns_blocked() -> None:
    obs = Obs(HTTPS, answers=["127.0.0.13"], fail=("tls", "ssl_unknown_authority"))
    assert judge(obs, ctl(HTTPS)).verdict is Verdict.DNS_BLOCKED


def test_differing_answers_where_nothing_listens_are_dns_blocked() -> None:
    obs = Obs(HTTPS, answers=["127.0.0.14"], fail=("tcp", "connection_refused"))
    j = judge(obs, ctl(HTTPS))
    assert j.verdict is Verdict.DNS_BLOCKED
    assert "nothing answers there" in j.reason


def test_differing_answers_with_a_different_page_are_dns_blocked() -> None:
    impostor = page(200, "Totally different", 900)
    j = judge(Obs(HTTP, answers=["127.0.0.13"], response=impostor), ctl(HTTP))
    assert j.verdict is Verdict.DNS_BLOCKED
    assert "page there differs" in j.reason


def test_differing_answers_with_the_same_page_stay_ok() -> None:
    same = page(200, "Lifeline open page", 5000)
    assert judge(Obs(HTTP, answers=["127.0.0.12"], response=same), ctl(HTTP)).verdict is Verdict.OK


def test_differing_answers_with_a_tls_reset_are_sni_blocking() -> None:
    obs = Obs(HTTPS, answers=["127.0.0.12"], fail=("tls", "connection_reset"))
    assert judge(obs, ctl(HTTPS)).verdict is Verdict.TLS_BLOCKED


def test_same_certificate_failure_on_the_control_address_is_tls_blocked() -> None:
    obs = Obs(HTTPS, fail=("tls", "ssl_invalid_hostname"), cert_names=["mitm.example"])
    assert judge(obs, ctl(HTTPS)).verdict is Verdict.TLS_BLOCKED


def test_one_shared_address_means_the_answers_do_not_differ() -> None:
    obs = Obs(HTTPS, answers=["127.0.0.99", ORIGIN], fail=("tcp", "connection_reset"))
    assert judge(obs, ctl(HTTPS)).verdict is Verdict.TCP_BLOCKED


def test_differing_answers_alone_are_not_blocking_for_a_dns_target() -> None:
    j = judge(Obs(DNS, answers=["127.0.0.12"]), ctl(DNS, answers=["127.0.0.11"]))
    assert j.verdict is Verdict.OK
    assert "not blocking" in j.reason


def test_bogon_answers_seen_by_the_control_too_are_not_blocking() -> None:
    obs = Obs(HTTPS, answers=["10.1.2.3"], fail=("tcp", "connection_reset"))
    j = judge(obs, ctl(HTTPS, answers=["10.1.2.3"]))
    assert j.verdict is Verdict.TCP_BLOCKED
    # and a private answer differing from the control's private answer is not evidence either
    assert (
        judge(Obs(DNS, answers=["10.9.9.9"]), ctl(DNS, answers=["10.1.2.3"])).verdict is Verdict.OK
    )


def test_bogon_answers_the_control_does_not_see_are_dns_blocked() -> None:
    # a public address in a recorded observation only: nothing connects to it
    j = judge(Obs(DNS, answers=["127.0.0.1"]), ctl(DNS, answers=["93.184.215.14"]))
    assert j.verdict is Verdict.DNS_BLOCKED
    assert "private or reserved" in j.reason


# --- 6. throttled -------------------------------------------------------------------------------


ASSET = "https://throttle.lifeline.test:8443/asset.bin"
FAST = page(200, None, 1_048_576, throughput_bps=20 * 1024 * 1024, transfer_s=0.05)


def _slow(transfer_s: float | None, truncated: bool) -> HTTPStage:
    return page(
        200, None, 160_000, throughput_bps=16 * 1024, transfer_s=transfer_s, truncated=truncated
    )


def test_slow_long_sample_is_throttled() -> None:
    j = judge(
        Obs(ASSET, throughput=True, response=_slow(9.8, False)),
        ctl(ASSET, throughput=True, response=FAST),
    )
    assert j.verdict is Verdict.THROTTLED
    assert "16.0 KiB/s" in j.reason and "20.0 MiB/s" in j.reason


def test_sample_cut_by_the_deadline_is_throttled() -> None:
    j = judge(
        Obs(ASSET, throughput=True, response=_slow(0.3, True)),
        ctl(ASSET, throughput=True, response=FAST),
    )
    assert j.verdict is Verdict.THROTTLED


def test_short_sample_is_noise_not_throttling() -> None:
    j = judge(
        Obs(ASSET, throughput=True, response=_slow(0.2, False)),
        ctl(ASSET, throughput=True, response=FAST),
    )
    assert j.verdict is Verdict.OK
    assert "too short" in j.reason


def test_http_timeout_mid_body_of_a_throughput_target_is_a_sample() -> None:
    obs = Obs(ASSET, throughput=True).build()
    obs.http = HTTPStage(
        ok=False,
        failure=Failure.TIMEOUT.value,
        duration_s=10.0,
        status=200,
        body_length=160_000,
        throughput_bps=16 * 1024,
        transfer_s=9.7,
        request_sent=True,
    )
    j = judge(obs, ctl(ASSET, throughput=True, response=FAST))
    assert j.verdict is Verdict.THROTTLED


def test_throttled_is_decided_before_content_differences() -> None:
    slow_other = page(
        200, "Partial download", 160_000, headers={}, throughput_bps=16 * 1024, transfer_s=9.9
    )
    fast = page(200, "Asset", 1_048_576, throughput_bps=20 * 1024 * 1024, transfer_s=0.05)
    j = judge(
        Obs(ASSET, throughput=True, response=slow_other),
        ctl(ASSET, throughput=True, response=fast),
    )
    assert j.verdict is Verdict.THROTTLED


def test_slowness_is_not_judged_on_ordinary_targets() -> None:
    j = judge(Obs(ASSET, response=_slow(9.8, True)), ctl(ASSET, response=FAST))
    assert j.verdict is Verdict.OK


def test_throughput_without_control_is_ok() -> None:
    assert judge(Obs(ASSET, throughput=True, response=_slow(9.8, True))).verdict is Verdict.OK


def test_throughput_near_the_controls_is_ok() -> None:
    close = page(200, None, 1_048_576, throughput_bps=8 * 1024 * 1024, transfer_s=0.12)
    j = judge(
        Obs(ASSET, throughput=True, response=close), ctl(ASSET, throughput=True, response=FAST)
    )
    assert j.verdict is Verdict.OK


# --- 7. anomaly ---------------------------------------------------------------------------------


GEO = page(403, "Not available in your region", 700)


def test_different_status_title_and_size_is_anomaly() -> None:
    j = judge(Obs(HTTPS, response=GEO), ctl(HTTPS))
    assert j.verdict is Verdict.ANOMALY
    assert "status 403" in j.reason and "status 200" in j.reason


def test_same_status_with_a_matching_title_is_ok() -> None:
    smaller = page(200, "Lifeline open page", 1200)
    assert judge(Obs(HTTPS, response=smaller), ctl(HTTPS)).verdict is Verdict.OK


def test_same_status_but_nothing_else_matching_is_anomaly() -> None:
    other = page(200, "Something else entirely", 800, headers={})
    j = judge(Obs(HTTPS, response=other), ctl(HTTPS))
    assert j.verdict is Verdict.ANOMALY
    assert "title" in j.reason and "800 bytes vs 5120 bytes" in j.reason


def test_a_shared_uncommon_header_is_enough_to_match() -> None:
    other = page(200, "Something else entirely", 800, headers={"x-lifeline-origin": "a"})
    same_hdr = page(headers={"x-lifeline-origin": "b"})
    assert judge(Obs(HTTPS, response=other), ctl(HTTPS, response=same_hdr)).verdict is Verdict.OK


def test_status_difference_is_ignored_when_the_control_is_not_2xx() -> None:
    moved = page(302, "Lifeline open page", 5000)
    assert judge(Obs(HTTPS), ctl(HTTPS, response=moved)).verdict is Verdict.OK


def test_unexpected_status_while_the_control_gets_the_expected_one_is_anomaly() -> None:
    j = judge(
        Obs(HTTPS, expect_status=[204], response=page(200)),
        ctl(HTTPS, expect_status=[204], response=page(204)),
    )
    assert j.verdict is Verdict.ANOMALY
    assert "not the expected 204" in j.reason


def test_a_differing_page_without_control_is_ok() -> None:
    j = judge(Obs(HTTPS, response=GEO))
    assert j.verdict is Verdict.OK
    assert "there is no control measurement" in j.reason


def test_reachable_while_the_control_fails_is_ok() -> None:
    j = judge(Obs(HTTPS), ctl(HTTPS, response=page(503, "Down", 100)))
    assert j.verdict is Verdict.OK
    assert "although the control fails" in j.reason


# --- 8. unreachable and the control being down --------------------------------------------------


def test_failure_without_control_is_unreachable_and_says_why() -> None:
    j = judge(Obs(HTTPS, fail=("tcp", "connection_reset")))
    assert j.verdict is Verdict.UNREACHABLE
    assert "there is no control measurement" in j.reason and "connection_reset" in j.reason
    assert_sentence(j)


def test_control_down_is_judged_as_no_control_and_says_so() -> None:
    j = judge(
        Obs(HTTPS, fail=("tcp", "connection_reset")),
        ctl(HTTPS, fail=("dns", "generic_timeout_error")),
        control_canaries=[canary("control", down=True)],
    )
    assert j.verdict is Verdict.UNREACHABLE
    assert "the control vantage is down" in j.reason


def test_control_down_with_a_working_target_here_is_ok_and_says_so() -> None:
    j = judge(
        Obs(HTTPS, response=GEO),
        ctl(HTTPS, fail=("dns", "generic_timeout_error")),
        control_canaries=[canary("control", down=True)],
    )
    assert j.verdict is Verdict.OK
    assert "the control vantage is down" in j.reason


def test_a_control_that_reached_the_target_is_still_a_control() -> None:
    j = judge(
        Obs(HTTPS, fail=("tcp", "connection_reset")),
        ctl(HTTPS),
        control_canaries=[canary("control", down=True)],
    )
    assert j.verdict is Verdict.TCP_BLOCKED


def test_control_measurement_that_could_not_be_made_is_no_control() -> None:
    j = judge(Obs(HTTPS, fail=("tcp", "connection_reset")), ctl(HTTPS, error="internal error"))
    assert j.verdict is Verdict.UNREACHABLE
    assert "control measurement could not be made (internal error)" in j.reason


# --- 9. ok --------------------------------------------------------------------------------------


def test_consistent_with_the_control_is_ok() -> None:
    j = judge(Obs(HTTPS), ctl(HTTPS))
    assert j == Judgement(Verdict.OK, "Reachable and consistent with the control (status 200).")


def test_tcp_target_ok_reason() -> None:
    j = judge(Obs("tcp://site.lifeline.test:9000"), ctl("tcp://site.lifeline.test:9000"))
    assert j.verdict is Verdict.OK and "TCP worked" in j.reason


# --- the lab catalogue ---------------------------------------------------------------------------

LAB_PORTS = {"https": 8443, "http": 8080, "tls": 8443, "tcp": 9000}


def lab_url(scenario: str, scheme: str, path: str = "/") -> str:
    host = f"{scenario}.lifeline.test"
    if scheme == "dns":
        return f"dns://{host}"
    if scheme in ("tls", "tcp"):
        return f"{scheme}://{host}:{LAB_PORTS[scheme]}"
    return f"{scheme}://{host}:{LAB_PORTS[scheme]}{path}"


@dataclass(frozen=True)
class Row:
    """One (scenario, target): what the censored vantage sees and the expected verdicts."""

    scenario: str
    scheme: str
    censored: dict[str, Any]
    with_control: Verdict
    without_control: Verdict
    control: dict[str, Any] = field(default_factory=dict)
    control_verdict: Verdict = Verdict.OK
    path: str = "/"
    throughput: bool = False


OK, DNSB, TCPB, TLSB, HTTPB = (
    Verdict.OK,
    Verdict.DNS_BLOCKED,
    Verdict.TCP_BLOCKED,
    Verdict.TLS_BLOCKED,
    Verdict.HTTP_BLOCKED,
)
UNR, DOWN = Verdict.UNREACHABLE, Verdict.SERVICE_DOWN
LAB_BLOCK_PAGE = page(
    200,
    "Access denied",
    610,
    body_head='<html><body><iframe src="http://10.10.34.34?type=Invalid Site&policy=MainPolicy">'
    "</iframe><p>peyvandha.ir</p></body></html>",
)
IMPOSTOR = {"answers": ["127.0.0.13"], "cert_names": ["impostor.lifeline.test"]}


def _rows() -> list[Row]:
    rows = [Row("canary", "https", {}, OK, OK)]
    rows += [Row("open", s, {}, OK, OK) for s in ("https", "http", "tls", "tcp", "dns")]
    cdn = {"answers": ["127.0.0.12"]}
    rows += [
        Row("cdn", s, cdn, OK, OK, control={"answers": ["127.0.0.11"]})
        for s in ("https", "http", "dns")
    ]
    for scenario, failure in (
        ("dns-nxdomain", "dns_nxdomain_error"),
        ("dns-servfail", "dns_servfail_error"),
        ("dns-silence", "generic_timeout_error"),
    ):
        rows += [Row(scenario, s, {"fail": ("dns", failure)}, DNSB, UNR) for s in ("https", "dns")]
    rows += [
        Row("dns-lie", "https", {**IMPOSTOR, "fail": ("tls", "ssl_invalid_hostname")}, DNSB, UNR),
        Row("dns-lie", "http", {**IMPOSTOR, "response": page(200, "Impostor", 900)}, DNSB, OK),
        Row(
            "dns-injected",
            "https",
            {"answers": ["127.0.0.66"], "fail": ("tls", "ssl_invalid_hostname")},
            DNSB,
            DNSB,
        ),
        Row("dns-injected", "dns", {"answers": ["127.0.0.66"]}, DNSB, DNSB),
    ]
    for scenario, failure in (
        ("tcp-refused", "connection_refused"),
        ("tcp-reset", "connection_reset"),
        ("tcp-blackhole", "generic_timeout_error"),
    ):
        rows += [Row(scenario, s, {"fail": ("tcp", failure)}, TCPB, UNR) for s in ("https", "tcp")]
    for scenario, failure in (
        ("tls-sni-reset", "connection_reset"),
        ("tls-sni-stall", "generic_timeout_error"),
    ):
        rows += [Row(scenario, s, {"fail": ("tls", failure)}, TLSB, UNR) for s in ("https", "tls")]
    rows += [
        Row("http-blockpage", "http", {"response": LAB_BLOCK_PAGE}, HTTPB, HTTPB),
        Row(
            "http-451",
            "http",
            {"response": page(451, "Unavailable For Legal Reasons", 320)},
            HTTPB,
            HTTPB,
        ),
        Row("http-reset", "http", {"fail": ("http", "connection_reset")}, HTTPB, UNR),
        Row("throttle", "https", {}, OK, OK),
        Row(
            "throttle",
            "https",
            {"response": _slow(9.9, True)},
            Verdict.THROTTLED,
            OK,
            control={"response": FAST},
            path="/asset.bin",
            throughput=True,
        ),
        Row("geo", "https", {"response": GEO}, Verdict.ANOMALY, OK),
        Row("geo", "http", {"response": GEO}, Verdict.ANOMALY, OK),
    ]
    nolisten = {"fail": ("tcp", "connection_refused")}
    nx = {"fail": ("dns", "dns_nxdomain_error")}
    rows += [Row("down-nolisten", s, nolisten, DOWN, UNR, nolisten, DOWN) for s in ("https", "tcp")]
    rows += [Row("down-nxdomain", s, nx, DOWN, UNR, nx, DOWN) for s in ("https", "dns")]
    return rows


LAB_ROWS = _rows()


def _lab_obs(row: Row, vantage: str, spec: dict[str, Any]) -> Measurement:
    url = lab_url(row.scenario, row.scheme, row.path)
    return Obs(
        url, vantage=vantage, throughput=row.throughput, via_proxy=vantage != "control", **spec
    ).build()


def _shutdown(row: Row) -> Measurement:
    return _lab_obs(row, "shutdown", {"fail": ("dns", "generic_timeout_error")})


def _id(row: Row) -> str:
    return f"{row.scenario}-{row.scheme}{'-asset' if row.throughput else ''}"


@pytest.mark.parametrize("row", LAB_ROWS, ids=_id)
def test_lab_catalogue_with_control(row: Row) -> None:
    control = _lab_obs(row, "control", row.control)
    censored = _lab_obs(row, "censored", row.censored)
    shutdown = _shutdown(row)
    ctl_j = judge(
        control, is_control=True, canaries=[canary("control")], peers=[censored, shutdown]
    )
    cen_j = judge(
        censored,
        control,
        canaries=[canary("censored")],
        control_canaries=[canary("control")],
        peers=[shutdown],
    )
    down_j = judge(
        shutdown,
        control,
        canaries=[canary("shutdown", down=True)],
        control_canaries=[canary("control")],
        peers=[censored],
    )
    assert (ctl_j.verdict, cen_j.verdict, down_j.verdict) == (
        row.control_verdict,
        row.with_control,
        Verdict.VANTAGE_DOWN,
    ), (ctl_j.reason, cen_j.reason, down_j.reason)
    for j in (ctl_j, cen_j, down_j):
        assert_sentence(j)


@pytest.mark.parametrize("row", LAB_ROWS, ids=_id)
def test_lab_catalogue_without_control(row: Row) -> None:
    censored = _lab_obs(row, "censored", row.censored)
    shutdown = _shutdown(row)
    cen_j = judge(censored, None, canaries=[canary("censored")], peers=[shutdown])
    down_j = judge(shutdown, None, canaries=[canary("shutdown", down=True)], peers=[censored])
    assert (cen_j.verdict, down_j.verdict) == (row.without_control, Verdict.VANTAGE_DOWN), (
        cen_j.reason
    )
    assert_sentence(cen_j)
    if cen_j.verdict is Verdict.UNREACHABLE:
        assert "there is no control measurement" in cen_j.reason


# --- properties: total and pure -----------------------------------------------------------------

FAILURES = st.one_of(
    st.none(),
    st.sampled_from([f.value for f in Failure]),
    st.text(max_size=20).map(lambda t: "unknown_failure: " + t),
)
ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.10.34.34", "d0::11", "127.0.0.66", ORIGIN, "127.0.0.12"]),
    st.text(max_size=12),
)
FLOATS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
SMALL_TEXT = st.one_of(st.none(), st.text(max_size=40))
HEADERS = st.dictionaries(
    st.sampled_from(["server", "location", "cf-mitigated", "x-lifeline-origin", "date"]),
    st.text(max_size=30),
    max_size=3,
)


@st.composite
def dns_stages(draw: st.DrawFn) -> DNSStage:
    addrs = draw(st.lists(ADDRESSES, max_size=3))
    answers = [DNSAnswer(draw(st.sampled_from(["A", "AAAA", "CNAME"])), a, 60) for a in addrs]
    query = DNSQuery("A", draw(st.booleans()), draw(FAILURES), draw(SMALL_TEXT), answers)
    return DNSStage(
        ok=draw(st.booleans()),
        failure=draw(FAILURES),
        duration_s=0.0,
        name="x.lifeline.test",
        resolver="udp://127.0.0.1:53",
        addresses=addrs,
        queries=[query],
        skipped=draw(st.booleans()),
    )


@st.composite
def tcp_stages(draw: st.DrawFn) -> TCPStage:
    attempts = [
        TCPAttempt(a, draw(st.integers(0, 65535)), draw(st.booleans()), draw(FAILURES), 0.0)
        for a in draw(st.lists(ADDRESSES, max_size=2))
    ]
    return TCPStage(
        ok=draw(st.booleans()),
        failure=draw(FAILURES),
        duration_s=0.0,
        attempts=attempts,
        via_proxy=draw(st.booleans()),
    )


@st.composite
def tls_stages(draw: st.DrawFn) -> TLSStage:
    cert = draw(
        st.one_of(
            st.none(),
            st.builds(
                TLSCertificate,
                subject_cn=SMALL_TEXT,
                san=st.lists(st.text(max_size=15), max_size=2),
            ),
        )
    )
    return TLSStage(
        ok=draw(st.booleans()),
        failure=draw(FAILURES),
        duration_s=0.0,
        server_name=draw(SMALL_TEXT),
        certificate=cert,
    )


@st.composite
def http_stages(draw: st.DrawFn) -> HTTPStage:
    hops = [
        HTTPHop(draw(st.text(max_size=20)), draw(st.one_of(st.none(), st.integers(0, 999))), loc)
        for loc in draw(st.lists(SMALL_TEXT, max_size=2))
    ]
    return HTTPStage(
        ok=draw(st.booleans()),
        failure=draw(FAILURES),
        duration_s=0.0,
        url=draw(st.text(max_size=20)),
        final_url=draw(SMALL_TEXT),
        status=draw(st.one_of(st.none(), st.integers(-1, 999), st.sampled_from([200, 403, 451]))),
        headers=draw(HEADERS),
        body_length=draw(st.one_of(st.none(), st.integers(-5, 2_000_000))),
        body_truncated=draw(st.booleans()),
        body_head=draw(st.one_of(SMALL_TEXT, st.just(LAB_BLOCK_PAGE.body_head))),
        title=draw(SMALL_TEXT),
        redirects=hops,
        request_sent=draw(st.booleans()),
        throughput_bps=draw(FLOATS),
        transfer_s=draw(FLOATS),
    )


@st.composite
def measurements(draw: st.DrawFn, vantage: str | None = None) -> Measurement:
    return Measurement(
        target=draw(
            st.one_of(
                st.sampled_from([HTTPS, HTTP, DNS, ASSET, "tls://a:1", "tcp://a:1"]),
                st.text(max_size=15),
            )
        ),
        vantage=vantage or draw(st.sampled_from(["censored", "a", "b", "c"])),
        time="2024-05-01T12:00:00Z",
        dns=draw(st.one_of(st.none(), dns_stages())),
        tcp=draw(st.one_of(st.none(), tcp_stages())),
        tls=draw(st.one_of(st.none(), tls_stages())),
        http=draw(st.one_of(st.none(), http_stages())),
        error=draw(st.one_of(st.none(), st.text(max_size=20))),
        expect_status=draw(st.lists(st.integers(100, 599), max_size=2)),
        throughput=draw(st.booleans()),
    )


@contextmanager
def no_network() -> Iterator[None]:
    """Any socket use during classification fails the test (classification does no I/O)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("classify tried to use the network")

    with (
        mock.patch.object(socket.socket, "connect", refuse),
        mock.patch.object(socket.socket, "sendto", refuse),
        mock.patch.object(socket, "getaddrinfo", refuse),
        mock.patch.object(socket, "create_connection", refuse),
    ):
        yield


def _snapshot(*groups: object) -> str:
    return repr(groups)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    obs=measurements(vantage="censored"),
    control=st.one_of(st.none(), measurements(vantage="control")),
    canaries=st.lists(measurements(vantage="censored"), max_size=2),
    control_canaries=st.lists(measurements(vantage="control"), max_size=2),
    peers=st.lists(measurements(), max_size=3),
    is_control=st.booleans(),
    ratio=st.floats(allow_nan=True, allow_infinity=True),
)
def test_classify_is_total_and_pure(
    obs: Measurement,
    control: Measurement | None,
    canaries: list[Measurement],
    control_canaries: list[Measurement],
    peers: list[Measurement],
    is_control: bool,
    ratio: float,
) -> None:
    before = copy.deepcopy((obs, control, canaries, control_canaries, peers))

    def run() -> Judgement:
        return classify(
            obs,
            control=control,
            canaries=canaries,
            fingerprints=FPS,
            throttle_ratio=ratio,
            is_control=is_control,
            control_canaries=control_canaries,
            peers=peers,
        )

    with no_network():
        first, second = run(), run()
    assert isinstance(first.verdict, Verdict)
    assert isinstance(first.reason, str) and first.reason.strip()
    assert "\n" not in first.reason
    assert first == second
    assert _snapshot(obs, control, canaries, control_canaries, peers) == _snapshot(*before)


def test_judgement_is_immutable() -> None:
    j = judge(Obs(HTTPS), ctl(HTTPS))
    with pytest.raises(AttributeError):
        j.verdict = Verdict.ERROR  # type: ignore[misc]


def test_throughput_ratio_threshold_is_respected() -> None:
    # exactly at the threshold is not below it
    at = page(200, None, 1_000_000, throughput_bps=0.25 * 4096.0, transfer_s=5.0)
    fast = page(200, None, 1_000_000, throughput_bps=4096.0, transfer_s=1.0)
    j = judge(Obs(ASSET, throughput=True, response=at), ctl(ASSET, throughput=True, response=fast))
    assert j.verdict is Verdict.OK
