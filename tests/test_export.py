"""`lifeline export`, `classify` and `incidents`: what a researcher gets out of the history."""

from __future__ import annotations

import csv
import io
import json
import os
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.export import CSV_COLUMNS, export, format_duration, resolve_time
from exporter.logs import append_results
from exporter.store import Store, parse_time
from probes.classify import classify
from probes.failures import Failure
from probes.fingerprints import FingerprintSet
from probes.model import CANARY_SERVICE
from probes.records import Measurement, Result, Verdict
from tests.test_store import T0, http_stage, iso, measurement, result, variety

CONFIG = """\
version: 1
vantages:
  - name: control
    control: true
    resolver: 127.0.0.1:5353
  - name: ir
    resolver: 127.0.0.1:5354
    country: IR
  - name: kz
    resolver: 127.0.0.1:5355
canaries:
  - https://canary.example/
services:
  - name: news
    targets:
      - https://news.example/
      - https://cdn.example/
storage:
  dir: {data}
{extra}"""


def _config(tmp_path: Path, extra: str = "", data: str = "./data") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(data=data, extra=extra))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- export ----------------------------------------------------------------------------------


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    with Store(directory) as store:
        store.add(variety(T0))
        store.add([result(Verdict.OK, T0 + 3600, vantage="kz", service="chat")])
    return directory


def test_export_jsonl_gives_the_stored_records(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "export", "--data-dir", str(data))
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[:-1] == [r.to_dict() for r in variety(T0)]
    assert lines[-1]["service"] == "chat"


def test_export_filters(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def services(*argv: str) -> list[str]:
        code, out, _ = _run(capsys, "export", "--data-dir", str(data), *argv)
        assert code == 0
        return [json.loads(line)["service"] for line in out.splitlines()]

    assert services("--service", "chat") == ["chat"]
    assert services("--vantage", "kz", "--vantage", "nowhere") == ["chat"]
    assert services("--since", iso(T0 + 60)) == ["chat"]
    assert services("--until", "2026-01-01T00:00:02Z") == ["news", "news"]
    assert services("--since", "1h") == []  # relative to now: the data is from the past


def test_export_explains_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "export", "--data-dir", str(tmp_path), "--since", "last week")
    assert code == 2 and "last week" in err
    code, _, err = _run(capsys, "export", "--data-dir", str(tmp_path / "none"))
    assert code == 1 and "no store at" in err
    assert not (tmp_path / "none").exists()  # export never creates a store


def test_export_uses_the_configs_storage_dir(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "export")  # ./config.yaml does not exist: ./lifeline-data
    assert code == 1
    _config(tmp_path, data=str(data))
    code, out, _ = _run(capsys, "export", "--service", "chat")
    assert code == 0 and len(out.splitlines()) == 1


