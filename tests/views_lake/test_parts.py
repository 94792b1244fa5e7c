"""Part files after incremental rewrites: plain Parquet any reader opens with the view's schema,
one row group each, repeated strings dictionary-encoded and unique ones plain; stale dictionaries rebuilt; older layouts rebuilt in full."""

from __future__ import annotations

import copy

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from fhirlake.views.lake import KEYS, ViewLake
from fhirlake.views.materialize import KeyedView, own_key_column
from fhirlake.views.parts import drop_stale_dictionaries, write_data
from fhirlake.views.refresh import refresh_views

from .helpers import CATALOG, lake_rows, sort_rows, store_rows, synthea_resources, write

OBSERVATIONS = synthea_resources("Observation", 400)


def _changed(resource: dict, i: int) -> dict:
    out = copy.deepcopy(resource)
    out["status"] = ["amended", "preliminary"][i % 2]
    return out


def test_rewritten_parts_are_plain_parquet_with_the_view_schema(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    write(engine, OBSERVATIONS)
    refresh_views(engine, tmp_path, ["observation"])
    for round_ in range(3):  # each round rewrites parts and adds one with the new rows
        write(engine, [_changed(r, round_) for r in OBSERVATIONS[round_:60:7]],
              deletes=[("Observation", r["id"]) for r in OBSERVATIONS[300 + 2 * round_:302 + 2 * round_]])
        result = refresh_views(engine, tmp_path, ["observation"])[0]
        assert result.mode == "incremental" and result.removed > 0

    expected = store_rows(engine, "observation")
    assert lake_rows(tmp_path, "observation") == expected
    schema = KeyedView(CATALOG["observation"]).schema
    files = ViewLake.for_zone(tmp_path).data_files("observation")
    assert len(files) >= 3
    for file in files:
        assert pq.read_schema(file).equals(schema, check_metadata=True), file.name  # descriptions kept
        parquet = pq.ParquetFile(file)
        assert parquet.num_row_groups == 1
        group = parquet.metadata.row_group(0)
        dictionary = {group.column(i).path_in_schema: group.column(i).has_dictionary_page
                      for i in range(group.num_columns)}
        assert dictionary["id"] is False  # unique: plain
        if group.num_rows >= 20:  # repeated values: dictionary-encoded, rewritten without decoding
            assert dictionary["status"] and dictionary["code"] and dictionary["code_system"], file.name
            assert dictionary["patient_id"], file.name  # each patient's reference repeats

    folder = tmp_path / "views" / "observation"
    polars_rows = pl.read_parquet(folder).to_dicts()
    duck = duckdb.connect()
    duck_rows = duck.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet')").to_arrow_table().to_pylist()
    assert sort_rows(polars_rows) == expected
    assert sort_rows(duck_rows) == expected


def test_stale_dictionaries_are_rebuilt() -> None:
    values = pa.array([f"value-{i}" for i in range(5000)])
    stale = pa.DictionaryArray.from_arrays(pa.array([3, 4, None], pa.int32()), values)
    fresh = pa.DictionaryArray.from_arrays(pa.array([0, 1, 1], pa.int32()), pa.array(["a", "b"]))
    table = pa.table({"stale": stale, "fresh": fresh, "number": [1, 2, 3]})
    cleaned = drop_stale_dictionaries(table)
    assert cleaned.schema.field("stale").type == pa.string()
    assert pa.types.is_dictionary(cleaned.schema.field("fresh").type)
    assert cleaned.column("stale").to_pylist() == ["value-3", "value-4", None]
    assert cleaned.column("fresh").to_pylist() == ["a", "b", "b"]


def test_a_lake_of_an_older_layout_is_rebuilt_in_full(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    write(engine, OBSERVATIONS[:30])
    refresh_views(engine, tmp_path, ["observation"])
    lake = ViewLake.for_zone(tmp_path)
    meta = lake.metadata("observation")
    assert meta is not None
    meta.layout = 1
    lake.rewrite_metadata("observation", meta)
    write(engine, [_changed(OBSERVATIONS[0], 1)])
    assert refresh_views(engine, tmp_path, ["observation"])[0].mode == "full"
    assert lake_rows(tmp_path, "observation") == store_rows(engine, "observation")


def _dictionary_pages(path) -> dict[str, bool]:  # noqa: ANN001
    group = pq.ParquetFile(path).metadata.row_group(0)
    return {group.column(i).path_in_schema: group.column(i).has_dictionary_page for i in range(group.num_columns)}


def test_new_rows_choose_dictionaries_by_an_exact_count(tmp_path) -> None:  # noqa: ANN001
    # Each of 1,000 patients has 30 rows, in blocks: any evenly spaced sample of a few hundred rows
    # sees nearly all values distinct, yet a dictionary is 30 times smaller than the plain column.
    rows = 30_000
    table = pa.table({
        "id": [f"obs-{i:06d}" for i in range(rows)],
        "patient_id": [f"patient-{i // 30:05d}" for i in range(rows)],
        "half_distinct": [f"v{i // 2 if i % 4 else i}" for i in range(rows)],  # 62.5% distinct: plain
        "empty": pa.nulls(rows, pa.string()),
    })
    path = tmp_path / "part.parquet"
    write_data(table, path, table.schema)
    assert _dictionary_pages(path) == {"id": False, "patient_id": True, "half_distinct": False, "empty": True}
    assert pq.read_table(path).equals(table)


def test_a_rewrite_keeps_the_encoding_chosen_for_its_rows(tmp_path) -> None:  # noqa: ANN001
    # After a rewrite drops most rows, the kept ones may look distinct; the choice made when they
    # were first written stays (a rewrite does not count again), and a rebuilt stale dictionary is
    # still a dictionary.
    values = pa.array([f"value-{i}" for i in range(5000)])
    stale = pa.DictionaryArray.from_arrays(pa.array([3, 4, None], pa.int32()), values)
    table = pa.table({"stale": stale, "distinct_now": ["a", "b", "c"]})
    rewritten = drop_stale_dictionaries(table)
    path = tmp_path / "part.parquet"
    plain = pa.schema([pa.field("stale", pa.string()), pa.field("distinct_now", pa.string())])
    write_data(rewritten, path, plain, dictionary=["stale", "distinct_now"])
    assert _dictionary_pages(path) == {"stale": True, "distinct_now": True}
    assert pq.read_table(path).to_pylist() == [{"stale": "value-3", "distinct_now": "a"},
                                               {"stale": "value-4", "distinct_now": "b"},
                                               {"stale": None, "distinct_now": "c"}]


def _key_files(lake_dir, name: str, zone: str | None = None) -> list[str]:  # noqa: ANN001
    current = ViewLake.for_zone(lake_dir, zone).current_dir(name)
    assert current is not None
    return sorted(p.name for p in (current / KEYS).iterdir())


def test_a_view_with_its_own_key_column_keeps_no_key_files(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    write(engine, OBSERVATIONS)
    refresh_views(engine, tmp_path, ["observation"])
    write(engine, [_changed(r, 1) for r in OBSERVATIONS[:40:3]], deletes=[("Observation", OBSERVATIONS[50]["id"])])
    assert refresh_views(engine, tmp_path, ["observation"])[0].mode == "incremental"
    assert ViewLake.for_zone(tmp_path).metadata("observation").key_column == "id"
    assert _key_files(tmp_path, "observation") == []
    assert lake_rows(tmp_path, "observation") == store_rows(engine, "observation")


# Observation values without the resource's id: rows are tied to resources through key files.
WITHOUT_KEY = {
    "resourceType": "ViewDefinition", "name": "observation_values", "status": "active", "resource": "Observation",
    "select": [
        {"column": [{"name": "code", "path": "code.coding.first().code", "type": "code"}]},
        {"forEach": "component", "column": [
            {"name": "key_of_component", "path": "getResourceKey()", "type": "string"},  # not the resource's
            {"name": "component_code", "path": "code.coding.first().code", "type": "code"}]},
    ],
}


def _lake_without_key(engine, lake_dir, count: int) -> list[dict]:  # noqa: ANN001
    """Observations with components stored and refreshed into the lake of WITHOUT_KEY."""
    with_components = [r for r in synthea_resources("Observation", 3000) if r.get("component")][:count]
    write(engine, with_components)
    refresh_views(engine, lake_dir, catalog={"observation_values": WITHOUT_KEY})
    return with_components


def test_a_view_without_a_key_column_keeps_key_files(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    catalog = {"observation_values": WITHOUT_KEY}
    with_components = _lake_without_key(engine, tmp_path, 120)
    assert ViewLake.for_zone(tmp_path).metadata("observation_values").key_column is None
    changed = []
    for resource in with_components[:30:2]:
        resource = copy.deepcopy(resource)
        resource["component"] = resource["component"][:1]  # fewer rows for these resources
        changed.append(resource)
    write(engine, changed, deletes=[("Observation", with_components[40]["id"])])
    result = refresh_views(engine, tmp_path, catalog=catalog)[0]
    assert result.mode == "incremental" and result.removed > len(changed)
    assert len(_key_files(tmp_path, "observation_values")) == len(ViewLake.for_zone(tmp_path).data_files("observation_values"))
    assert lake_rows(tmp_path, "observation_values") == store_rows(engine, WITHOUT_KEY)


def test_which_column_holds_the_resource_key() -> None:
    schema = KeyedView(CATALOG["observation"]).schema
    assert own_key_column(CATALOG["observation"], schema) == "id"
    assert own_key_column(WITHOUT_KEY, KeyedView(WITHOUT_KEY).schema) is None  # inside forEach
    as_collection = copy.deepcopy(CATALOG["patient"])
    as_collection["select"][0]["column"][0]["collection"] = True
    assert own_key_column(as_collection, KeyedView(as_collection).schema) is None


def test_a_view_with_damaged_parts_is_rebuilt_in_full(empty_engine, tmp_path, caplog) -> None:  # noqa: ANN001
    # After an OS crash a recently published generation may hold empty or short files (parts are
    # not fsynced): the next refresh must not carry their rows over, nor fail on them forever.
    engine = empty_engine
    write(engine, OBSERVATIONS)
    refresh_views(engine, tmp_path, ["observation"])
    lake = ViewLake.for_zone(tmp_path)
    meta = lake.metadata("observation")
    assert all(p.bytes and p.bytes > 0 for p in meta.parts)
    assert lake.damaged_parts("observation", meta) == []
    victim = lake.data_files("observation")[0]
    victim.write_bytes(victim.read_bytes()[: meta.parts[0].bytes // 2])  # cut short: the crash
    assert lake.damaged_parts("observation", meta) == [victim.name]

    write(engine, [_changed(OBSERVATIONS[3], 1)])
    with caplog.at_level("WARNING", logger="fhirlake.views.refresh"):
        result = refresh_views(engine, tmp_path, ["observation"])[0]
    assert result.mode == "full"
    assert "damaged or missing" in caplog.text and OBSERVATIONS[3]["id"] not in caplog.text
    assert lake_rows(tmp_path, "observation") == store_rows(engine, "observation")
    # and the next change is incremental again
    write(engine, [_changed(OBSERVATIONS[4], 0)])
    assert refresh_views(engine, tmp_path, ["observation"])[0].mode == "incremental"
    assert lake_rows(tmp_path, "observation") == store_rows(engine, "observation")


def test_empty_key_files_make_a_full_rebuild(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    catalog = {"observation_values": WITHOUT_KEY}
    with_components = _lake_without_key(engine, tmp_path, 40)
    current = ViewLake.for_zone(tmp_path).current_dir("observation_values")
    for key_file in (current / KEYS).iterdir():
        key_file.write_bytes(b"")
    write(engine, [], deletes=[("Observation", with_components[0]["id"])])
    assert refresh_views(engine, tmp_path, catalog=catalog)[0].mode == "full"
    assert lake_rows(tmp_path, "observation_values") == store_rows(engine, WITHOUT_KEY)
