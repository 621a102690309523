"""config.yaml as an operator writes it: what loads, and what each mistake says.

Nothing here measures anything: the default config names real services, and
this machine must not contact them. It is only parsed.
"""

from __future__ import annotations

import datetime
import string
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from probes.config import ConfigError, load_config, parse_config, parse_duration
from probes.model import Config, Proxy, ResolverSpec, SourceAddress, Target

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "config"

MINIMAL = """\
version: 1
vantages:
  - name: control
    control: true
    resolver: 127.0.0.1:5353
services:
  - name: web
    targets:
      - https://example.test/
"""

FULL = """\
version: 1
defaults:
  interval: 1h30m
  timeout: 250ms
  throttle_ratio: 0.5
  max_body_bytes: 65536
vantages:
  - name: control
    control: true
    resolver: tls://[::1]:8853
  - name: ir-proxy
    resolver: 127.0.0.1
    proxy: socks5://lifeline:${PROXY_PASSWORD}@127.0.0.1:1080
    source_address: 127.0.0.2
    country: ir
    timezone: Asia/Tehran
  - name: doh
    resolver: https://127.0.0.1:8443/dns-query
    proxy: http://[::1]:3128
  - name: no
    resolver: tcp://127.0.0.1:5300
    country: NO              # YAML 1.1 reads this as false; a country code is meant
canaries:
  - https://canary.test/
  - url: dns://canary.test
services:
  - name: twitter
    targets:
      - https://twitter.test/
      - url: https://abs.twimg.test/asset.js
        expect_status: [200, 304]
        throughput: true
      - tls://api.twitter.test:443
  - name: telegram
    targets:
      - tcp://127.0.0.1:443
      - dns://telegram.test
storage:
  dir: ./data
  retention: 2w
probe:
  allow: ['https://*.example.test/*']
fingerprints:
  dns_addresses: [10.10.34.34, '::ffff:a0a:2222']
  http_body_patterns: ['peyvandha\\.ir']
window:
  activity: [0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 0.5]
"""


def _errors(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env=env)
    return caught.value.errors


# --- what loads ---------------------------------------------------------------------------------


def test_the_default_config_loads_and_watches_the_major_services() -> None:
    config = load_config(REPO / "config.yaml", env={})

    assert config.path == str(REPO / "config.yaml")
    names = {service.name for service in config.services}
    assert {"twitter", "facebook", "instagram", "youtube", "whatsapp", "telegram"} <= names
    assert {"signal", "flickr", "wikipedia", "mastodon"} <= names
    assert config.control is not None
    assert config.control.resolver == ResolverSpec(kind="udp", host="9.9.9.9", port=53)
    local = config.vantage("local")
    assert local is not None and local.resolver.kind == "system" and not local.control
    assert config.canaries
    telegram = config.service("telegram")
    assert telegram is not None
    assert any(t.scheme == "tcp" and t.host_is_ip for t in telegram.targets)  # MTProto
    assert any(t.throughput for s in config.services for t in s.targets)


def test_a_full_config_loads_into_the_expected_records() -> None:
    config = parse_config(FULL, env={"PROXY_PASSWORD": "s3cret/@:#"})

    assert config.path is None
    d = config.defaults
    assert (d.interval, d.timeout, d.throttle_ratio, d.max_body_bytes) == (5400.0, 0.25, 0.5, 65536)
    assert d.ca_file is None
    control, proxied, doh, norway = config.vantages
    assert config.control == control
    assert control.resolver == ResolverSpec(kind="tls", host="::1", port=8853)
    assert proxied.resolver == ResolverSpec(kind="udp", host="127.0.0.1", port=53)
    assert proxied.proxy == Proxy(
        kind="socks5", host="127.0.0.1", port=1080, username="lifeline", password="s3cret/@:#"
    )
    assert proxied.source_address == "127.0.0.2"
    assert (proxied.country, proxied.timezone) == ("IR", "Asia/Tehran")
    assert doh.resolver == ResolverSpec(
        kind="https", host="127.0.0.1", port=8443, url="https://127.0.0.1:8443/dns-query"
    )
    assert doh.proxy == Proxy(kind="http", host="::1", port=3128)
    assert norway.resolver == ResolverSpec(kind="tcp", host="127.0.0.1", port=5300)
    assert norway.country == "NO"

    assert [t.url for t in config.canaries] == ["https://canary.test/", "dns://canary.test"]
    twitter, telegram = config.services
    asset = twitter.targets[1]
    assert asset == Target.parse(
        "https://abs.twimg.test/asset.js", expect_status=(200, 304), throughput=True
    )
    assert [t.scheme for t in twitter.targets] == ["https", "https", "tls"]
    assert [t.scheme for t in telegram.targets] == ["tcp", "dns"]

    assert (config.storage.dir, config.storage.retention) == ("./data", 14 * 86400.0)
    assert config.probe_allow == ("https://*.example.test/*",)
    assert config.fingerprints.dns_addresses == ("10.10.34.34", "::ffff:a0a:2222")
    assert config.fingerprints.http_body_patterns == (r"peyvandha\.ir",)
    assert config.window_activity is not None and len(config.window_activity) == 24
    assert config.window_activity[-1] == 0.5


