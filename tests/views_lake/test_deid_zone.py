"""The de-identified zone: `fhirlake views refresh --deid safe-harbor` into <lake>/deid/safe-harbor/views."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhirlake.cli.main import cli
from fhirlake.views.refresh import refresh_views

from .helpers import lake_rows, synthea_resources, write

KEY = "views-lake-test-secret-0123456789"
VIEWS = ["patient", "observation"]


@pytest.fixture()
def deid_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FHIRLAKE_DEID_KEY", KEY)
    return KEY


def test_safe_harbor_zone_hides_identifiers_and_keeps_joins(empty_engine, tmp_path: Path, deid_key: str) -> None:  # noqa: ANN001
    patients = synthea_resources("Patient", 8)
    ids = {p["id"] for p in patients}
    observations = [o for o in synthea_resources("Observation")
                    if o["subject"]["reference"].split("/")[-1] in ids][:60]
    write(empty_engine, patients + observations)
    results = refresh_views(empty_engine, tmp_path, VIEWS, deid_profile="safe-harbor")
    assert {r.zone for r in results} == {"safe-harbor"}
    assert (tmp_path / "deid" / "safe-harbor" / "views" / "patient").is_dir()
    assert not (tmp_path / "views").exists()  # the identified zone was not written

    deid_patients = lake_rows(tmp_path, "patient", "safe-harbor")
    assert len(deid_patients) == len(patients)
    assert not ({p["id"] for p in deid_patients} & ids)  # ids are pseudonyms
    assert all(p["family_name"] is None and not p["given_names"] for p in deid_patients)
    assert all(p["birth_date"] is None or len(p["birth_date"]) == 4 for p in deid_patients)  # year only
    deid_observations = lake_rows(tmp_path, "observation", "safe-harbor")
    assert len(deid_observations) == len(observations)
    # the same key gives the same pseudonyms: observations join to their patients
    assert {o["patient_id"] for o in deid_observations} <= {p["id"] for p in deid_patients}

    # incremental refresh of the zone: an update replaces the patient's row, a delete removes it
    changed = copy.deepcopy(patients[0])
    changed["gender"] = "other"
    write(empty_engine, [changed], deletes=[("Patient", patients[1]["id"])])
    result = refresh_views(empty_engine, tmp_path, ["patient"], deid_profile="safe-harbor")[0]
    assert result.mode == "incremental" and result.resources == 1 and result.removed == 2
    after = lake_rows(tmp_path, "patient", "safe-harbor")
    assert len(after) == len(patients) - 1 and sum(p["gender"] == "other" for p in after) == 1
    with_full = tmp_path / "again"
    refresh_views(empty_engine, with_full, ["patient"], deid_profile="safe-harbor", full=True)
    assert lake_rows(with_full, "patient", "safe-harbor") == after


def test_cli_refresh_deid_without_a_key_is_a_clear_error(empty_engine, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("FHIRLAKE_DEID_KEY", raising=False)
    monkeypatch.delenv("FHIRLAKE_DEID_KEY_FILE", raising=False)
    url = empty_engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["--database-url", url, "--data-dir", str(tmp_path), "views", "refresh",
                                      "patient", "--deid", "safe-harbor"])
    assert result.exit_code != 0 and "FHIRLAKE_DEID_KEY" in result.output and "Traceback" not in result.output
    unknown = CliRunner().invoke(cli, ["--database-url", url, "--data-dir", str(tmp_path), "views", "refresh",
                                       "patient", "--deid", "no-such-profile"], env={"FHIRLAKE_DEID_KEY": KEY})
    assert unknown.exit_code != 0 and "no-such-profile" in unknown.output and "Traceback" not in unknown.output
