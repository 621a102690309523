"""`lifeline import ooni` on OONI measurements written here: the forms a researcher holds.

One measurement each, in the shapes OONI's data comes in: a probe's raw
measurement file, JSONL, gzip, an API `measurement_meta` answer with
`raw_measurement` as a string or an object, and a file of another test.
The real measurements are in tests/test_ooni_real.py.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from exporter.cli import main
from probes.records import Result

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "schema" / "measurement.schema.json"


def _measurement(**overrides: Any) -> dict[str, Any]:
    """A web_connectivity 0.4 measurement of https://news.example/ from IR, the control fine."""
    m: dict[str, Any] = {
        "data_format_version": "0.2.0",
        "input": "https://news.example/",
        "measurement_start_time": "2024-05-01 10:00:00",
        "probe_asn": "AS58224",
        "probe_cc": "IR",
        "report_id": "20240501T095958Z_webconnectivity_IR_58224_n1_abcdefgh",
        "software_name": "ooniprobe-cli",
        "software_version": "3.20.0",
        "test_name": "web_connectivity",
        "test_runtime": 1.5,
        "test_version": "0.4.3",
        "test_keys": {
            "queries": [
                {
                    "engine": "system",
                    "hostname": "news.example",
                    "query_type": "A",
                    "resolver_address": "",
                    "failure": None,
                    "answers": [{"answer_type": "A", "ipv4": "93.184.216.34", "ttl": None}],
                }
            ],
            "tcp_connect": [
                {"ip": "93.184.216.34", "port": 443, "status": {"success": True, "failure": None}}
            ],
            "tls_handshakes": [
                {
                    "address": "93.184.216.34:443",
                    "server_name": "news.example",
                    "tls_version": "TLSv1.3",
                    "cipher_suite": "TLS_AES_128_GCM_SHA256",
                    "negotiated_protocol": "h2",
                    "failure": None,
                    "peer_certificates": [],
                }
            ],
            "requests": [
                {
                    "request": {"url": "https://news.example/", "method": "GET"},
                    "response": {
                        "code": 200,
                        "headers": {"Content-Type": "text/html", "Server": "nginx"},
                        "body": "<html><head><title>News</title></head><body>today</body></html>",
                        "body_is_truncated": False,
                    },
                    "failure": None,
                }
            ],
            "control": {
                "dns": {"failure": None, "addrs": ["93.184.216.34"]},
                "tcp_connect": {"93.184.216.34:443": {"status": True, "failure": None}},
                "http_request": {
                    "status_code": 200,
                    "body_length": 63,
                    "title": "News",
                    "headers": {"Content-Type": "text/html", "Server": "nginx"},
                    "failure": None,
                },
            },
            "control_failure": None,
            "blocking": False,
            "accessible": True,
        },
    }
    m.update(overrides)
    return m


def _dns_blocked() -> dict[str, Any]:
    """The probe's resolver answers a private address where nothing listens; the control's works."""
    m = _measurement()
    tk = m["test_keys"]
    tk["queries"][0]["answers"] = [{"answer_type": "A", "ipv4": "10.10.34.35", "ttl": 60}]
    tk["tcp_connect"] = [
        {
            "ip": "10.10.34.35",
            "port": 443,
            "status": {"success": False, "failure": "generic_timeout_error"},
        }
    ]
    tk["tls_handshakes"], tk["requests"] = [], []
    tk["http_experiment_failure"] = "generic_timeout_error"
    tk["blocking"], tk["accessible"] = "dns", False
    return m