def test_the_example_in_the_reference_loads() -> None:
    reference = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    example = reference.split("## Example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]

    config = parse_config(example, env={"IR_PROXY_PASSWORD": "pw"})

    proxied = config.vantage("ir-mobile")
    assert proxied is not None and proxied.proxy is not None
    assert proxied.proxy.redacted() == "socks5://lifeline:***@127.0.0.1:1080"


def test_a_minimal_config_gets_the_contract_defaults() -> None:
    config = parse_config(MINIMAL, env={})

    assert config.defaults.interval == 60.0 and config.defaults.timeout == 10.0
    assert config.defaults.throttle_ratio == 0.25
    assert config.defaults.max_body_bytes == 1_048_576
    assert config.storage.dir == "./lifeline-data" and config.storage.retention == 30 * 86400.0
    assert config.canaries == () and config.probe_allow == () and config.window_activity is None


def test_empty_optional_sections_mean_their_defaults() -> None:
    config = parse_config(MINIMAL + "canaries:\nprobe:\nfingerprints:\nstorage:\n", env={})

    assert config.canaries == () and config.storage.dir == "./lifeline-data"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("system", ResolverSpec(kind="system")),
        ("127.0.0.1", ResolverSpec(kind="udp", host="127.0.0.1", port=53)),
        ("127.0.0.1:5353", ResolverSpec(kind="udp", host="127.0.0.1", port=5353)),
        ("::1", ResolverSpec(kind="udp", host="::1", port=53)),
        ("'[::1]:5353'", ResolverSpec(kind="udp", host="::1", port=5353)),
        ("udp://127.0.0.1:5353", ResolverSpec(kind="udp", host="127.0.0.1", port=5353)),
        ("tcp://127.0.0.1:5353", ResolverSpec(kind="tcp", host="127.0.0.1", port=5353)),
        ("tls://127.0.0.1", ResolverSpec(kind="tls", host="127.0.0.1", port=853)),
        ("tls://[::1]:8853", ResolverSpec(kind="tls", host="::1", port=8853)),
        (
            "https://127.0.0.1/dns-query",
            ResolverSpec(
                kind="https", host="127.0.0.1", port=443, url="https://127.0.0.1/dns-query"
            ),
        ),
        (
            "https://[::1]:8443/q",
            ResolverSpec(kind="https", host="::1", port=8443, url="https://[::1]:8443/q"),
        ),
    ],
)
def test_resolver_forms(written: str, expected: ResolverSpec) -> None:
    config = parse_config(MINIMAL.replace("127.0.0.1:5353", written), env={})

    assert config.vantages[0].resolver == expected


@pytest.mark.parametrize(
    ("written", "env", "expected"),
    [
        ("socks5://127.0.0.1:1080", {}, Proxy("socks5", "127.0.0.1", 1080)),
        ("http://[::1]:3128", {}, Proxy("http", "::1", 3128)),
        ("socks5://u:p%40ss@127.0.0.1:1080", {}, Proxy("socks5", "127.0.0.1", 1080, "u", "p@ss")),
        ("socks5://only-user@127.0.0.1:1080", {}, Proxy("socks5", "127.0.0.1", 1080, "only-user")),
        (
            "socks5://${USER}:${PASS}@${HOST}:1080",
            {"USER": "me", "PASS": "a/b?c#d@e:f", "HOST": "127.0.0.9"},
            Proxy("socks5", "127.0.0.9", 1080, "me", "a/b?c#d@e:f"),
        ),
        (
            "${PROXY_URL}",
            {"PROXY_URL": "http://me:p%2Fw@127.0.0.1:8080"},
            Proxy("http", "127.0.0.1", 8080, "me", "p/w"),
        ),
    ],
)
def test_proxy_forms(written: str, env: dict[str, str], expected: Proxy) -> None:
    text = MINIMAL.replace("    resolver:", f"    proxy: '{written}'\n    resolver:")

    proxy = parse_config(text, env=env).vantages[0].proxy

    assert proxy == expected
    assert proxy is not None and proxy.password == expected.password