def test_export_csv_has_one_flat_row_per_measurement(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "export", "--data-dir", str(data), "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == len(variety(T0)) + 1
    ok, injected, nx, reset = rows[:4]
    assert ok["verdict"] == "ok" and ok["http_status"] == "200"
    assert ok["http_title"] == "Daily News" and ok["http_body_length"] == "5120"
    assert ok["dns_addresses"] == "127.0.0.2" and ok["tls_version"] == "TLSv1.3"
    assert ok["control_first_failure"] == "none"
    assert injected["dns_addresses"] == "10.10.34.34"
    assert nx["dns_ok"] == "false" and nx["dns_failure"] == "dns_nxdomain_error"
    assert nx["tcp_ok"] == "" and nx["http_status"] == ""  # not measured
    assert reset["tcp_failure"] == "connection_reset" and reset["tls_ok"] == ""
    assert rows[6]["tls_failure"] == "unknown_failure: weird alert 112"
    assert rows[7]["error"] == "bad target" and rows[7]["dns_ok"] == ""


def test_export_ooni_renders_web_connectivity(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "export", "--data-dir", str(data), "--format", "ooni")
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]
    ok, injected, nx, reset, eof, page = docs[:6]
    assert ok["measurement_start_time"] == "2026-01-01 00:00:00"
    assert (ok["test_name"], ok["software_name"], ok["probe_asn"]) == (
        "web_connectivity",
        "lifeline",
        "AS0",
    )
    assert ok["probe_cc"] == "ZZ" and ok["input"] == "https://news.example/"
    assert ok["resolver_ip"] == "127.0.0.1" and ok["test_runtime"] == 0.1
    keys = ok["test_keys"]
    assert keys["blocking"] is False and keys["accessible"] is True
    assert keys["dns_consistency"] == "consistent"
    assert keys["body_length_match"] and keys["status_code_match"] and keys["title_match"]
    (query_a, query_aaaa) = keys["queries"]
    assert query_a["answers"] == [{"answer_type": "A", "ipv4": "127.0.0.2", "ttl": 300}]
    assert query_aaaa["failure"] == "dns_no_answer" and query_a["engine"] == "udp"
    assert keys["tcp_connect"][0]["status"] == {"success": True, "failure": None, "blocked": False}
    assert keys["tls_handshakes"][0]["server_name"] == "news.example"
    final, first = keys["requests"]  # last request first, as OONI lists them
    assert final["response"]["code"] == 200 and first["response"]["code"] == 301
    assert keys["control"]["dns"] == {"failure": None, "addrs": ["127.0.0.2"]}
    assert keys["control"]["http_request"]["status_code"] == 200
    assert ok["annotations"]["lifeline_verdict"] == keys["lifeline_verdict"] == "ok"

    assert injected["test_keys"]["blocking"] == "dns"
    assert injected["test_keys"]["dns_consistency"] == "inconsistent"
    assert injected["test_keys"]["accessible"] is False
    assert nx["test_keys"]["dns_experiment_failure"] == "dns_nxdomain_error"
    assert reset["test_keys"]["blocking"] == "tcp_ip"
    assert reset["test_keys"]["tcp_connect"][0]["status"]["blocked"] is True
    assert eof["test_keys"]["blocking"] == "http-failure"
    assert page["test_keys"]["blocking"] == "http-diff"
    assert docs[7]["test_keys"]["blocking"] is None  # `error`: nothing to say

    _config(tmp_path, data=str(data))
    code, out, _ = _run(capsys, "export", "-c", str(tmp_path / "config.yaml"), "--format", "ooni")
    assert code == 0
    assert {json.loads(line)["probe_cc"] for line in out.splitlines()} == {"IR", "ZZ"}


def _fill(directory: Path, rows: int) -> None:
    """A store of ``rows`` small records (few allocations each, so tracemalloc stays quick)."""
    dns = measurement("ir", T0, target="dns://news.example").dns
    record = Result(
        Measurement("dns://news.example", "ir", iso(T0), 0.02, "news", dns=dns), Verdict.OK, "fine"
    ).to_dict()
    with Store(directory) as store:
        for start in range(0, rows, 1000):
            batch = []
            for i in range(start, min(rows, start + 1000)):
                record = {**record, "time": iso(T0 + i), "vantage": f"v{i % 7}"}
                batch.append(record)
            store.add_records(batch)


def _peak_export_memory(directory: Path, fmt: str, rows: int) -> tuple[int, int]:
    """(rows written, peak traced bytes) of exporting the first ``rows`` rows of a store."""
    with Store(directory) as store, open(os.devnull, "w") as sink:
        tracemalloc.start()
        try:
            count = export(store, sink, fmt=fmt, until=iso(T0 + rows))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return count, peak


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    small, large = tmp_path_factory.mktemp("small"), tmp_path_factory.mktemp("large")
    _fill(small, 2_000)
    _fill(large, 20_000)
    return small, large


