"""Import of every shared Synthea set into a fresh database, bad lines, idempotency, $import over HTTP."""

from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from fhirlake.jobs.imports.loader import ImportRun, expand_paths
from fhirlake.store.db import make_engine
from fhirlake.store.migrate import upgrade
from tests.bulk.conftest import MSFT, SMART_100, SMART_BULK, SYNTHEA, wait_for
from tests.conftest import PG_SERVER, create_database, drop_database


@pytest.fixture(scope="module")
def fresh():  # noqa: ANN201
    name = create_database("fhirlake_import")
    url = f"{PG_SERVER}/{name}"
    eng = make_engine(url, pool_size=4)
    upgrade(eng)
    yield url, eng
    eng.dispose()
    drop_database(name)


def _ndjson_ids(folder: Path) -> set[tuple[str, str]]:
    ids = set()
    for path in folder.glob("*.ndjson.gz"):
        for line in gzip.open(path):
            r = orjson.loads(line)
            if "resourceType" in r:
                ids.add((r["resourceType"], r["id"]))
    return ids


def _db_ids(eng) -> set[tuple[str, str]]:  # noqa: ANN001
    with eng.connect() as conn:
        return {(t, i) for t, i in conn.execute(text("SELECT res_type, res_id FROM resource WHERE NOT deleted"))}


def test_every_synthea_set_with_the_cli(fresh, tmp_path) -> None:  # noqa: ANN001
    from fhirlake.cli.main import cli

    url, eng = fresh
    runner = CliRunner()
    expected: set[tuple[str, str]] = set()
    for folder in (SMART_BULK, MSFT, SMART_100):
        errors = tmp_path / f"{folder.name}-errors.ndjson"
        result = runner.invoke(cli, ["--database-url", url, "import", str(folder), "--errors", str(errors)])
        expected |= _ndjson_ids(folder)
        assert _db_ids(eng) == expected, result.output
        if folder == SMART_BULK:
            # the exporting client's log is not FHIR: every one of its lines is reported, nothing of it loaded
            assert result.exit_code == 1
            outcomes = [orjson.loads(x) for x in errors.read_bytes().splitlines()]
            log_lines = sum(1 for _ in gzip.open(folder / "log.ndjson.gz"))
            assert len(outcomes) == log_lines
            assert all("log.ndjson.gz, line" in o["issue"][0]["diagnostics"] for o in outcomes)
            # conditional references were resolved to real ids
            with eng.connect() as conn:
                content = conn.execute(text(
                    "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
                    " WHERE r.res_type = 'Encounter' LIMIT 1")).scalar()
            assert "?identifier=" not in content and '"Organization/' in content
        else:
            assert result.exit_code == 0, result.output
    # the msft set also ships as per-patient transaction Bundles (urn:uuid references)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    with tarfile.open(MSFT / "bundles.tar.gz") as tar:
        tar.extractall(bundles, filter="data")
    run = ImportRun(eng, tmp_path / "bundle-errors.ndjson")
    summary = run.load(expand_paths([bundles]))
    in_bundles = set()
    for p in bundles.rglob("*.json"):
        for entry in orjson.loads(p.read_bytes())["entry"]:
            in_bundles.add((entry["resource"]["resourceType"], entry["fullUrl"].removeprefix("urn:uuid:")))
    assert summary.errors == 0
    assert in_bundles <= _db_ids(eng)
    with eng.connect() as conn:
        dangling = conn.execute(text(
            "SELECT count(*) FROM resource_version v WHERE v.content LIKE '%\"reference\":\"urn:uuid:%'")).scalar()
    assert dangling == 0