def _reset_after_request() -> dict[str, Any]:
    m = _measurement(input="http://news.example/")
    tk = m["test_keys"]
    tk["tcp_connect"][0]["port"] = 80
    tk["control"]["tcp_connect"] = {"93.184.216.34:80": {"status": True, "failure": None}}
    tk["tls_handshakes"] = []
    tk["requests"] = [
        {
            "request": {"url": "http://news.example/", "method": "GET"},
            "response": {"code": None, "headers": {}, "body": None},
            "failure": "connection_reset",
        }
    ]
    tk["http_experiment_failure"] = "connection_reset"
    tk["blocking"], tk["accessible"] = "http-failure", False
    return m


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _records(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_a_raw_measurement_becomes_a_judged_record_with_its_ooni_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], validator: jsonschema.Draft202012Validator
) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_measurement()))
    code, out, err = _run(capsys, "import", "ooni", str(path))
    assert code == 0, err
    (record,) = _records(out)
    validator.validate(record)
    assert record["verdict"] == "ok"
    assert record["service"] == "news.example"
    assert record["vantage"] == "ooni-ir-as58224"
    assert record["target"] == "https://news.example/"
    assert record["time"].startswith("2024-05-01T10:00:00")
    assert record["ooni"] == {
        "report_id": "20240501T095958Z_webconnectivity_IR_58224_n1_abcdefgh",
        "measurement_uid": None,
        "input": "https://news.example/",
        "probe_cc": "IR",
        "probe_asn": "AS58224",
        "test_version": "0.4.3",
        "blocking": False,
        "accessible": True,
    }
    assert record["network"] == {"country": "IR", "asn": 58224, "name": None}
    stages = record["stages"]
    assert stages["dns"]["addresses"] == ["93.184.216.34"]
    assert stages["tcp"]["address"] == "93.184.216.34"
    assert stages["tls"]["version"] == "TLSv1.3" and stages["tls"]["alpn"] == "h2"
    http = stages["http"]
    assert http["status"] == 200 and http["title"] == "News"
    assert http["headers"]["server"] == "nginx"
    assert http["body_length"] == 63 and len(http["body_sha256"]) == 64
    control = record["control"]
    assert control["vantage"] == "ooni-th"
    assert control["stages"]["dns"]["addresses"] == ["93.184.216.34"]
    assert control["stages"]["tcp"]["ok"] is True
    assert control["stages"]["http"]["status"] == 200


def test_a_measurement_meta_answer_with_raw_measurement_as_a_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], validator: jsonschema.Draft202012Validator
) -> None:
    meta = {
        "measurement_uid": "20240501100000.000000_IR_webconnectivity_0123456789abcdef",
        "report_id": "20240501T095958Z_webconnectivity_IR_58224_n1_abcdefgh",
        "test_name": "web_connectivity",
        "anomaly": True,
        "raw_measurement": json.dumps(_dns_blocked()),
    }
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))
    code, out, err = _run(capsys, "import", "ooni", str(path))
    assert code == 0, err
    (record,) = _records(out)
    validator.validate(record)
    assert record["verdict"] == "dns_blocked"
    assert record["ooni"]["measurement_uid"] == meta["measurement_uid"]
    assert record["ooni"]["blocking"] == "dns" and record["ooni"]["accessible"] is False
    assert record["stages"]["tcp"]["attempts"][0]["failure"] == "generic_timeout_error"


def test_a_measurement_meta_answer_with_raw_measurement_as_an_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = {"measurement_uid": "uid-1", "raw_measurement": _measurement()}
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))
    code, out, _ = _run(capsys, "import", "ooni", str(path))
    assert code == 0
    (record,) = _records(out)
    assert record["ooni"]["measurement_uid"] == "uid-1"
    assert record["verdict"] == "ok"


def test_gzipped_jsonl_gives_one_record_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], validator: jsonschema.Draft202012Validator
) -> None:
    path = tmp_path / "day.jsonl.gz"
    lines = [_measurement(), _reset_after_request(), _dns_blocked()]
    path.write_bytes(gzip.compress("".join(json.dumps(m) + "\n" for m in lines).encode()))
    code, out, err = _run(capsys, "import", "ooni", "--format", "jsonl", str(path))
    assert code == 0, err
    records = _records(out)
    for record in records:
        validator.validate(record)
    assert [r["verdict"] for r in records] == ["ok", "http_blocked", "dns_blocked"]
    http = records[1]["stages"]["http"]
    assert http["failure"] == "connection_reset" and http["request_sent"] is True