def test_environment_substitution_in_any_string_and_the_escape() -> None:
    text = MINIMAL.replace("https://example.test/", "https://${SITE}/") + (
        "fingerprints:\n  http_body_patterns: ['cost: $${price}']\n"
    )

    config = parse_config(text, env={"SITE": "example.test"})

    assert config.services[0].targets[0].url == "https://example.test/"
    assert config.fingerprints.http_body_patterns == ("cost: ${price}",)


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_TEST_RESOLVER", "127.0.0.1:5399")

    config = parse_config(MINIMAL.replace("127.0.0.1:5353", "${LIFELINE_TEST_RESOLVER}"))

    assert config.vantages[0].resolver.port == 5399


def _self_signed_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lifeline test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_relative_ca_file_is_found_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "lab-ca.pem").write_bytes(_self_signed_pem())
    config_file = tmp_path / "config.yaml"
    config_file.write_text(MINIMAL + "defaults:\n  ca_file: certs/lab-ca.pem\n", encoding="utf-8")

    config = load_config(config_file, env={})

    assert config.defaults.ca_file == str(tmp_path / "certs" / "lab-ca.pem")
    assert config.path == str(config_file)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("127.0.0.2", SourceAddress(ipv4="127.0.0.2")),
        ("'::1'", SourceAddress(ipv6="::1")),
        ("['::1', 127.0.0.2]", SourceAddress(ipv4="127.0.0.2", ipv6="::1")),
        ("{ipv4: 127.0.0.2, ipv6: '0::1'}", SourceAddress(ipv4="127.0.0.2", ipv6="::1")),
        ("{ipv6: '::1'}", SourceAddress(ipv6="::1")),
        ("{interface: lo}", SourceAddress(interface="lo")),
    ],
)
def test_source_address_takes_one_address_per_family_or_an_interface(
    written: str, expected: SourceAddress
) -> None:
    text = MINIMAL.replace(
        "resolver: 127.0.0.1:5353\n",
        f"resolver: 127.0.0.1:5353\n    source_address: {written}\n",
    )
    assert written in text
    (vantage,) = parse_config(text, env={}).vantages

    assert vantage.source == expected


# --- what each mistake says ---------------------------------------------------------------------

