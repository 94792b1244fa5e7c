"""The `fhirlake views` and `fhirlake sql` commands: outputs, the lake they build, clear errors."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fhirlake.cli.main import cli
from fhirlake.views import compile_view
from fhirlake.views.ndjson import parse_line

from .conftest import SYNTHEA_100
from .helpers import CATALOG, lake_rows, sort_rows, synthea_resources

REPO = Path(__file__).resolve().parents[2]
VIEWS_DIR = REPO / "views"


def _invoke(*args: str, **kwargs):  # noqa: ANN202
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kwargs)


def _expected_rows(name: str) -> list[dict]:
    view = compile_view(CATALOG[name])
    lines = (json.dumps(r) for r in synthea_resources(view.resource_type))
    return sort_rows(list(view.rows(parse_line(line) for line in lines)))


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv", "parquet"])
def test_run_formats_give_the_view_rows(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"patient.{fmt}"
    result = _invoke("views", "run", str(VIEWS_DIR / "patient.json"), "--input", str(SYNTHEA_100), "--format", fmt,
                     "--output", str(out))
    assert result.exit_code == 0, result.output
    expected = _expected_rows("patient")
    if fmt == "ndjson":
        rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    elif fmt == "json":
        rows = orjson.loads(out.read_bytes())
    elif fmt == "parquet":
        rows = pq.read_table(out).to_pylist()
    else:
        reader = csv.DictReader(io.StringIO(out.read_text()))
        rows = list(reader)
        assert len(rows) == len(expected)
        assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in expected)
        assert Counter(r["gender"] for r in rows) == Counter(r["gender"] for r in expected)
        return
    assert sort_rows(rows) == expected


def test_run_to_stdout_reads_a_single_file() -> None:
    result = _invoke("views", "run", str(VIEWS_DIR / "condition.json"), "--input",
                     str(SYNTHEA_100 / "Condition.ndjson.gz"), "--format", "ndjson")
    assert result.exit_code == 0
    rows = [orjson.loads(line) for line in result.stdout_bytes.splitlines()]
    assert sort_rows(rows) == _expected_rows("condition")


def test_run_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.ndjson"
    bad_json.write_text('{"resourceType": "Patient", "id": "a"}\n{not json\n')
    bad_view = tmp_path / "bad_view.json"
    bad_view.write_text(json.dumps({"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
                                    "select": [{"column": [{"name": "x", "path": "name.where("}]}]}))
    wrong_type = tmp_path / "wrong_type.json"
    wrong_type.write_text(json.dumps({"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
                                      "select": [{"column": [{"path": "id"}]}]}))
    cases = [
        (["views", "run", str(bad_view), "--input", str(SYNTHEA_100)], "select[0].column[0].path"),
        (["views", "run", str(wrong_type), "--input", str(SYNTHEA_100)], "select[0].column[0]"),
        (["views", "run", str(tmp_path / "missing.json"), "--input", str(SYNTHEA_100)], "no such file"),
        (["views", "run", str(VIEWS_DIR / "patient.json"), "--input", str(bad_json)], "line 2"),
        (["views", "run", str(VIEWS_DIR / "patient.json"), "--input", str(tmp_path / "nothing")], "no such file"),
        (["views", "run", str(VIEWS_DIR / "patient.json"), "--input", str(tmp_path)], "no NDJSON files"),
    ]
    (tmp_path / "empty").mkdir()
    cases[-1] = (["views", "run", str(VIEWS_DIR / "patient.json"), "--input", str(tmp_path / "empty")], "no NDJSON files")
    for args, message in cases:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code != 0, args
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_refresh_list_and_sql(synthea_engine, tmp_path: Path) -> None:  # noqa: ANN001
    url = synthea_engine.url.render_as_string(hide_password=False)
    base = ["--database-url", url, "--data-dir", str(tmp_path)]
    result = _invoke(*base, "views", "refresh", "patient", "condition")
    assert result.exit_code == 0, result.output
    assert "patient" in result.output and "full" in result.output
    lake = tmp_path / "lake"
    patients = synthea_resources("Patient")
    assert len(lake_rows(lake, "patient")) == len(patients)

    listing = _invoke(*base, "views", "list")
    assert "patient" in listing.output and str(len(patients)) in listing.output
    assert "never" in listing.output  # observation was not refreshed

    again = _invoke(*base, "views", "refresh", "patient")
    assert "unchanged" in again.output or "incremental" in again.output

    query = ("SELECT p.gender, count(*) AS n FROM patient p JOIN condition c ON c.patient_id = p.id"
             " GROUP BY p.gender ORDER BY p.gender")
    out = tmp_path / "q.csv"
    result = _invoke(*base, "sql", query, "--format", "csv", "--output", str(out))
    assert result.exit_code == 0, result.output
    gender = {p["id"]: p["gender"] for p in patients}
    expected = Counter(gender[c["subject"]["reference"].split("/")[-1].removeprefix("urn:uuid:")]
                       for c in synthea_resources("Condition"))
    got = {row["gender"]: int(row["n"]) for row in csv.DictReader(io.StringIO(out.read_text()))}
    assert got == dict(expected)

    parquet_out = tmp_path / "q.parquet"
    assert _invoke(*base, "sql", query, "--format", "parquet", "--output", str(parquet_out)).exit_code == 0
    assert pq.read_table(parquet_out).num_rows == len(expected)
    table = _invoke(*base, "sql", "SELECT count(*) AS n FROM patient")
    assert str(len(patients)) in table.output

    bad = CliRunner().invoke(cli, [*base, "sql", "SELECT nope FROM patient"])
    assert bad.exit_code != 0 and "SQL error" in bad.output and "Traceback" not in bad.output
    unknown = CliRunner().invoke(cli, [*base, "views", "refresh", "no_such_view"])
    assert unknown.exit_code != 0 and "no catalog view named 'no_such_view'" in unknown.output


def test_sql_without_a_lake_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "sql", "SELECT 1"])
    assert result.exit_code != 0 and "fhirlake views refresh" in result.output


def test_conformance_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = _invoke("views", "conformance", "--report", str(report))
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    tests = [t for suite in data.values() for t in suite["tests"]]
    assert len(tests) == 134 and all(t["result"]["passed"] for t in tests)