def test_a_file_of_another_test_is_named_and_skipped_and_the_exit_code_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_measurement()))
    other = tmp_path / "dnscheck.json"
    other.write_text(json.dumps(_measurement(test_name="dnscheck")))
    junk = tmp_path / "list.json"
    junk.write_text("[1, 2]")
    code, out, err = _run(capsys, "import", "ooni", str(good), str(other), str(junk))
    assert code == 1
    assert len(_records(out)) == 1
    assert f"{other}: skipped: an OONI 'dnscheck' measurement, not web_connectivity" in err
    assert f"{junk}: skipped: not an OONI measurement (a JSON list)" in err
    assert str(good) not in err


def test_a_bad_line_of_a_jsonl_file_is_named_by_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    good, blocked = json.dumps(_measurement()), json.dumps(_dns_blocked())
    path.write_text(f"{good}\n{{not json\n{blocked}\n")
    code, out, err = _run(capsys, "import", "ooni", str(path))
    assert code == 1
    assert [r["verdict"] for r in _records(out)] == ["ok", "dns_blocked"]
    assert f"{path}:2: skipped: not JSON" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["import", "ooni"])
    assert exc.value.code == 2
    assert "the following arguments are required: FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["import", "ripe", "x.json"])
    assert exc.value.code == 2
    assert "invalid choice: 'ripe'" in capsys.readouterr().err


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    code, out, err = _run(capsys, "import", "ooni", str(missing))
    assert code == 1
    assert out == ""
    assert f"{missing}: skipped: cannot read" in err


def test_a_measurement_without_test_keys_is_an_error_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], validator: jsonschema.Draft202012Validator
) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(_measurement(test_keys=None)))
    code, out, _ = _run(capsys, "import", "ooni", str(path))
    assert code == 0
    (record,) = _records(out)
    validator.validate(record)
    assert record["verdict"] == "error"
    assert "no test_keys" in record["reason"]


def test_imported_records_go_into_a_store_that_export_and_incidents_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    later = _dns_blocked()
    later["measurement_start_time"] = "2024-05-01 11:00:00"
    path.write_text(json.dumps(_measurement()) + "\n" + json.dumps(later) + "\n")
    data = tmp_path / "data"
    code, out, err = _run(capsys, "import", "ooni", "--data-dir", str(data), str(path))
    assert code == 0, err
    assert out == ""
    assert "2 measurements imported" in err
    code, out, _ = _run(capsys, "export", "--data-dir", str(data), "--config", "none.yaml")
    assert code == 0
    exported = _records(out)
    assert [r["verdict"] for r in exported] == ["ok", "dns_blocked"]
    assert exported[1]["ooni"]["report_id"] == later["report_id"]
    code, out, _ = _run(
        capsys, "incidents", "--data-dir", str(data), "--config", "none.yaml", "--format", "json"
    )
    assert code == 0
    (incident,) = json.loads(out)["incidents"]
    assert incident["verdict"] == "dns_blocked"
    assert incident["vantage"] == "ooni-ir-as58224"
    assert incident["service"] == "news.example"


def test_the_ooni_block_survives_the_typed_record_and_old_records_have_none() -> None:
    from exporter.ooniimport import judge

    record = judge(_measurement())
    again = Result.from_dict(copy.deepcopy(record)).to_dict()
    assert again["ooni"] == record["ooni"]
    del record["ooni"]
    assert "ooni" not in Result.from_dict(record).to_dict()