INVALID: dict[str, list[str]] = {
    "version-missing": ["version: is required: write version: 1 at the top (line 1)"],
    "version-wrong": ["version: unsupported version 2: this lifeline reads version: 1 (line 1)"],
    "empty": ["config: is empty: it needs version: 1, vantages and services"],
    "root-not-mapping": ["config: must be a mapping, not a list (line 1)"],
    "yaml-syntax": [
        "{file}: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence from line 5) (line 6)"
    ],
    "unknown-top-key": ["servces: unknown key; did you mean 'services'? (line 10)"],
    "unknown-nested-key": ["vantages[0].resolvr: unknown key; did you mean 'resolver'? (line 6)"],
    "duplicate-key": ["vantages[0].resolver: is given more than once (line 6)"],
    "merge-key": [
        "vantages[1]: YAML merge keys (<<) are not supported: write the keys out (line 6)",
        "vantages[1].resolver: is required (line 6)",
    ],
    "interval-not-duration": [
        "defaults.interval: '5 minutes' is not a duration: write seconds or units like "
        "'250ms', '60s', '5m', '1h30m', '30d' (largest unit first) (line 3)"
    ],
    "timeout-zero": ["defaults.timeout: must be a duration greater than zero (line 3)"],
    "timeout-over-interval": [
        "defaults.timeout: 60s is longer than the interval (30s): a measurement must end "
        "before the next one of the same target starts (line 4)"
    ],
    "ca-file-missing": [
        "defaults.ca_file: 'no-such-ca.pem' does not exist (looked for {dir}/no-such-ca.pem) "
        "(line 3)"
    ],
    "ca-file-not-pem": [
        "defaults.ca_file: 'invalid-ca-file-not-pem.yaml' holds no PEM certificate that can be "
        "loaded (looked for {dir}/invalid-ca-file-not-pem.yaml) (line 3)"
    ],
    "throttle-ratio-range": [
        "defaults.throttle_ratio: 1 must be between 0 and 1 (exclusive), e.g. 0.25 (line 3)"
    ],
    "max-body-bytes-range": [
        "defaults.max_body_bytes: 1073741824 must be between 1 and 67108864 (64 MiB) (line 3)"
    ],
    "vantages-empty": ["vantages: at least one vantage is required (line 2)"],
    "vantage-name-pattern": [
        "vantages[0].name: 'Control Room' must be lower-case letters, digits, '_' or '-' (line 3)"
    ],
    "vantage-name-duplicate": [
        "vantages[1].name: 'control' is already the name of vantages[0] (line 6)"
    ],
    "two-controls": [
        "vantages[1].control: only one vantage can be the control; vantages[0] already is (line 7)"
    ],
    "control-not-bool": ["vantages[0].control: must be true or false, not text (line 4)"],
    "resolver-missing": ["vantages[0].resolver: is required (line 3)"],
    "resolver-hostname": [
        "vantages[0].resolver: 'dns.quad9.net': not an IP address: name a resolver by its "
        "address, since lifeline never asks the system resolver where a resolver is (line 5)"
    ],
    "resolver-doh-hostname": [
        "vantages[0].resolver: 'https://dns.quad9.net/dns-query': the DoH server must be named "
        "by its IP address (e.g. https://9.9.9.9/dns-query), since lifeline never asks the "
        "system resolver where a resolver is (line 5)"
    ],
    "resolver-bad-port": [
        "vantages[0].resolver: 'tls://127.0.0.1:70000': the port must be a number from 1 to "
        "65535 (line 5)"
    ],
    "resolver-bad-scheme": [
        "vantages[0].resolver: 'quic://127.0.0.1:853': unsupported resolver scheme 'quic': use "
        "system, IP[:port], tcp://IP:port, tls://IP:port or https://IP/dns-query (line 5)"
    ],
    "proxy-hostname": [
        "vantages[0].proxy: the proxy host 'localhost' must be an IP address (write 127.0.0.1, "
        "not localhost): the proxy address must not depend on the system resolver (line 6)"
    ],
    "proxy-scheme": [
        "vantages[0].proxy: unsupported proxy scheme 'socks4': use socks5:// or http:// (line 6)"
    ],
    "proxy-no-port": [
        "vantages[0].proxy: the proxy port is missing: it must be "
        "socks5://[user:password@]IP:port or http://[user:password@]IP:port (line 6)"
    ],
    "source-address": ["vantages[0].source_address: 'eth0' is not an IP address (line 6)"],
    "source-two-ipv4": [
        "vantages[0].source_address[2]: a second IPv4 address (127.0.0.3 after 127.0.0.2): a "
        "vantage binds one address per family (line 6)"
    ],
    "source-family": ["vantages[0].source_address.ipv4: '::1' is not an IPv4 address (line 6)"],
    "source-interface-missing": [
        "vantages[0].source_address.interface: there is no interface 'nosuch0' on this host "
        "(line 6)"
    ],
    "source-interface-and-address": [
        "vantages[0].source_address: interface cannot be combined with ipv4 or ipv6: the "
        "interface's own addresses are used (line 6)"
    ],
    "source-empty-list": [
        "vantages[0].source_address: an empty list names no address: give one IPv4 and/or one "
        "IPv6 address (line 6)"
    ],
    "source-unknown-key": [
        "vantages[0].source_address.ipv5: unknown key; did you mean 'ipv6'? (line 6)"
    ],
    "country": ["vantages[0].country: 'IRN' must be a two-letter country code such as IR (line 6)"],
    "timezone": [
        "vantages[0].timezone: 'Asia/Atlantis' is not a known IANA time zone such as "
        "Asia/Tehran (line 6)"
    ],
    "env-unset": [
        "vantages[0].proxy: environment variable LIFELINE_TEST_UNSET is not set (line 6)"
    ],
    "env-malformed": [
        "vantages[0].proxy: malformed ${...}: write ${NAME}, or $${ for a literal ${ (line 6)"
    ],
    "canary-bad-url": [
        "canaries[0]: unsupported scheme '(none)' in 'example.org': use one of https://, "
        "http://, tls://, tcp://, dns:// (line 3)"
    ],
    "services-missing": ["services: at least one service is required (line 1)"],
    "service-name-reserved": [
        "services[0].name: 'canaries' is reserved for the canaries: list canary targets under "
        "canaries: (line 7)"
    ],
    "service-name-duplicate": [
        "services[1].name: 'web' is already the name of services[0] (line 10)"
    ],
    "service-no-targets": ["services[0].targets: at least one target is required (line 8)"],
    "target-bad-scheme": [
        "services[0].targets[1]: unsupported scheme 'ftp' in 'ftp://files.example.test/': use "
        "one of https://, http://, tls://, tcp://, dns:// (line 10)"
    ],
    "target-tcp-no-port": [
        "services[0].targets[1]: tcp:// targets need a port: 'tcp://example.test' (line 10)"
    ],
    "target-duplicate": [
        "services[0].targets[1]: the same endpoint as services[0].targets[0] (line 10)"
    ],
    "target-url-missing": ["services[0].targets[1].url: is required (line 10)"],
    "target-status-range": [
        "services[0].targets[1].expect_status[1]: 999 is not an HTTP status (100-599) (line 11)"
    ],
    "target-status-not-http": [
        "services[0].targets[1].expect_status: applies only to http:// and https:// targets "
        "(line 11)"
    ],
    "target-throughput-not-bool": [
        "services[0].targets[1].throughput: must be true or false, not text (line 11)"
    ],
    "target-credentials": [
        "services[0].targets[1]: credentials in a target URL are not allowed: "
        "'https://***@example.test/private' (line 10)"
    ],
    "storage-retention": [
        "storage.retention: 'forever' is not a duration: write seconds or units like "
        "'250ms', '60s', '5m', '1h30m', '30d' (largest unit first) (line 11)"
    ],
    "probe-allow-not-list": ["probe.allow: must be a list, not text (line 11)"],
    "fingerprint-address": [
        "fingerprints.dns_addresses[1]: '10.10.34' is not an IP address (line 11)"
    ],
    "fingerprint-regex": [
        "fingerprints.http_body_patterns[1]: 'blocked[' is not a valid regular expression: "
        "unterminated character set at position 7 (line 11)"
    ],
    "window-length": ["window.activity: needs 24 numbers (hours 0 to 23), not 3 (line 11)"],
    "window-negative": ["window.activity[23]: must be a non-negative number (line 11)"],
    "agent-with-resolver": [
        "vantages[0].resolver: cannot be combined with agent: the agent's own config says how "
        "its vantage resolves and connects (line 5)"
    ],
    "agent-url-hostname": [
        "vantages[0].agent.url: 'https://agent.example.test:9479': the agent's host must be an "
        "IP address: lifeline never asks the system resolver where an agent is (line 5)"
    ],
}