# ooni rendering is slow under tracemalloc: ten times the rows all the same, on fewer
@pytest.mark.parametrize(
    ("fmt", "few", "many"), [("jsonl", 2_000, 20_000), ("csv", 2_000, 20_000), ("ooni", 500, 5_000)]
)
def test_export_memory_does_not_grow_with_rows(
    small_and_large: tuple[Path, Path], fmt: str, few: int, many: int
) -> None:
    small, large = small_and_large
    n_small, peak_small = _peak_export_memory(small, fmt, few)
    n_large, peak_large = _peak_export_memory(large, fmt, many)
    assert (n_small, n_large) == (few, many)
    assert peak_large < 3 * peak_small, (peak_small, peak_large)


# --- classify --------------------------------------------------------------------------------


def _round(ts: float, *, ir_canary_down: bool = False) -> list[Measurement]:
    """One round: canaries and targets from ir, kz and the control."""
    ms: list[Measurement] = []
    for vantage in ("control", "ir", "kz"):
        canary_down = ir_canary_down and vantage == "ir"
        ms.append(
            measurement(
                vantage,
                ts,
                target="https://canary.example/",
                service=CANARY_SERVICE,
                dns_failure=Failure.TIMEOUT if canary_down else None,
            )
        )
        cdn = ("127.0.0.9",) if vantage == "ir" else ("127.0.0.3",)
        ms.append(measurement(vantage, ts + 0.5, target="https://cdn.example/", addresses=cdn))
        if vantage == "ir":
            ms.append(measurement(vantage, ts + 1, tcp_failure=Failure.CONNECTION_RESET))
        elif vantage == "kz":
            blocked = http_stage("https://news.example/", status=451, title="Blocked")
            ms.append(measurement(vantage, ts + 1, http=blocked))
        else:
            ms.append(measurement(vantage, ts + 1))
    return ms


def _judge(ms: Sequence[Measurement], fingerprints: FingerprintSet) -> list[Result]:
    """What the runner does with a round (the same inputs as probes.runner.judge)."""
    canaries: dict[str, list[Measurement]] = {}
    for m in ms:
        if m.service == CANARY_SERVICE:
            canaries.setdefault(m.vantage, []).append(m)
    out = []
    for m in ms:
        is_control = m.vantage == "control"
        ctl = (
            None
            if is_control
            else next(c for c in ms if c.vantage == "control" and c.target == m.target)
        )
        peers = [p for p in ms if p.target == m.target and p.vantage not in (m.vantage, "control")]
        j = classify(
            m,
            control=ctl,
            canaries=canaries[m.vantage],
            fingerprints=fingerprints,
            throttle_ratio=0.25,
            is_control=is_control,
            control_canaries=() if is_control else canaries["control"],
            peers=peers,
        )
        out.append(Result(m, j.verdict, j.reason, control=ctl, version="0.1.0"))
    return out


@pytest.fixture()
def recorded_log(tmp_path: Path) -> tuple[Path, list[Result]]:
    fingerprints = FingerprintSet.build()
    results: list[Result] = []
    for minute in range(4):
        ms = _round(T0 + 60 * minute + 5, ir_canary_down=minute == 2)
        results += _judge(ms, fingerprints)
    path = tmp_path / "probe.jsonl"
    append_results(path, results)
    return path, results


