"""The scheduler's index of the latest measurements (probes.runner.Observations)."""

from __future__ import annotations

from probes.records import (
    DNSAnswer,
    DNSQuery,
    DNSStage,
    HTTPStage,
    Measurement,
    TCPStage,
    TLSCertificate,
    TLSStage,
)
from probes.runner import Observations

TARGET = "https://open.lifeline.test/"
PAGE = "<!doctype html><title>Open</title>" + "<p>news</p>" * 200


def fresh(text: str) -> str:
    """An equal string that is a new object (as each measurement decodes its own)."""
    return "".join(list(text))


def measurement(vantage: str, *, page: str = PAGE, address: str = "192.0.2.10") -> Measurement:
    return Measurement(
        target=TARGET,
        vantage=vantage,
        time="2026-01-01T00:00:10.000Z",
        service="open",
        dns=DNSStage(
            ok=True,
            failure=None,
            duration_s=0.01,
            name=fresh("open.lifeline.test"),
            resolver=f"udp://127.0.0.1:53{vantage[-1]}",
            addresses=[fresh(address)],
            queries=[
                DNSQuery("A", True, None, fresh("NOERROR"), [DNSAnswer("A", fresh(address), 60)])
            ],
        ),
        tcp=TCPStage(ok=True, failure=None, duration_s=0.02, address=fresh(address), port=443),
        tls=TLSStage(
            ok=True,
            failure=None,
            duration_s=0.03,
            server_name=fresh("open.lifeline.test"),
            version=fresh("TLSv1.3"),
            cipher=fresh("TLS_AES_128_GCM_SHA256"),
            alpn=fresh("http/1.1"),
            certificate=TLSCertificate(subject_cn="open.lifeline.test", san=["open.lifeline.test"]),
        ),
        http=HTTPStage(
            ok=True,
            failure=None,
            duration_s=0.04,
            url=TARGET,
            final_url=fresh(TARGET),
            status=200,
            headers={"server": fresh("nginx"), "content-type": fresh("text/html")},
            body_length=len(page),
            body_sha256=fresh("ab" * 32),
            body_head=fresh(page),
            title=fresh("Open"),
        ),
    )


def test_indexing_changes_no_measurement_and_keeps_the_latest_per_key() -> None:
    ms = [
        measurement("control"),
        measurement("v1"),
        measurement("v2", page="<title>Blocked</title>", address="10.10.34.35"),
        measurement("v1"),  # v1 again: replaces the first
    ]
    records = [m.to_dict() for m in ms]
    obs = Observations(ms)
    assert [m.to_dict() for m in ms] == records  # what is judged, logged and stored
    assert obs.get("open", TARGET, "v1") is ms[3]
    assert obs.by_target[("open", TARGET)] == [ms[0], ms[2], ms[3]]
    obs.add(measurement("control", page="<title>Changed</title>"))
    assert [m.to_dict() for m in ms] == records  # a new peer changes none of the others


def test_the_vantages_records_of_a_target_keep_one_copy_of_its_certificate_chain() -> None:
    """Memory per series: three vantages' records of one target hold the chain once (the
    values are unchanged)."""
    from probes.evidence import TLSCertificate
    from probes.records import Measurement, TLSStage
    from probes.runner import Observations

    def measured(vantage: str) -> Measurement:
        chain = ["".join(["MIIB", "A" * 1500, vantage[:0]]), "".join(["MIIC", "B" * 900])]
        cert = TLSCertificate(subject_cn="x.test", san=["x.test"], issuer="CN=Lab CA",
                              not_before="2026-01-01T00:00:00Z", not_after="2027-01-01T00:00:00Z",
                              sha256="ab" * 32)  # fmt: skip
        m = Measurement(target="https://x.test/", vantage=vantage, time="2026-12-04T00:00:00Z",
                        duration_s=0.1, service="s")  # fmt: skip
        m.stages["tls"] = TLSStage(ok=True, failure=None, duration_s=0.05, address="127.0.0.1",
                                   server_name="x.test", chain=chain, certificate=cert)  # fmt: skip
        return m

    ms = [measured(v) for v in ("a", "b", "c")]
    before = [m.to_dict() for m in ms]
    Observations(ms)
    assert [m.to_dict() for m in ms] == before
    chains = [m.stages["tls"].chain for m in ms]  # type: ignore[attr-defined]
    assert all(c[i] is chains[0][i] for c in chains for i in range(2))