def test_every_invalid_fixture_has_an_expectation() -> None:
    on_disk = {p.name.removeprefix("invalid-").removesuffix(".yaml") for p in FIXTURES.glob("*")}

    assert on_disk == set(INVALID)


@pytest.mark.parametrize("rule", sorted(INVALID))
def test_each_invalid_fixture_says_what_is_wrong(rule: str) -> None:
    path = FIXTURES / f"invalid-{rule}.yaml"
    expected = [
        e.replace("{dir}", str(FIXTURES)).replace("{file}", str(path)) for e in INVALID[rule]
    ]

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    assert caught.value.errors == expected
    assert str(caught.value) == "\n".join(expected)


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = """\
version: 1
defaults:
  interval: soon
vantages:
  - name: Bad
    resolver: resolver.example
    colour: blue
services:
  - name: web
    targets: [gopher://example.test/]
"""

    errors = _errors(text)

    assert errors == [
        "defaults.interval: 'soon' is not a duration: write seconds or units like '250ms', "
        "'60s', '5m', '1h30m', '30d' (largest unit first) (line 3)",
        "vantages[0].name: 'Bad' must be lower-case letters, digits, '_' or '-' (line 5)",
        "vantages[0].resolver: 'resolver.example': not an IP address: name a resolver by its "
        "address, since lifeline never asks the system resolver where a resolver is (line 6)",
        "vantages[0].colour: unknown key (known: name, control, resolver, proxy, source_address, "
        "country, timezone, agent, dns_window, asn, network_name, connect_every_address) "
        "(line 7)",
        "services[0].targets[0]: unsupported scheme 'gopher' in 'gopher://example.test/': use "
        "one of https://, http://, tls://, tcp://, dns:// (line 10)",
    ]