@pytest.mark.parametrize("parse_process", [False, True], ids=["parsed-here", "parsing-process"])
def test_bad_lines_are_reported_and_good_ones_kept(fresh, tmp_path, parse_process) -> None:  # noqa: ANN001
    _url, eng = fresh
    good = [{"resourceType": "Patient", "id": f"imp-good-{n}", "gender": "female"} for n in range(5)]
    lines = [
        orjson.dumps(good[0]),
        b'{"resourceType": "Patient", "id": "broken-json"',  # 2: not JSON
        orjson.dumps(good[1]),
        orjson.dumps({"id": "x"}),  # 4: no resourceType
        orjson.dumps({"resourceType": "Patient", "id": "imp-bad-gender", "gender": 7}),  # 5: invalid
        orjson.dumps(good[2]),
        orjson.dumps({"resourceType": "Observation", "id": "imp-bad-ref", "status": "final",
                      "code": {"text": "x"}, "subject": {"reference": "Patient?identifier=nobody|none"}}),  # 7
        orjson.dumps({"resourceType": "Patient", "gender": "male"}),  # 8: no id
        orjson.dumps(good[3]),
        orjson.dumps(good[4]),
        orjson.dumps({"resourceType": "Patient", "id": "imp-nul", "name": [{"family": "a\u0000"}]}),  # 11: NUL
    ]
    path = tmp_path / "Mixed.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    errors = tmp_path / "errors.ndjson"
    summary = ImportRun(eng, errors, batch_size=3, parse_process=parse_process).load(expand_paths([path]))
    assert summary.loaded + summary.unchanged == 5 and summary.errors == 6
    assert summary.inputs == [{"input": str(path), "loaded": summary.loaded, "unchanged": summary.unchanged,
                               "errors": 6}]
    outcomes = [orjson.loads(x) for x in errors.read_bytes().splitlines()]
    lines_reported = sorted(int(o["issue"][0]["location"][0].rsplit("line ", 1)[1]) for o in outcomes)
    assert lines_reported == [2, 4, 5, 7, 8, 11]
    assert all(o["resourceType"] == "OperationOutcome" and str(path) in o["issue"][0]["diagnostics"] for o in outcomes)
    with eng.connect() as conn:
        ids = {r[0] for r in conn.execute(text("SELECT res_id FROM resource WHERE res_id LIKE 'imp-%'"))}
    assert ids == {g["id"] for g in good}


@pytest.mark.parametrize("parse_process", [False, True], ids=["parsed-here", "parsing-process"])
def test_a_line_over_the_limit_is_reported_and_skipped(fresh, tmp_path, parse_process) -> None:  # noqa: ANN001
    _url, eng = fresh
    limit = 4096
    text_of = lambda n: orjson.dumps({"resourceType": "Patient", "id": f"imp-long-{n}", "gender": "male"})  # noqa: E731
    huge = orjson.dumps({"resourceType": "Patient", "id": "imp-too-long", "name": [{"text": "x" * (3 * limit)}]})
    exact = orjson.dumps({"resourceType": "Patient", "id": "imp-at-limit", "name": [{"text": ""}]})
    exact = exact.replace(b'"text":""', b'"text":"' + b"y" * (limit - len(exact)) + b'"')
    assert len(exact) == limit
    path = tmp_path / "Long.ndjson.gz"
    # gzip: the stream is read a line at a time like a file; the oversized line is the 2nd and the last
    path.write_bytes(gzip.compress(b"\n".join([text_of(1), huge, exact, text_of(2), huge])))
    errors = tmp_path / "errors.ndjson"
    summary = ImportRun(eng, errors, parse_process=parse_process, max_line_bytes=limit).load(expand_paths([path]))
    assert summary.errors == 2 and summary.loaded + summary.unchanged == 3
    outcomes = [orjson.loads(x) for x in errors.read_bytes().splitlines()]
    assert sorted(o["issue"][0]["location"][0] for o in outcomes) == [f"{path}, line 2", f"{path}, line 5"]
    assert all(o["issue"][0]["code"] == "too-costly" and "4,096 bytes" in o["issue"][0]["diagnostics"]
               for o in outcomes)
    assert all("x" * 10 not in x for x in errors.read_text().splitlines())  # the content is not echoed
    with eng.connect() as conn:
        ids = {r[0] for r in conn.execute(text("SELECT res_id FROM resource WHERE res_id LIKE 'imp-long-%'"
                                                " OR res_id IN ('imp-at-limit', 'imp-too-long')"))}
    assert ids == {"imp-long-1", "imp-long-2", "imp-at-limit"}


def test_reimport_is_idempotent(fresh, tmp_path) -> None:  # noqa: ANN001
    _url, eng = fresh
    source = tmp_path / "Patient.ndjson.gz"
    shutil.copy(SMART_BULK / "Patient.000.ndjson.gz", source)
    with eng.connect() as conn:
        versions_before = conn.execute(text("SELECT count(*) FROM resource_version")).scalar()
    summary = ImportRun(eng, None).load(expand_paths([source]))
    assert summary.loaded == 0 and summary.unchanged == sum(1 for _ in gzip.open(source)) and summary.errors == 0
    with eng.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM resource_version")).scalar() == versions_before
    # a changed resource under the same id becomes a new version, not a duplicate
    first = orjson.loads(gzip.open(source).readline())
    first["gender"] = "unknown" if first.get("gender") != "unknown" else "other"
    changed = tmp_path / "Changed.ndjson"
    changed.write_bytes(orjson.dumps(first) + b"\n")
    assert ImportRun(eng, None).load(expand_paths([changed])).loaded == 1
    with eng.connect() as conn:
        version, n = conn.execute(text(
            "SELECT max(version), count(*) FROM resource WHERE res_type = 'Patient' AND res_id = :i"), {"i": first["id"]}).one()
    assert n == 1 and version == 2


