"""load_folder: the importer with a strict contract (used by the sample-data start)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text

from fhirlake.services.loader import SAMPLE_DIR, LoadError, folder_bytes, iter_ndjson, load_folder
from tests.conftest import fresh_engine


def _count(engine, res_type: str) -> int:  # noqa: ANN001
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM resource WHERE res_type = :t AND NOT deleted"),
                            {"t": res_type}).scalar()


def test_loads_the_sample_with_byte_progress_and_reloads_as_unchanged(tmp_path: Path) -> None:
    folder = tmp_path / "sample"
    folder.mkdir()
    for name in ("Patient.ndjson.gz", "Condition.ndjson.gz"):
        shutil.copy(SAMPLE_DIR / name, folder / name)
    expected = {t: sum(1 for _ in iter_ndjson(folder / f"{t}.ndjson.gz")) for t in ("Patient", "Condition")}
    progressed: list[int] = []
    with fresh_engine("fhirlake_loader") as engine:
        loaded = load_folder(engine, folder, progress_bytes=progressed.append)
        assert loaded == sum(expected.values())
        assert {t: _count(engine, t) for t in expected} == expected
        assert sum(progressed) == folder_bytes(folder)
        assert load_folder(engine, folder) == loaded  # identical resources: counted, not rewritten
        with engine.connect() as conn:
            assert conn.execute(text("SELECT max(version) FROM resource")).scalar() == 1


def test_a_refused_resource_raises_naming_it_and_keeps_the_valid_ones(tmp_path: Path) -> None:
    patients = [orjson.loads(line) for line in gzip.open(SAMPLE_DIR / "Patient.ndjson.gz") if line.strip()][:3]
    bad = {"resourceType": "Patient", "id": "bad-one", "birthDate": "not a date"}
    (tmp_path / "Patient.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in [*patients, bad]) + b"\n")
    with fresh_engine("fhirlake_loader") as engine:
        with pytest.raises(LoadError, match=r"1 resources .* refused; first: .*line 4"):
            load_folder(engine, tmp_path)
        assert _count(engine, "Patient") == 3