def test_a_timeout_left_at_its_default_is_checked_against_a_short_interval() -> None:
    errors = _errors(MINIMAL + "defaults:\n  interval: 5s\n")

    assert errors == [
        "defaults.interval: 5s is shorter than the default timeout (10s): a measurement must "
        "end before the next one of the same target starts; set a shorter timeout too (line 11)"
    ]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing)

    assert caught.value.errors == [f"{missing}: no such config file"]


def test_a_directory_or_binary_file_is_a_config_error(tmp_path: Path) -> None:
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")

    with pytest.raises(ConfigError) as as_dir:
        load_config(tmp_path)
    with pytest.raises(ConfigError) as as_binary:
        load_config(binary)

    assert as_dir.value.errors[0].startswith(f"{tmp_path}: cannot read the config file: ")
    assert as_binary.value.errors == [f"{binary}: not UTF-8 text"]


# --- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "proxy",
    [
        "socks5://user:hunter2@localhost:1080",
        "socks4://user:hunter2@127.0.0.1:1080",
        "socks5://user:hunter2@127.0.0.1",
        "socks5://user:hunter2@127.0.0.1:99999",
        "socks5://user:hunt/er2@127.0.0.1:1080",
        "socks5://:hunter2@127.0.0.1:1080",
        "socks5:/user:hunter2@127.0.0.1:1080",
        "socks5://user:hunter2@[::1:1080",
        "so{x}://user:hunter2@127.0.0.1:1080",
        "socks5://user:hunter2@{host}:1080",
    ],
)
def test_a_written_proxy_password_never_appears_in_an_error(proxy: str) -> None:
    text = MINIMAL.replace("    resolver:", f"    proxy: '{proxy}'\n    resolver:")

    errors = _errors(text)

    assert errors and all(e.startswith("vantages[0].proxy: ") for e in errors)
    assert not any("hunter2" in e or "hunt" in e for e in errors)


_SECRET_ALPHABET = string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~"


@settings(max_examples=60, deadline=None)
@given(
    password=st.text(_SECRET_ALPHABET, min_size=8, max_size=24),
    host=st.sampled_from(["localhost", "127.0.0.1", "proxy.example", "[::1]"]),
    port=st.sampled_from(["1080", "", "0", "x"]),
    scheme=st.sampled_from(["socks5", "http", "socks4"]),
    resolver=st.sampled_from(["127.0.0.1:5353", "${SECRET}"]),
)
def test_a_proxy_password_from_the_environment_never_appears_in_an_error(
    password: str, host: str, port: str, scheme: str, resolver: str
) -> None:
    proxy = f"{scheme}://user:${{SECRET}}@{host}" + (f":{port}" if port else "")
    text = MINIMAL.replace("127.0.0.1:5353", resolver).replace(
        "    resolver:", f"    proxy: '{proxy}'\n    resolver:"
    )
    placeholder = "\n".join(_outcome(text, "p1aceh0lder"))
    assume(password not in placeholder)

    assert not any(password in e for e in _outcome(text, password))


def _outcome(text: str, secret: str) -> list[str]:
    try:
        parse_config(text, env={"SECRET": secret})
    except ConfigError as exc:
        return exc.errors
    return []