def test_import_over_http(bulk, engine, bulk_server) -> None:  # noqa: ANN001
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
        {"name": "input", "part": [{"name": "type", "valueCode": "Patient"},
                                   {"name": "url", "valueUrl": "smart-bulk-10-patients/Organization.000.ndjson.gz"}]},
        {"name": "input", "part": [{"name": "url", "valueUrl": "smart-bulk-10-patients/log.ndjson.gz"}]},
    ]}
    response = bulk.post("/$import", json=params, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 202, response.text
    done = wait_for(bulk, response.headers["Content-Location"])
    assert done.status_code == 200, done.text
    manifest = done.json()
    [err] = manifest["error"]
    lines = bulk.get(err["url"]).content.splitlines()
    assert len(lines) == err["count"] == sum(1 for _ in gzip.open(SMART_BULK / "log.ndjson.gz"))
    orgs = sum(1 for _ in gzip.open(SMART_BULK / "Organization.000.ndjson.gz"))
    assert {o["type"]: o["count"] for o in manifest["output"]} == {"Organization": orgs}
    # paths outside the import directory are refused
    outside = {"resourceType": "Parameters", "parameter": [
        {"name": "input", "part": [{"name": "url", "valueUrl": "../../etc/passwd"}]}]}
    refused = bulk.post("/$import", json=outside, headers={"Content-Type": "application/fhir+json"})
    assert refused.status_code == 400 and "outside" in refused.json()["issue"][0]["diagnostics"]
    assert SYNTHEA == bulk_server.settings.import_dir


@pytest.fixture()
def file_server(tmp_path):  # noqa: ANN001, ANN201
    """A real HTTP server on loopback serving ``tmp_path`` (an NDJSON host such as a bulk export's)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_inputs_are_downloaded_and_loaded(bulk, engine, file_server) -> None:  # noqa: ANN001
    folder, base = file_server
    shutil.copy(SMART_BULK / "Organization.000.ndjson.gz", folder / "Organization.000.ndjson.gz")
    plain = [{"resourceType": "Practitioner", "id": f"http-input-{n}", "active": True} for n in range(3)]
    (folder / "Practitioner.ndjson").write_bytes(b"\n".join(orjson.dumps(p) for p in plain) + b"\n")
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
        {"name": "input", "part": [{"name": "url", "valueUrl": f"{base}/Organization.000.ndjson.gz"}]},
        {"name": "input", "part": [{"name": "url", "valueUrl": f"{base}/Practitioner.ndjson"}]},
        {"name": "input", "part": [{"name": "url", "valueUrl": f"{base}/missing.ndjson?X-Amz-Signature=s3cr3t"}]},
    ]}
    response = bulk.post("/$import", json=params, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 202, response.text
    done = wait_for(bulk, response.headers["Content-Location"])
    assert done.status_code == 200, done.text
    manifest = done.json()
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    assert counts.get("Practitioner") == 3
    assert counts.get("Organization", 0) + _unchanged(manifest, "Organization.000") == sum(
        1 for _ in gzip.open(SMART_BULK / "Organization.000.ndjson.gz"))
    # the unreachable input is reported, the others still load
    [err] = manifest["error"]
    outcomes = [orjson.loads(x) for x in bulk.get(err["url"]).content.splitlines()]
    assert len(outcomes) == 1 and "missing.ndjson" in outcomes[0]["issue"][0]["diagnostics"]
    assert "404" in outcomes[0]["issue"][0]["diagnostics"]
    # a signed URL's query (a credential) reaches neither the error file nor the manifest
    assert b"s3cr3t" not in bulk.get(err["url"]).content and "s3cr3t" not in done.text
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT res_id FROM resource WHERE res_type = 'Practitioner'"
                                       " AND res_id LIKE 'http-input-%' AND NOT deleted")).scalars())
    assert stored == {p["id"] for p in plain}


def _unchanged(manifest: dict, name: str) -> int:
    """Resources of an input already stored unchanged (an earlier test may have loaded the same file)."""
    return sum(i["unchanged"] for i in manifest["extension"]["inputs"] if name in i["input"])


def _index_rows_in_db(eng) -> dict[str, list[tuple]]:  # noqa: ANN001
    from fhirlake.search.index import TABLE_COLUMNS

    with eng.connect() as conn:
        return {table: sorted(tuple(r) for r in conn.exec_driver_sql(
            f"SELECT {columns} FROM sp_{table} x WHERE x.rid IN (SELECT rid FROM resource WHERE NOT deleted)"))
            for table, columns in TABLE_COLUMNS.items()}


@pytest.mark.parametrize("parse_process", [False, "fork", "spawn"], ids=["parsed-here", "forked", "spawned"])
def test_rows_indexed_by_the_importer_equal_a_reindex(tmp_path, parse_process, monkeypatch) -> None:  # noqa: ANN001
    """The importer extracts index rows ahead of the write (rid filled in later), in this process
    or formatted as COPY text by a parsing process; the rows must be exactly those that indexing
    the stored resources again gives, after creates and after updates."""
    from fhirlake.jobs.imports import parsing
    from fhirlake.search.index import reindex

    if parse_process:
        monkeypatch.setattr(parsing, "start_method", lambda: parse_process)

    name = create_database("fhirlake_import_index")
    eng = make_engine(f"{PG_SERVER}/{name}", pool_size=2)
    try:
        upgrade(eng)
        sources = [s for s in expand_paths([SMART_BULK]) if not s.name.endswith("log.ndjson.gz")]
        assert ImportRun(eng, None, batch_size=50, parse_process=bool(parse_process)).load(sources).errors == 0
        # an update of every Patient, in a second file: their old rows must go, the new ones come
        patients = [orjson.loads(x) for x in gzip.open(SMART_BULK / "Patient.000.ndjson.gz")]
        for p in patients:
            p["name"] = [{"family": "Renamed", "given": [p["id"][:8]]}]
            p["birthDate"] = "1970-01-01"
        changed = tmp_path / "Patient.ndjson"
        changed.write_bytes(b"\n".join(orjson.dumps(p) for p in patients) + b"\n")
        summary = ImportRun(eng, None, batch_size=7, parse_process=bool(parse_process)).load(expand_paths([changed]))
        assert summary.loaded == len(patients) and summary.errors == 0
        imported = _index_rows_in_db(eng)
        assert len({r[0] for r in imported["string"] if r[3] == "renamed"}) == len(patients)
        reindex(eng, restart=True)
        assert _index_rows_in_db(eng) == imported
    finally:
        eng.dispose()
        drop_database(name)


def test_cli_refuses_a_batch_size_below_one(fresh) -> None:  # noqa: ANN001
    from fhirlake.cli.main import cli

    url, _eng = fresh
    result = CliRunner().invoke(cli, ["--database-url", url, "import", str(SMART_BULK), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output


def test_batches_written_concurrently_keep_the_input_order(fresh, tmp_path) -> None:  # noqa: ANN001
    """Two batches are written at once. The last line about a resource must still win, and a
    conditional reference must find a resource loaded by an earlier batch still in flight."""
    _url, eng = fresh
    lines = []
    for round_ in range(40):  # one line per batch: each line's batch is in flight with the next one's
        lines.append({"resourceType": "Organization", "id": f"conc-org-{round_}",
                      "identifier": [{"system": "urn:conc", "value": f"org-{round_}"}]})
        lines.append({"resourceType": "Patient", "id": f"conc-p-{round_}", "gender": "female",
                      "managingOrganization": {"reference": f"Organization?identifier=urn:conc|org-{round_}"}})
        for step in "ab":
            lines.append({"resourceType": "Patient", "id": "conc-same", "gender": "male",
                          "name": [{"family": f"Round{round_}{step}"}]})
    path = tmp_path / "Concurrent.ndjson"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    summary = ImportRun(eng, None, batch_size=1).load(expand_paths([path]))
    assert summary.errors == 0 and summary.loaded == len(lines)
    with eng.connect() as conn:
        version, content = conn.execute(text(
            "SELECT v.version, v.content FROM resource r JOIN resource_version v ON v.rid = r.rid"
            " AND v.version = r.version WHERE r.res_type = 'Patient' AND r.res_id = 'conc-same'")).one()
        refs = dict(conn.execute(text(
            "SELECT r.res_id, v.content::jsonb #>> '{managingOrganization,reference}' FROM resource r"
            " JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
            " WHERE r.res_type = 'Patient' AND r.res_id LIKE 'conc-p-%'")).all())
    assert version == 80 and orjson.loads(content)["name"][0]["family"] == "Round39b"
    assert refs == {f"conc-p-{n}": f"Organization/conc-org-{n}" for n in range(40)}


def test_chunks_for_the_parsing_process_are_bounded_in_lines_and_bytes() -> None:
    from fhirlake.jobs.imports import loader

    small = iter([(n, b"x" * 10) for n in range(2500)])
    assert [len(loader._chunk(small)) for _ in range(4)] == [loader.PARSE_CHUNK_LINES] * 2 + [500, 0]
    big = iter([(n, b"x" * (loader.PARSE_CHUNK_BYTES // 3 + 1)) for n in range(7)])
    assert [len(loader._chunk(big)) for _ in range(4)] == [3, 3, 1, 0]
