"""Fingerprints: known injected DNS answers, block pages, censor headers, false positives.

Every observation here is a recorded (constructed) record: nothing connects to
the censor addresses named in these tests.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.fingerprints import FingerprintSet, normalize_address
from probes.model import Fingerprints
from probes.records import HTTPHop, HTTPStage

IRAN_PAGE = (
    "<html><head><title>Blocked</title></head><body>"
    '<iframe src="http://10.10.34.34?type=Invalid Site&policy=MainPolicy" '
    'style="width: 100%; height: 100%"></iframe></body></html>'
)


def response(
    *,
    status: int = 200,
    title: str | None = "A page",
    body: str | None = "<html><body>hello</body></html>",
    headers: dict[str, str] | None = None,
    redirects: list[HTTPHop] | None = None,
    final_url: str | None = None,
) -> HTTPStage:
    return HTTPStage(
        ok=True,
        failure=None,
        duration_s=0.1,
        url="http://example.lifeline.test/",
        final_url=final_url,
        status=status,
        title=title,
        body_head=body,
        body_length=len(body or ""),
        headers=headers or {},
        redirects=redirects or [],
    )


@pytest.fixture(scope="module")
def builtin() -> FingerprintSet:
    return FingerprintSet.build()


# --- DNS --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["10.10.34.34", "10.10.34.35", "10.10.34.36", "d0::11", "8.7.198.45"]
)
def test_known_injected_answers_are_built_in(builtin: FingerprintSet, address: str) -> None:
    assert address in builtin.injected_addresses()
    assert builtin.match_dns([address]) is not None


def test_iran_answer_is_named_with_who_injects_it(builtin: FingerprintSet) -> None:
    assert builtin.match_dns(["127.0.0.10", "10.10.34.35"]) == "10.10.34.35 (Iran national filter)"


def test_china_answer_is_named(builtin: FingerprintSet) -> None:
    assert builtin.match_dns(["8.7.198.45"]) == "8.7.198.45 (China Great Firewall)"


@pytest.mark.parametrize(
    "spelling", ["00d0:0:0:0:0:0:0:0011", "D0::11", "[d0::11]", "::ffff:10.10.34.34"]
)
def test_other_spellings_of_an_injected_address_match(
    builtin: FingerprintSet, spelling: str
) -> None:
    assert builtin.match_dns([spelling]) is not None


def test_ordinary_and_loopback_answers_do_not_match(builtin: FingerprintSet) -> None:
    assert builtin.match_dns(["127.0.0.10", "127.0.0.1", "0.0.0.0", "2001:db8::1"]) is None
    assert builtin.match_dns([]) is None
    assert builtin.match_dns(["not an address"]) is None


def test_configured_addresses_are_added_and_listed_for_the_stop_set() -> None:
    fps = FingerprintSet.build(Fingerprints(dns_addresses=("127.0.0.66", "2001:DB8::66")))
    assert fps.match_dns(["127.0.0.66"]) == "127.0.0.66 (listed in the config's fingerprints)"
    assert {"127.0.0.66", "2001:db8::66", "10.10.34.34"} <= fps.injected_addresses()
    assert FingerprintSet.build().match_dns(["127.0.0.66"]) is None


def test_normalize_address_keeps_non_addresses_readable() -> None:
    assert normalize_address(" Example.TEST ") == "example.test"
    assert normalize_address("fe80::1%eth0") == "fe80::1"


# --- HTTP block pages -------------------------------------------------------------


def test_iran_iframe_block_page(builtin: FingerprintSet) -> None:
    assert builtin.match_http(response(body=IRAN_PAGE)) == "Iran national filter block page"


def test_iran_ipv6_iframe_block_page(builtin: FingerprintSet) -> None:
    body = '<iframe src="http://[d0:0:0:0:0:0:0:11:80]" width="100%"></iframe>'
    assert builtin.match_http(response(body=body)) == "Iran national filter block page"


@pytest.mark.parametrize("marker", ["peyvandha.ir", "www.internet.ir"])
def test_iran_block_page_markers(builtin: FingerprintSet, marker: str) -> None:
    body = f"<p>See <a href='http://{marker}/'>{marker}</a></p>"
    assert builtin.match_http(response(body=body)) == "Iran national filter block page"


@pytest.mark.parametrize("marker", ["peyvandha.ir", "www.internet.ir", "warning.or.kr"])
def test_a_long_page_that_mentions_a_filters_domain_is_no_block_page(
    builtin: FingerprintSet, marker: str
) -> None:
    """A block page names its filter's domain at once; a long ordinary page (an article on
    filtering) may quote it further down, and that is no block page."""
    article = "<html><head><title>News</title></head><body>" + "<p>text</p>" * 1000
    quoting = article + f"<p>the filter's portal, {marker}, says</p></body></html>"
    assert len(quoting) > 10_000
    assert builtin.match_http(response(title="News", body=quoting)) is None
    short = f"<html><body><p>{marker}</p></body></html>"
    assert builtin.match_http(response(title="News", body=short)) is not None


def test_marker_inside_a_longer_name_does_not_match(builtin: FingerprintSet) -> None:
    assert builtin.match_http(response(body="visit myinternet.iran-news.example")) is None


def test_fortiguard_page(builtin: FingerprintSet) -> None:
    body = "<h1>FortiGuard Web Filtering</h1><p>Web Page Blocked!</p>"
    assert builtin.match_http(response(status=403, body=body)) == "FortiGuard web filter block page"


def test_wirefilter_server_header(builtin: FingerprintSet) -> None:
    http = response(headers={"server": "Protected by WireFilter 8.1"})
    assert builtin.match_http(http) == "WireFilter censor header"


def test_header_value_elsewhere_is_not_a_censor_header(builtin: FingerprintSet) -> None:
    http = response(headers={"server": "nginx", "x-note": "Protected by WireFilter"})
    assert builtin.match_http(http) is None


def test_redirect_to_iran_block_server(builtin: FingerprintSet) -> None:
    hops = [
        HTTPHop(url="http://example.lifeline.test/", status=302, location="http://10.10.34.34/"),
        HTTPHop(url="http://10.10.34.34/", status=200),
    ]
    http = response(redirects=hops, final_url="http://10.10.34.34/")
    assert builtin.match_http(http) == "redirect to Iran's national block page"


def test_redirect_to_an_ordinary_site_is_not_a_block_page(builtin: FingerprintSet) -> None:
    hops = [HTTPHop(url="http://x.lifeline.test/", status=301, location="https://x.lifeline.test/")]
    http = response(redirects=hops, final_url="https://x.lifeline.test/")
    assert builtin.match_http(http) is None


def test_configured_body_pattern_is_a_regex() -> None:
    fps = FingerprintSet.build(Fingerprints(http_body_patterns=(r"blocked by order \d+",)))
    name = fps.match_http(response(body="<p>This site is blocked by order 1234</p>"))
    assert name == "configured pattern 'blocked by order \\\\d+'"
    assert fps.match_http(response(body="<p>blocked by order of the day</p>")) is None


def test_invalid_configured_pattern_is_reported() -> None:
    with pytest.raises(ValueError, match="invalid http_body_pattern"):
        FingerprintSet.build(Fingerprints(http_body_patterns=("(unclosed",)))


def test_an_ordinary_page_matches_nothing(builtin: FingerprintSet) -> None:
    assert builtin.match_http(response()) is None
    assert builtin.match_http(response(title=None, body=None)) is None


# --- false positives are checked first ---------------------------------------------


CLOUDFLARE_CHALLENGE = (
    "<html><head><title>Just a moment...</title></head><body>"
    "Checking your browser before accessing the site. peyvandha.ir</body></html>"
)
NGINX_403 = (
    "<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n"
    "<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n</body></html>"
)


def test_cloudflare_challenge_is_never_a_block_page(builtin: FingerprintSet) -> None:
    # It even mentions a block-page marker: the false positive wins.
    http = response(status=403, title="Just a moment...", body=CLOUDFLARE_CHALLENGE)
    assert builtin.match_http(http) is None
    assert builtin.false_positive(http) == "Cloudflare challenge"


def test_cloudflare_mitigation_header_is_a_false_positive(builtin: FingerprintSet) -> None:
    http = response(status=403, headers={"cf-mitigated": "challenge", "server": "cloudflare"})
    assert builtin.false_positive(http) == "Cloudflare challenge"


def test_generic_nginx_403_is_a_false_positive(builtin: FingerprintSet) -> None:
    http = response(status=403, title="403 Forbidden", body=NGINX_403)
    assert builtin.match_http(http) is None
    assert builtin.false_positive(http) == "generic nginx 403"


def test_false_positive_beats_configured_pattern() -> None:
    fps = FingerprintSet.build(Fingerprints(http_body_patterns=("Forbidden",)))
    assert fps.match_http(response(status=403, body=NGINX_403)) is None
    assert fps.match_http(response(status=403, body="<h1>Forbidden</h1>")) is not None


def test_fingerprint_set_is_read_only(builtin: FingerprintSet) -> None:
    with pytest.raises(TypeError):
        builtin.dns["127.0.0.1"] = "oops"  # type: ignore[index]


# --- literal hints are only a shortcut: they never change a match ------------------------

_SIGNATURES = [
    *FingerprintSet.build(Fingerprints(http_body_patterns=(r"blocked\s+by\s+order",))).block_pages,
    *FingerprintSet.build().false_positives,
]


def _bits(draw: st.DrawFn) -> str:
    """Text made of pieces of the signatures' own patterns, case-shuffled, and noise."""
    sig = draw(st.sampled_from(_SIGNATURES))
    hint = draw(st.sampled_from(sig.hints or ("",)))
    piece = "".join(draw(st.sampled_from(_CASES.get(c, (c, c.upper())))) for c in hint)
    noise = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
    return draw(noise) + piece + draw(noise)


#: Characters that re.IGNORECASE matches beyond plain upper/lower case.
_CASES = {
    "i": ("i", "I", "\u0130", "\u0131"),  # dotted capital I, dotless small i
    "s": ("s", "S", "\u017f"),  # long s
    "k": ("k", "K", "\u212a"),  # Kelvin sign
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hints_never_change_a_match(data: st.DataObject) -> None:
    text = data.draw(st.composite(_bits)())
    http = HTTPStage(
        ok=True, failure=None, duration_s=0.1, url="http://x.test/", status=200,
        body_head=text, title=text[:50], headers={"server": text, "location": text},
    )  # fmt: skip
    for sig in _SIGNATURES:
        unhinted = dataclasses.replace(sig, hints=None)
        assert sig.matches(http) == unhinted.matches(http), (sig.name, text)