# --- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("30d", 2_592_000.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1m0.5s", 60.5),
        ("2w", 1_209_600.0),
        (" 90 ", 90.0),
        ("1.5", 1.5),
        (45, 45.0),
        (0.5, 0.5),
        ("0s", 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "m5", "5 m", "5mm", "5m5m", "30s1m", "1y", "-5s", True, None, [1], -1]
)
def test_parse_duration_rejects_what_is_not_a_duration(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_parse_duration_rejects_infinity() -> None:
    with pytest.raises(ValueError):
        parse_duration(float("inf"))


# --- robustness ---------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "system",
            "127.0.0.1:53",
            "[::1]:53",
            "tls://127.0.0.1",
            "https://127.0.0.1/q",
            "https://host/q",
            "socks5://u:p@127.0.0.1:1080",
            "http://[::1]:8080",
            "${X}",
            "${UNSET}",
            "$${X}",
            "${",
            "60s",
            "1h30m",
            "0",
            "-1",
            "https://example.test/",
            "tcp://example.test:1",
            "dns://example.test",
            "tls://x:443",
            "Asia/Tehran",
            "..",
            "/",
            "ir",
            "canaries",
            "[",
            "(",
            "x" * 300,
            "so{x}://127.0.0.1:1",
            "socks5://u:p@{h}:1",
        ]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _section(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    """A mapping with some of the right keys (and a stray one) holding arbitrary values."""
    return st.dictionaries(st.sampled_from([*keys, "stray"]), _values, max_size=len(keys) + 1)


_VANTAGE = [
    "name", "control", "resolver", "proxy", "source_address", "country", "timezone", "agent",
]  # fmt: skip
_TARGET = ["url", "expect_status", "throughput"]
_shaped = st.fixed_dictionaries(
    {},
    optional={
        "version": st.one_of(st.just(1), _values),
        "defaults": _section(
            ["interval", "timeout", "ca_file", "throttle_ratio", "max_body_bytes"]
        ),
        "vantages": st.lists(st.one_of(_section(_VANTAGE), _values), max_size=3),
        "canaries": st.lists(st.one_of(_scalars, _section(_TARGET)), max_size=3),
        "services": st.lists(
            st.fixed_dictionaries(
                {"name": _scalars},
                optional={"targets": st.lists(st.one_of(_scalars, _section(_TARGET)), max_size=3)},
            ),
            max_size=3,
        ),
        "storage": _section(["dir", "retention"]),
        "probe": _section(["allow"]),
        "fingerprints": _section(["dns_addresses", "http_body_patterns"]),
        "window": st.one_of(
            _section(["activity"]),
            st.fixed_dictionaries({"activity": st.lists(_scalars, min_size=23, max_size=25)}),
        ),
    },
)


def _load_or_config_error(text: str) -> None:
    try:
        config = parse_config(text, env={"X": "127.0.0.1"})
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)
    else:
        assert isinstance(config, Config)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.one_of(_values, _shaped))
def test_any_yaml_document_loads_or_raises_config_error(document: object) -> None:
    _load_or_config_error(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_loads_or_raises_config_error(text: str) -> None:
    _load_or_config_error(text)


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(alphabet="{}[]:-,&*!|>'\"#%@` \n\tab1?", max_size=80),
)
def test_yaml_punctuation_soup_loads_or_raises_config_error(text: str) -> None:
    _load_or_config_error(text)


@pytest.mark.parametrize("section", ["defaults", "storage"])
def test_writing_the_documented_defaults_changes_nothing(section: str) -> None:
    """docs/config.md's default column is what lifeline uses when a key is left out."""
    doc = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    table = doc.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    written = {key.strip().strip("`"): value.strip().strip("`") for key, value in rows}
    assert written, f"no defaults table under ## {section}"
    block = "".join(f"  {key}: {value}\n" for key, value in written.items())
    assert parse_config(MINIMAL + f"{section}:\n{block}") == parse_config(MINIMAL)


def _vantage_with(extra: str) -> str:
    return (
        "version: 1\nvantages:\n  - name: v\n    resolver: 127.0.0.1:5353\n"
        f"{extra}services:\n  - name: s\n    targets: [dns://x.test]\n"
    )


@pytest.mark.parametrize(("written", "asn"), [("12880", 12880), ("AS12880", 12880), ("as9", 9)])
def test_a_vantage_says_its_network(written: str, asn: int) -> None:
    config = parse_config(
        _vantage_with(f"    asn: {written}\n    network_name: Iran Telecom PJS\n"), source="t"
    )
    assert (config.vantages[0].asn, config.vantages[0].network_name) == (asn, "Iran Telecom PJS")


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("    asn: AS-TCI\n", "vantages[0].asn: 'AS-TCI' must be an autonomous system number"),
        ("    asn: 0\n", "vantages[0].asn: '0' must be an autonomous system number"),
        ("    asn: 4294967296\n", "vantages[0].asn: '4294967296' must be an autonomous"),
        ("    network_name: ''\n", "vantages[0].network_name: '' must be 1 to 100 printable"),
    ],
)
def test_a_bad_network_is_named(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_vantage_with(extra), source="t")
    assert any(problem in line for line in caught.value.errors), caught.value.errors