def test_summary_prints_the_confusion_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    lines = [_measurement(), _dns_blocked(), _reset_after_request()]
    path.write_text("".join(json.dumps(m) + "\n" for m in lines))
    code, out, _ = _run(capsys, "import", "ooni", "--summary", "--root", str(tmp_path), str(path))
    assert code == 0
    assert "| OONI blocking \\ lifeline | ok | dns_blocked | http_blocked | total |" in out
    assert "| false | 1 | · | · | 1 |" in out
    assert "| dns | · | 1 | · | 1 |" in out
    assert "| http-failure | · | · | 1 | 1 |" in out
    assert "| null | · | · | · | 0 |" in out
    assert "lifeline says what OONI says on 3 of 3 measurements" in out
    assert "| `m.jsonl:2` | dns / false | dns_blocked |  |" in out


def test_accuracy_regeneration_replaces_only_the_generated_block() -> None:
    from benchmarks.accuracy import BEGIN, END, splice

    doc = f"# title\n\nprose above\n\n{BEGIN}\nold table\n{END}\n\nprose below\n"
    again = splice(doc, "| new | table |\n")
    table = "| new | table |\n"
    assert again == f"# title\n\nprose above\n\n{BEGIN}\n\n{table}\n{END}\n\nprose below\n"
    assert splice(again, "| new | table |\n") == again
    with pytest.raises(ValueError, match="markers"):
        splice("# no markers\n", "x")


def test_malformed_or_binary_files_are_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = _measurement()
    odd["test_keys"]["tcp_connect"] = [{"ip": "93.184.216.34", "port": 443, "status": "up"}]
    odd_path = tmp_path / "odd.json"
    odd_path.write_text(json.dumps(odd))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\x01binary\n\xff\xfe more\n")
    code, out, err = _run(capsys, "import", "ooni", str(odd_path), str(binary))
    assert code == 1
    assert out == ""
    assert f"{odd_path}: skipped: malformed web_connectivity measurement" in err
    assert f"{binary}: skipped: neither JSON nor JSON lines" in err
    assert err.count("skipped") == 2


async def test_the_page_command_shows_an_imported_store_read_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    import aiohttp

    from exporter.pagecmd import serve_page

    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(_dns_blocked()) + "\n")
    data = tmp_path / "data"
    code, _, err = _run(capsys, "import", "ooni", "--data-dir", str(data), str(path))
    assert code == 0, err

    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_page(data, "127.0.0.1:0", stop=stop, on_listening=listening.set_result)
    )
    try:
        url = await asyncio.wait_for(asyncio.shield(listening), 30)
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "api/v1/status") as r:
                assert r.status == 200
                status = await r.json()
            async with http.get(url) as r:
                assert r.status == 200
                page = await r.text()
            async with http.get(
                url + "target",
                params={
                    "service": "news.example",
                    "target": "https://news.example/",
                    "vantage": "ooni-ir-as58224",
                },
            ) as r:
                assert r.status == 200
                drill = await r.text()
    finally:
        stop.set()
        code = await task
    assert code == 0
    assert status["schema"] == "lifeline.status/1"
    (row,) = status["results"]
    assert (row["service"], row["vantage"], row["verdict"]) == (
        "news.example",
        "ooni-ir-as58224",
        "dns_blocked",
    )
    assert row["time"] == "2024-05-01T10:00:00.000000Z"
    assert [v["name"] for v in status["vantages"]] == ["ooni-ir-as58224"]
    assert "news.example" in page and "ooni-ir-as58224" in page
    assert "DNS blocked" in page
    assert "https://news.example/" in drill and "DNS blocked" in drill
    assert "10.10.34.35" in drill  # the evidence of a measurement made in 2024, not today
    out, err = capsys.readouterr()
    assert "listening on http://127.0.0.1:" in out
    assert "read-only: nothing is measured" in err


async def test_the_page_command_names_a_missing_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.pagecmd import serve_page

    assert await serve_page(tmp_path / "nothing", "127.0.0.1:0") == 2
    assert f"no store at {tmp_path / 'nothing' / 'lifeline.db'}" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