def test_classify_reproduces_recorded_verdicts(
    recorded_log: tuple[Path, list[Result]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, results = recorded_log
    verdicts = {r.verdict for r in results}
    assert {Verdict.OK, Verdict.TCP_BLOCKED, Verdict.HTTP_BLOCKED, Verdict.VANTAGE_DOWN} <= verdicts
    code, out, err = _run(capsys, "classify", str(path))
    assert (code, err) == (0, "")
    assert out.strip().splitlines() == [f"{len(results)} records, 0 changed"]


def test_classify_reports_what_new_rules_change(
    recorded_log: tuple[Path, list[Result]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, results = recorded_log
    config = _config(tmp_path, extra="fingerprints:\n  dns_addresses: [127.0.0.9]\n")
    code, out, _ = _run(capsys, "classify", "-c", str(config), str(path))
    assert code == 1
    lines = out.strip().splitlines()
    # ir's cdn answers are now a known injection
    changed = [
        i + 1
        for i, r in enumerate(results)
        if r.measurement.vantage == "ir"
        and r.measurement.target == "https://cdn.example/"
        and r.verdict is Verdict.OK
    ]
    assert len(changed) == 4
    assert lines[:-1] == [
        f"line {n}: https://cdn.example/ from ir: ok -> dns_blocked (" + lines[i].split(" (", 1)[1]
        for i, n in enumerate(changed)
    ]
    assert "127.0.0.9" in lines[0]
    assert lines[-1] == f"{len(results)} records, 4 changed"


def test_classify_jsonl_prints_the_records_judged_again(
    recorded_log: tuple[Path, list[Result]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, results = recorded_log
    config = _config(tmp_path, extra="fingerprints:\n  dns_addresses: [127.0.0.9]\n")
    code, out, err = _run(capsys, "classify", "-c", str(config), "--format", "jsonl", str(path))
    assert code == 1
    again = [Result.from_dict(json.loads(line)) for line in out.splitlines()]
    assert [a.measurement for a in again] == [r.measurement for r in results]
    assert [a.control for a in again] == [r.control for r in results]
    now_dns = [
        i for i, (a, r) in enumerate(zip(again, results, strict=True)) if a.verdict != r.verdict
    ]
    assert len(now_dns) == 4 and all(again[i].verdict is Verdict.DNS_BLOCKED for i in now_dns)
    assert all("127.0.0.9" in again[i].reason for i in now_dns)
    assert err.strip().splitlines()[-1] == f"{len(results)} records, 4 changed"


@pytest.fixture()
def judged_log(tmp_path: Path) -> tuple[Path, list[Result]]:
    """A log as serve writes it: records that say what judged them, the config's own
    fingerprints (an injected address, 127.0.0.9) written beside the log."""
    from exporter.judgefile import write_fingerprints
    from probes.judge import judged_with
    from probes.model import Fingerprints

    extra = Fingerprints(dns_addresses=("127.0.0.9",))
    fingerprints = FingerprintSet.build(extra)
    said = judged_with(fingerprints, 0.25, "control")
    results: list[Result] = []
    for minute in range(4):
        for r in _judge(_round(T0 + 60 * minute + 5, ir_canary_down=minute == 2), fingerprints):
            r.judged_with = said
            results.append(r)
    path = tmp_path / "log" / "probe.jsonl"
    path.parent.mkdir()
    append_results(path, results)
    write_fingerprints(path.parent, extra)
    return path, results


def test_classify_without_a_config_reproduces_a_log_judged_with_one(
    judged_log: tuple[Path, list[Result]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, results = judged_log
    assert sum(r.verdict is Verdict.DNS_BLOCKED for r in results) == 4  # the config's address
    code, out, err = _run(capsys, "classify", str(path))
    assert (code, err) == (0, "")
    assert out.strip().splitlines() == [f"{len(results)} records, 0 changed"]


def test_classify_says_when_the_configs_fingerprints_are_not_beside_the_log(
    judged_log: tuple[Path, list[Result]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, results = judged_log
    (kept,) = path.parent.glob("fingerprints-*.json")
    kept.unlink()
    code, out, err = _run(capsys, "classify", str(path))
    assert code == 1 and out.strip().splitlines()[-1] == f"{len(results)} records, 4 changed"
    digest = results[0].judged_with.fingerprints if results[0].judged_with else ""
    assert digest in err and kept.name in err and "built-in fingerprints" in err


def test_classify_with_a_config_names_the_settings_that_changed(
    judged_log: tuple[Path, list[Result]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = judged_log
    config = _config(tmp_path, extra="defaults:\n  throttle_ratio: 0.5\n")
    code, out, _ = _run(capsys, "classify", "-c", str(config), str(path))
    assert code == 1
    changed = out.strip().splitlines()[:-1]
    assert len(changed) == 4 and all("dns_blocked -> ok" in line for line in changed)
    assert all(
        line.endswith("; throttle_ratio 0.25 -> 0.5]") and "[changed: fingerprints sha256:" in line
        for line in changed
    ), changed


def test_classify_reports_bad_lines_and_goes_on(
    recorded_log: tuple[Path, list[Result]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, results = recorded_log
    lines = path.read_text().splitlines()
    lines.insert(3, "{not json")
    lines.insert(5, json.dumps({"schema": "lifeline.measurement/1", "verdict": "ok"}))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(broken.read_bytes())))
    code, out, err = _run(capsys, "classify", "-")
    assert code == 2
    assert "line 4:" in err and "line 6:" in err
    assert "line 6: not a measurement record: it has no 'target' field" in err
    assert out.strip().splitlines()[-1] == (
        f"{len(results)} records, 0 changed, 2 unreadable lines skipped"
    )


def test_classify_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "classify", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "nope.jsonl" in err


def test_classify_of_an_exported_log(
    recorded_log: tuple[Path, list[Result]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, results = recorded_log
    with Store(tmp_path / "d") as store:
        store.add(results)
    code, out, _ = _run(capsys, "export", "--data-dir", str(tmp_path / "d"))
    assert code == 0
    exported = tmp_path / "exported.jsonl"
    exported.write_text(out)
    code, out, _ = _run(capsys, "classify", str(exported))
    assert code == 0 and out.strip() == f"{len(results)} records, 0 changed"


# --- incidents -------------------------------------------------------------------------------


def _timeline(directory: Path) -> None:
    reset = {"tcp_failure": Failure.CONNECTION_RESET}
    with Store(directory) as store:
        store.add([result(Verdict.OK, T0, vantage="ir")])
        store.add([result(Verdict.DNS_BLOCKED, T0 + 600, vantage="ir", addresses=("10.10.34.34",))])
        store.add([result(Verdict.OK, T0 + 600 + 2 * 3600 + 13 * 60, vantage="ir")])
        store.add([result(Verdict.TCP_BLOCKED, T0 + 9000, vantage="kz", **reset)])


def test_incidents_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _timeline(tmp_path)
    code, out, _ = _run(
        capsys, "incidents", "--data-dir", str(tmp_path), "--by", "target", "--format", "json"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "lifeline.incidents/1"
    newest, older = doc["incidents"]
    assert (newest["vantage"], newest["verdict"], newest["ongoing"]) == ("kz", "tcp_blocked", True)
    assert newest["until"] is None
    assert newest["last_measured"] == iso(T0 + 9000)  # when the ongoing period was confirmed
    assert older["last_measured"] is None
    assert (older["vantage"], older["verdict"], older["ongoing"]) == ("ir", "dns_blocked", False)
    assert older["duration"] == "2h 13m" and older["duration_s"] == 2 * 3600 + 13 * 60
    assert older["since"] == iso(T0 + 600)
    assert older["reason"] == "judged dns_blocked"


def test_incidents_table_by_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _timeline(tmp_path)
    code, out, _ = _run(capsys, "incidents", "--data-dir", str(tmp_path), "--by", "target")
    assert code == 0
    head, newest, older, _, total = out.splitlines()
    assert head.split()[:7] == [
        "SINCE",
        "UNTIL",
        "DURATION",
        "SERVICE",
        "TARGET",
        "VANTAGE",
        "VERDICT",
    ]
    assert "ongoing" in newest and "tcp_blocked" in newest and iso(T0 + 9000) in newest
    assert "LAST MEASURED" in head
    assert "2h 13m" in older and "dns_blocked" in older and iso(T0 + 600) in older
    assert total == "2 incidents, 1 ongoing"


def test_incidents_json_groups_by_service_and_vantage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _timeline(tmp_path)
    with Store(tmp_path) as store:  # a second target of news blocked at kz: the same incident
        store.add([result(Verdict.TCP_BLOCKED, T0 + 9030, vantage="kz", target="tcp://news:443")])
    code, out, _ = _run(capsys, "incidents", "--data-dir", str(tmp_path), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "lifeline.incidents/2"
    ongoing, ended = doc["incidents"]
    assert (ongoing["service"], ongoing["vantage"], ongoing["verdict"]) == (
        "news",
        "kz",
        "tcp_blocked",
    )
    assert [t["target"] for t in ongoing["targets"]] == ["https://news.example/", "tcp://news:443"]
    assert ongoing["since"] == "2026-01-01T02:30:00Z" and ongoing["until"] is None
    assert ongoing["last_measured"] == "2026-01-01T02:30:30Z"
    assert (ended["vantage"], ended["verdict"], ended["duration"]) == (
        "ir",
        "dns_blocked",
        "2h 13m",
    )
    assert ended["until"] == "2026-01-01T02:23:00Z"


def test_incidents_table_fits_120_columns_with_times_to_the_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long = "https://" + "very-long-name." * 20 + "example/"
    with Store(tmp_path) as store:
        store.add([result(Verdict.DNS_BLOCKED, T0, vantage="ir", service="s" * 60, target=long)])
        store.add([result(Verdict.OK, T0 + 61.5, vantage="ir", service="s" * 60, target=long)])
        store.add([result(Verdict.TLS_BLOCKED, T0 + 100.25, vantage="kz")])
    code, out, _ = _run(capsys, "incidents", "--data-dir", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    head, ongoing, ended, _, total = lines
    assert head.split()[:6] == ["SINCE", "UNTIL", "DURATION", "VANTAGE", "SERVICE", "METHOD"]
    # still going on when last measured, on 2026-01-01: long ago, so it says when it was seen
    assert ongoing.split()[:4] == ["2026-01-01T00:01:40Z", "seen", "2026-01-01", "0s"]
    assert "tls_blocked" in ongoing
    assert (
        total
        == "2 incidents, 1 ongoing (1 not measured for over 2 days: UNTIL says when last seen)"
    )
    assert ended.startswith("2026-01-01T00:00:00Z  2026-01-01T00:01:01Z  1m")
    assert "…" in ended and "dns_blocked" in ended  # the long service name cut, the method kept


def test_incidents_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _timeline(tmp_path)

    def listed(*argv: str) -> list[tuple[str, str]]:
        code, out, err = _run(capsys, "incidents", "--data-dir", str(tmp_path), "--format",
                              "json", *argv)  # fmt: skip
        assert code == 0, err
        return [(i["vantage"], i["verdict"]) for i in json.loads(out)["incidents"]]

    both = [("kz", "tcp_blocked"), ("ir", "dns_blocked")]
    assert listed() == both
    assert listed("--ongoing") == [("kz", "tcp_blocked")]
    assert listed("--vantage", "ir") == [("ir", "dns_blocked")]
    assert listed("--service", "news", "--vantage", "ir", "--vantage", "kz") == both
    assert listed("--service", "chat") == []
    assert listed("--since", "2026-01-01T02:25:00Z") == [("kz", "tcp_blocked")]
    assert listed("--since", "2026-01-01T02:20:00Z") == both
    assert listed("--since", "36500d") == both  # relative: that long before now
    assert listed("--by", "target", "--vantage", "kz")[0] == ("kz", "tcp_blocked")


def test_incidents_since_keeps_an_incident_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store(tmp_path) as store:
        store.add([result(Verdict.DNS_BLOCKED, T0, target="https://a.example/")])
        store.add([result(Verdict.DNS_BLOCKED, T0 + 60, target="https://b.example/")])
        store.add([result(Verdict.OK, T0 + 120, target="https://a.example/")])
        store.add([result(Verdict.OK, T0 + 600, target="https://b.example/")])
    argv = ("incidents", "--data-dir", str(tmp_path), "--format", "json", "--since")
    code, out, _ = _run(capsys, *argv, iso(T0 + 300))
    assert code == 0
    (incident,) = json.loads(out)["incidents"]
    assert incident["since"] == "2026-01-01T00:00:00Z"  # began before --since, with target a
    assert len(incident["targets"]) == 2 and incident["until"] == "2026-01-01T00:10:00Z"
    code, out, _ = _run(capsys, *argv, iso(T0 + 601))
    assert code == 0 and json.loads(out)["incidents"] == []


@pytest.mark.parametrize("bad", ["garbage", "2h ago", "2026-13-01"])
def test_incidents_refuses_a_bad_since(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _timeline(tmp_path)
    code, out, err = _run(capsys, "incidents", "--data-dir", str(tmp_path), "--since", bad)
    assert code == 2 and out == ""
    assert "--since" in err and repr(bad) in err and "RFC 3339" in err


def test_no_incidents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(tmp_path) as store:
        store.add([result(Verdict.OK, T0)])
    code, out, _ = _run(capsys, "incidents", "--data-dir", str(tmp_path))
    assert code == 0 and "no incidents" in out


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0s"),
        (45, "45s"),
        (13 * 60 + 5, "13m"),
        (7980, "2h 13m"),
        (7200, "2h"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
    ],
)
def test_durations_in_words(seconds: float, words: str) -> None:
    assert format_duration(seconds) == words


def test_resolve_time() -> None:
    now = T0 + 86400
    assert resolve_time("24h", now=now) == "2026-01-01T00:00:00Z"
    assert resolve_time("2026-01-01T03:30:00+03:30") == "2026-01-01T00:00:00Z"
    assert parse_time(resolve_time("now", now=now)) == now
    with pytest.raises(ValueError, match="RFC 3339"):
        resolve_time("yesterday")


def test_filters_that_match_nothing_say_so(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "export", "--data-dir", str(data), "--service", "nosuch")
    assert code == 0 and out == ""
    assert "--service 'nosuch': not in the store (it has: chat, news)" in err
    assert "0 measurements match" in err
    code, out, err = _run(capsys, "export", "--data-dir", str(data), "--since", "1h")
    assert code == 0 and out == "" and "0 measurements match" in err
    code, out, err = _run(capsys, "export", "--data-dir", str(data), "--vantage", "kz")
    assert code == 0 and out and err == ""  # a filter that matches: nothing on stderr


def test_export_refuses_since_after_until(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("export", "--data-dir", str(data), "--since", iso(T0 + 60), "--until", iso(T0))
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "" and "--since" in err and "--until" in err


def test_incidents_name_a_filter_that_matches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _timeline(tmp_path)
    code, out, err = _run(capsys, "incidents", "--data-dir", str(tmp_path), "--vantage", "xx")
    assert code == 0 and "no incidents" in out
    assert "--vantage 'xx': not in the store (it has: ir, kz)" in err


def test_the_ooni_export_says_where_from_the_record_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same store exports the same lines from any directory: the vantage's country
    and network come from the record, never from a ./config.yaml that happens to be there."""
    data_dir = tmp_path / "data"
    said = result(Verdict.OK, T0, vantage="ir")
    said.measurement.country, said.measurement.asn = "IR", 12880
    said.measurement.network_name = "Iran Telecom PJS"
    silent = result(Verdict.OK, T0 + 60, vantage="kz")
    with Store(data_dir) as store:
        store.add([said, silent])
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    # a config in one working directory saying other countries than the records do
    (here / "config.yaml").write_text(
        CONFIG.format(data=str(data_dir), extra="").replace("country: IR", "country: KZ")
    )

    def exported(directory: Path) -> list[dict[str, object]]:
        monkeypatch.chdir(directory)
        code, out, _ = _run(capsys, "export", "--data-dir", str(data_dir), "--format", "ooni")
        assert code == 0
        return [json.loads(line) for line in out.splitlines()]

    a, b = exported(here), exported(there)
    assert a == b
    assert (a[0]["probe_cc"], a[0]["probe_asn"], a[0]["probe_network_name"]) == (
        "IR", "AS12880", "Iran Telecom PJS",
    )  # fmt: skip
    assert (a[1]["probe_cc"], a[1]["probe_asn"]) == ("ZZ", "AS0")  # the record says nothing


def test_a_measurement_carries_its_vantages_network() -> None:
    from probes.measure import blank_measurement
    from probes.model import ResolverSpec, Target, Vantage

    v = Vantage("ir", ResolverSpec("udp", "127.0.0.1", 53), country="IR", asn=12880,
                network_name="Iran Telecom PJS")  # fmt: skip
    m = blank_measurement(Target.parse("https://news.example/"), v, "news")
    record = Result(m, Verdict.OK, "fine").to_dict()
    assert record["network"] == {"country": "IR", "asn": 12880, "name": "Iran Telecom PJS"}
    import jsonschema  # type: ignore[import-untyped]

    schema = json.loads((Path(__file__).parent.parent / "docs/schema/measurement.schema.json")
                        .read_text())  # fmt: skip
    assert jsonschema.Draft202012Validator(schema).is_valid(record)
    again = Result.from_dict(json.loads(json.dumps(record))).measurement
    assert (again.country, again.asn, again.network_name) == ("IR", 12880, "Iran Telecom PJS")
    bare = blank_measurement(Target.parse("https://news.example/"), Vantage("x", v.resolver), "")
    assert "network" not in Result(bare, Verdict.OK, "fine").to_dict()  # old shape kept


def test_the_configs_fingerprints_beside_the_log_give_the_same_set_again(tmp_path: Path) -> None:
    """Rows of fingerprint files too: the set read back by digest is the set written."""
    from exporter.judgefile import read_fingerprints, write_fingerprints
    from probes.judge import fingerprint_digest
    from probes.model import FingerprintRow, Fingerprints

    row = FingerprintRow(
        name="id_trustpositif", location_found="body", pattern_type="contains",
        pattern="SITUS DIBLOKIR", scope="nat", origin="block.csv:2",
    )  # fmt: skip
    extra = Fingerprints(dns_addresses=("127.0.0.9",), rows=(row,), files=("/etc/block.csv",))
    digest = fingerprint_digest(FingerprintSet.build(extra))
    written = write_fingerprints(tmp_path, extra)
    assert written is not None and written.is_file()
    again = read_fingerprints(tmp_path, digest)
    assert again is not None and fingerprint_digest(again) == digest
    assert write_fingerprints(tmp_path, Fingerprints()) is None  # the built-in set: no file
    assert read_fingerprints(tmp_path / "elsewhere", digest) is None


def test_an_incident_measured_lately_is_ongoing_and_one_seen_long_ago_says_when(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    now = time.time()
    with Store(tmp_path) as store:
        store.add([result(Verdict.TLS_BLOCKED, now - 7200, vantage="kz")])
        store.add([result(Verdict.TLS_BLOCKED, now - 60, vantage="kz")])
        store.add([result(Verdict.DNS_BLOCKED, now - 9 * 86400, vantage="ir")])  # then nothing
    code, out, _ = _run(capsys, "incidents", "--data-dir", str(tmp_path))
    assert code == 0
    rows = {("kz" if " kz " in line else "ir"): line for line in out.splitlines()[1:3]}
    assert rows["kz"].split()[1:3] == ["ongoing", "2h"]
    seen = time.strftime("%Y-%m-%d", time.gmtime(now - 9 * 86400))
    assert rows["ir"].split()[1:4] == ["seen", seen, "0s"]
    code, out, _ = _run(capsys, "incidents", "--data-dir", str(tmp_path), "--format", "json")
    assert all(i["ongoing"] for i in json.loads(out)["incidents"])  # the JSON says what it is
