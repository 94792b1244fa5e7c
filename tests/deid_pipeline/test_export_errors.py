"""The export runner with resources the profile cannot process: left out, reported without identifiers."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from fhirlake.deid import Deidentifier, DeidKeys, load_profile
from fhirlake.jobs.export.params import parse_export
from fhirlake.jobs.export.runner import run_export
from tests.deid_pipeline.conftest import TEST_KEY


def _broken(resource_id: str) -> bool:
    return int(hashlib.sha256(resource_id.encode()).hexdigest(), 16) % 7 == 0


class CorruptingEngine(Deidentifier):
    """The real Safe Harbor engine, handed an impossible date for one Observation in seven."""

    def deidentify(self, resource: dict) -> dict | None:
        if resource.get("resourceType") == "Observation" and _broken(resource["id"]):
            resource = {**resource, "effectiveDateTime": "2020-13-45"}
        return super().deidentify(resource)


def _run(engine, folder: Path, params: list[tuple[str, str]]):  # noqa: ANN001, ANN202
    req = parse_export([("_deidentify", "safe-harbor"), ("_type", "Observation"), *params], level="system",
                       request_url="test", base_url="")
    deidentifier = CorruptingEngine(load_profile("safe-harbor"), DeidKeys(TEST_KEY))
    return run_export(engine, req, folder, file_max_resources=1000, deidentifier=deidentifier)


def _stored_observation_ids(engine) -> list[str]:  # noqa: ANN001
    from sqlalchemy import text

    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text(
            "SELECT res_id FROM resource WHERE res_type = 'Observation' AND NOT deleted"))]


@pytest.mark.parametrize("params", [[], [("outputCompression", "gzip")], [("_outputFormat", "parquet")]],
                         ids=["ndjson", "gzip", "parquet"])
def test_failures_are_reported_and_never_written(deid_engine, tmp_path, params) -> None:  # noqa: ANN001
    stored = _stored_observation_ids(deid_engine)
    broken = {i for i in stored if _broken(i)}
    assert 0 < len(broken) < len(stored)
    outcome = _run(deid_engine, tmp_path, params)
    written: list[dict] = []
    for item in outcome.output:
        path = tmp_path / item.name
        if item.name.endswith(".parquet"):
            rows = pq.read_table(path).to_pylist()
            written += [orjson.loads(r["resource"]) for r in rows]
        else:
            data = gzip.decompress(path.read_bytes()) if item.name.endswith(".gz") else path.read_bytes()
            written += [orjson.loads(line) for line in data.splitlines()]
        assert item.count > 0
    assert sum(item.count for item in outcome.output) == len(written) == len(stored) - len(broken)
    # the failed resources are absent: their pseudonyms are not in the output
    engine = Deidentifier(load_profile("safe-harbor"), DeidKeys(TEST_KEY))
    pseudonym = {i: engine.deidentify({"resourceType": "Observation", "id": i})["id"] for i in stored}
    assert {r["id"] for r in written} == {pseudonym[i] for i in stored if i not in broken}
    # one OperationOutcome per failure, naming file and position, never an id
    (error,) = outcome.error
    lines = (tmp_path / error.name).read_bytes().splitlines()
    assert error.count == len(lines) == len(broken)
    issues = [orjson.loads(line)["issue"][0] for line in lines]
    assert all(i["code"] == "processing" and "not a valid calendar date" in i["diagnostics"] for i in issues)
    where = re.compile(r"^Observation(\.\d{3}\.ndjson(\.gz)?|\.parquet): resource \d+ of this file ")
    assert all(where.match(i["diagnostics"]) for i in issues)
    text = b"\n".join(lines).decode()
    assert not any(i in text or pseudonym[i] in text for i in stored)
