"""The catalog materialized from the 100-patient Synthea set, checked against values computed
independently from the raw NDJSON (plain dict access), and the package copy of the catalog."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import orjson
import polars as pl

from fhirlake.views.catalog import PACKAGE_CATALOG, load_catalog
from fhirlake.views.lake import ViewLake
from fhirlake.views.sql import connect_lake

from .helpers import synthea_resources

REPO = Path(__file__).resolve().parents[2]


def _ref_id(reference: str) -> str:
    return reference.split("/")[-1].removeprefix("urn:uuid:")


def test_package_catalog_is_the_repository_catalog() -> None:
    repo = {p.name: orjson.loads(p.read_bytes()) for p in (REPO / "views").glob("*.json")}
    package = {p.name: orjson.loads(p.read_bytes()) for p in PACKAGE_CATALOG.glob("*.json")}
    assert package == repo, "copy views/*.json to fhirlake/resources/views/ (the runtime reads the package copy)"
    assert len(load_catalog()) == len(repo)


def test_every_view_is_materialized_with_its_declared_schema(synthea_lake: Path) -> None:
    lake = ViewLake.for_zone(synthea_lake)
    for name, definition in load_catalog().items():
        meta = lake.metadata(name)
        assert meta is not None and meta.resource_type == definition["resource"]
        frame = pl.read_parquet(lake.view_dir(name))
        assert frame.height == meta.row_count
        declared = [c["name"] for s in definition["select"] for c in s.get("column", [])]
        assert set(declared) <= set(frame.columns)


def test_patients(synthea_lake: Path) -> None:
    patients = synthea_resources("Patient")
    frame = pl.read_parquet(synthea_lake / "views" / "patient")
    assert sorted(frame["id"].to_list()) == sorted(p["id"] for p in patients)
    assert Counter(frame["gender"].to_list()) == Counter(p.get("gender") for p in patients)
    births = dict(zip(frame["id"].to_list(), frame["birth_date"].to_list(), strict=True))
    assert births == {p["id"]: p.get("birthDate") for p in patients}
    official = {p["id"]: next((n.get("family") for n in p.get("name", []) if n.get("use") == "official"), None)
                for p in patients}
    assert dict(zip(frame["id"].to_list(), frame["family_name"].to_list(), strict=True)) == official


def test_observations(synthea_lake: Path) -> None:
    observations = synthea_resources("Observation")
    frame = pl.read_parquet(synthea_lake / "views" / "observation")
    assert frame.height == len(observations)
    with_quantity = {o["id"]: o["valueQuantity"] for o in observations if "valueQuantity" in o}
    rows = frame.filter(pl.col("value_quantity").is_not_null())
    assert set(rows["id"].to_list()) == set(with_quantity)
    for row in rows.iter_rows(named=True):
        quantity = with_quantity[row["id"]]
        assert Decimal(row["value_quantity"]) == Decimal(str(quantity["value"]))
        assert row["value_unit"] == quantity.get("unit")
    by_patient = Counter(_ref_id(o["subject"]["reference"]) for o in observations)
    assert Counter(frame["patient_id"].to_list()) == by_patient
    components = sum(len(o.get("component", [])) for o in observations)
    assert pl.read_parquet(synthea_lake / "views" / "observation_component").height == components


def test_joins_across_views_with_sql(synthea_lake: Path) -> None:
    con = connect_lake(synthea_lake)
    encounters = synthea_resources("Encounter")
    got = dict(con.sql("SELECT class_code, count(*) FROM encounter GROUP BY 1").fetchall())
    assert got == dict(Counter(e["class"]["code"] for e in encounters))
    gender = {p["id"]: p["gender"] for p in synthea_resources("Patient")}
    conditions = synthea_resources("Condition")
    joined = dict(con.sql(
        "SELECT p.gender, count(*) FROM condition c JOIN patient p ON p.id = c.patient_id GROUP BY 1").fetchall())
    assert joined == dict(Counter(gender[_ref_id(c["subject"]["reference"])] for c in conditions))
    eobs = synthea_resources("ExplanationOfBenefit")
    assert con.sql("SELECT count(*) FROM explanation_of_benefit").fetchall()[0][0] >= len(eobs)
