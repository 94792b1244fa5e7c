"""`fhirlake deid` on the shared Synthea files: outputs, errors file, progress, setup errors (exit 2)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from fhirlake.cli.deid import build_engine, deidentify_files, input_files
from fhirlake.cli.main import cli
from tests.deid_pipeline.conftest import MSFT, SMART_BULK, TEST_KEY
from tests.deid_pipeline.leaks import birth_dates, identifying_values, leaks, person_records, read_ndjson

KEY_ENV = {"FHIRLAKE_DEID_KEY": TEST_KEY, "FHIRLAKE_DEID_KEY_FILE": None}


def _run(*args: str, env: dict | None = None):  # noqa: ANN202
    return CliRunner().invoke(cli, ["deid", *args], env=KEY_ENV if env is None else env)


def test_folder_with_a_log_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run("--profile", "safe-harbor", str(SMART_BULK), str(out))
    assert result.exit_code == 0, result.output
    assert "de-identifying" in result.stderr  # the progress bar (no terminal: its label only)
    inputs = sorted(SMART_BULK.glob("*.ndjson.gz"))
    expected_names = sorted([*(p.name.removesuffix(".gz") for p in inputs), "errors.ndjson"])
    assert sorted(p.name for p in out.iterdir()) == expected_names  # no temporary file left behind
    log_lines = len(read_ndjson(SMART_BULK / "log.ndjson.gz"))
    source = [r for p in inputs if p.name != "log.ndjson.gz" for r in read_ndjson(p)]
    output = b"".join((out / p.name.removesuffix(".gz")).read_bytes() for p in inputs)
    assert output.count(b"\n") == len(source)
    assert f"de-identified {len(source)} resources from {len(inputs)} files" in result.stdout
    # the exporting client's log is not FHIR: every line reported with file and line number
    errors = [orjson.loads(line) for line in (out / "errors.ndjson").read_bytes().splitlines()]
    assert [(e["file"], e["line"]) for e in errors] == [("log.ndjson.gz", n) for n in range(1, log_lines + 1)]
    assert f"{log_lines} lines could not be processed" in result.stderr
    assert (out / "log.ndjson").read_bytes() == b""  # nothing of it passed through
    # leak scan, and joins: Encounter.subject points at the pseudonymous Patient ids
    assert leaks(identifying_values(source), output) == []
    assert leaks(birth_dates(source), person_records(output)) == []
    patients = {r["id"] for r in read_ndjson(out / "Patient.000.ndjson")}
    subjects = {r["subject"]["reference"] for r in read_ndjson(out / "Encounter.000.ndjson")}
    assert patients and {s.removeprefix("Patient/") for s in subjects} <= patients
    assert not patients & {r["id"] for r in source}


def test_bad_lines_in_the_middle_and_gzip_output(tmp_path: Path) -> None:
    good = gzip.decompress((MSFT / "Patient.ndjson.gz").read_bytes()).splitlines()[:3]
    src = tmp_path / "mixed.ndjson"
    src.write_bytes(b"\n".join([good[0], b"not json", good[1], b"", b'{"resourceType": "Nope", "id": "x1"}',
                                good[2]]) + b"\n")
    out = tmp_path / "out"
    result = _run("--profile", "limited-data-set", "--gzip", str(src), str(out))
    assert result.exit_code == 0, result.output
    written = [orjson.loads(line) for line in gzip.decompress((out / "mixed.ndjson.gz").read_bytes()).splitlines()]
    assert len(written) == 3 and all(r["resourceType"] == "Patient" for r in written)
    errors = [orjson.loads(line) for line in (out / "errors.ndjson").read_bytes().splitlines()]
    assert [(e["file"], e["line"]) for e in errors] == [("mixed.ndjson", 2), ("mixed.ndjson", 5)]
    assert "not valid JSON" in errors[0]["error"] and "x1" not in errors[1]["error"]


def test_same_key_same_pseudonyms_as_the_library(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    assert _run("--profile", "safe-harbor", str(MSFT / "Patient.ndjson.gz"), str(out)).exit_code == 0
    monkeypatch.setenv("FHIRLAKE_DEID_KEY", TEST_KEY)
    engine = build_engine("safe-harbor", None)
    expected = [engine.deidentify(r)["id"] for r in read_ndjson(MSFT / "Patient.ndjson.gz")]
    assert [r["id"] for r in read_ndjson(out / "Patient.ndjson")] == expected
    other = tmp_path / "other"
    assert _run("--profile", "safe-harbor", str(MSFT / "Patient.ndjson.gz"), str(other),
                env={"FHIRLAKE_DEID_KEY": "another-secret-0123456789"}).exit_code == 0
    assert not {r["id"] for r in read_ndjson(other / "Patient.ndjson")} & set(expected)


def test_progress_covers_every_byte(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FHIRLAKE_DEID_KEY", TEST_KEY)
    files = input_files(MSFT)
    steps: list[int] = []
    run = deidentify_files(build_engine("safe-harbor", None), files, tmp_path, on_bytes=steps.append)
    assert sum(steps) == sum(p.stat().st_size for p in files)
    assert len(steps) > len(files)  # updates within files, not only at their ends
    assert run.failed == 0 and run.written == sum(len(read_ndjson(p)) for p in files)


def _config(tmp_path: Path, body: dict) -> str:
    path = tmp_path / "rules.json"
    path.write_bytes(orjson.dumps(body))
    return str(path)


@pytest.mark.parametrize(("case", "expected"), [
    ("no key", "no de-identification key"),
    ("unknown profile", "unknown de-identification profile 'hipaa-lite'"),
    ("invalid config", "rule 1 ('Patient.name'): unsupported method 'scramble'"),
    ("unreadable config", "cannot read configuration"),
    ("missing input", "no such file or folder"),
    ("empty folder", "no *.ndjson or *.ndjson.gz files"),
    ("profile and config", "either --profile"),
    ("output over input", "OUT_DIR holds the input files"),
])
def test_setup_problems_exit_2_and_write_nothing(tmp_path: Path, case: str, expected: str) -> None:
    out = tmp_path / "out"
    source, env = str(MSFT), KEY_ENV
    args = ["--profile", "safe-harbor"]
    if case == "no key":
        env = {"FHIRLAKE_DEID_KEY": None, "FHIRLAKE_DEID_KEY_FILE": None}
    elif case == "unknown profile":
        args = ["--profile", "hipaa-lite"]
    elif case == "invalid config":
        args = ["--config", _config(tmp_path, {"fhirPathRules": [{"path": "Patient.id", "method": "cryptoHash"},
                                                                 {"path": "Patient.name", "method": "scramble"}]})]
    elif case == "unreadable config":
        args = ["--config", str(tmp_path / "absent.json")]
    elif case == "missing input":
        source = str(tmp_path / "absent")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        source = str(tmp_path / "empty")
    elif case == "profile and config":
        args = ["--profile", "safe-harbor", "--config", _config(tmp_path, {"fhirPathRules": []})]
    elif case == "output over input":
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "Patient.ndjson").write_bytes((MSFT / "Patient.ndjson.gz").read_bytes())
        out = tmp_path / "in"
        source = str(out)
    result = _run(*args, source, str(out), env=env)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert TEST_KEY not in result.output
    if case != "output over input":
        assert not out.exists()
