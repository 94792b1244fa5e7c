"""Incremental refresh equals a full rebuild: random creates/updates/deletes, late committers,
concurrent writers and readers, failed refreshes, changed definitions."""

from __future__ import annotations

import copy
import os
import random
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirlake.store.resources import WriteOp, write_resources
from fhirlake.views.lake import ViewLake
from fhirlake.views.refresh import refresh_views

from .helpers import CATALOG, lake_rows, new_id, store_rows, synthea_resources, write

VIEWS = ["patient", "observation", "observation_component"]
PATIENTS = synthea_resources("Patient", 20)
OBSERVATIONS = synthea_resources("Observation", 300)
TEMPLATES = PATIENTS + OBSERVATIONS


def _mutate(resource: dict, variant: int) -> dict:
    """A changed copy: the fields the catalog views read, so rows really change."""
    out = copy.deepcopy(resource)
    if out["resourceType"] == "Patient":
        out["gender"] = ["male", "female", "other", "unknown"][variant % 4]
        out["birthDate"] = f"19{40 + variant % 60:02d}-0{1 + variant % 9}-1{variant % 10}"
    else:
        out["status"] = ["final", "amended", "preliminary"][variant % 3]
        if "valueQuantity" in out:
            out["valueQuantity"]["value"] = variant + 0.25
        if variant % 5 == 0:
            out.pop("component", None)
    return out


def _assert_lake_matches_store(engine, lake: Path) -> None:  # noqa: ANN001
    for name in VIEWS:
        assert lake_rows(lake, name) == store_rows(engine, name), name


def _full_rebuild_equals(engine, lake: Path) -> None:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as other:
        refresh_views(engine, Path(other), VIEWS, full=True)
        for name in VIEWS:
            assert lake_rows(lake, name) == lake_rows(Path(other), name), name


operation = st.one_of(
    st.tuples(st.just("create"), st.integers(0, len(TEMPLATES) - 1)),
    st.tuples(st.just("update"), st.integers(0, 10_000), st.integers(0, 1000)),
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
    st.tuples(st.just("refresh")),
    st.tuples(st.just("commit")),
)


@pytest.fixture(scope="module")
def seeded_engine():  # noqa: ANN201
    from tests.conftest import drop_database

    from .conftest import fresh_engine

    name, engine = fresh_engine("fl_views_prop")
    write(engine, PATIENTS[:10] + OBSERVATIONS[:120])
    yield engine
    engine.dispose()
    drop_database(name)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(ops=st.lists(operation, min_size=1, max_size=25))
def test_incremental_equals_full_rebuild(seeded_engine, ops) -> None:  # noqa: ANN001
    engine = seeded_engine
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp)
        refresh_views(engine, lake, VIEWS)
        live = {(r["resourceType"], r["id"]): r for r in _current(engine)}
        pending: list[WriteOp] = []
        touched: set[tuple[str, str]] = set()

        def commit() -> None:
            if pending:
                with engine.begin() as conn:
                    write_resources(conn, pending, index=False)
                pending.clear()
                touched.clear()

        for op in ops:
            keys = sorted(k for k in live if k not in touched)
            if op[0] == "create":
                resource = copy.deepcopy(TEMPLATES[op[1]])
                resource["id"] = new_id()
                key = (resource["resourceType"], resource["id"])
                pending.append(WriteOp(*key, resource))
                live[key] = resource
                touched.add(key)
            elif op[0] == "update" and keys:
                key = keys[op[1] % len(keys)]
                live[key] = _mutate(live[key], op[2])
                pending.append(WriteOp(*key, live[key]))
                touched.add(key)
            elif op[0] == "delete" and keys:
                key = keys[op[1] % len(keys)]
                pending.append(WriteOp(*key, None))
                del live[key]
                touched.add(key)
            elif op[0] == "commit":
                commit()
            elif op[0] == "refresh":
                commit()
                refresh_views(engine, lake, VIEWS)
        commit()
        results = refresh_views(engine, lake, VIEWS)
        assert all(r.mode in ("incremental", "unchanged") for r in results)
        _assert_lake_matches_store(engine, lake)
        _full_rebuild_equals(engine, lake)


def _current(engine) -> list[dict]:  # noqa: ANN001
    import orjson
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT v.content FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
            " WHERE NOT r.deleted")).scalars().all()
    return [orjson.loads(c) for c in rows]


def test_several_versions_between_refreshes_end_in_the_newest(seeded_engine, tmp_path) -> None:  # noqa: ANN001
    """An incremental refresh reads what changed from the versions written since its watermark:
    update-then-delete, delete-then-create again and update-twice must all end in the newest."""
    engine = seeded_engine
    refresh_views(engine, tmp_path, VIEWS)
    patients = [copy.deepcopy(p) for p in PATIENTS[12:15]]
    for p in patients:
        p["id"] = new_id()
    write(engine, patients)
    refresh_views(engine, tmp_path, VIEWS)
    gone, back, twice = patients
    steps = [[WriteOp("Patient", gone["id"], _mutate(gone, 1))], [WriteOp("Patient", gone["id"], None)],
             [WriteOp("Patient", back["id"], None)], [WriteOp("Patient", back["id"], _mutate(back, 2))],
             [WriteOp("Patient", twice["id"], _mutate(twice, 3))], [WriteOp("Patient", twice["id"], _mutate(twice, 6))]]
    for ops in steps:  # one transaction each: several versions of one resource since the watermark
        with engine.begin() as conn:
            write_resources(conn, ops, index=False)
    results = refresh_views(engine, tmp_path, VIEWS)
    assert {r.name: r.mode for r in results}["patient"] == "incremental"
    ids = {row["id"] for row in lake_rows(tmp_path, "patient")}
    assert gone["id"] not in ids and back["id"] in ids and twice["id"] in ids
    _assert_lake_matches_store(engine, tmp_path)
    _full_rebuild_equals(engine, tmp_path)


def test_late_committer_with_smaller_sequence_is_not_missed(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    write(engine, PATIENTS[:3])
    refresh_views(engine, tmp_path, ["patient"])
    late = copy.deepcopy(PATIENTS[5])
    early = copy.deepcopy(PATIENTS[6])
    with engine.connect() as slow:
        tx = slow.begin()
        write_resources(slow, [WriteOp("Patient", late["id"], late)], index=False)  # takes its seq first
        write(engine, [early])  # a later seq, committed first
        first = refresh_views(engine, tmp_path, ["patient"])[0]
        assert first.mode == "incremental"
        ids = {r["id"] for r in lake_rows(tmp_path, "patient")}
        assert early["id"] in ids and late["id"] not in ids
        tx.commit()
    refresh_views(engine, tmp_path, ["patient"])
    ids = {r["id"] for r in lake_rows(tmp_path, "patient")}
    assert late["id"] in ids and early["id"] in ids
    assert lake_rows(tmp_path, "patient") == store_rows(engine, "patient")


def test_concurrent_writers_and_readers(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    write(engine, PATIENTS[:10] + OBSERVATIONS[:50])
    refresh_views(engine, tmp_path, VIEWS)
    stop = threading.Event()
    errors: list[BaseException] = []
    lake = ViewLake.for_zone(tmp_path)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[dict] = []
        try:
            for step in range(40):
                with engine.begin() as conn:
                    ops = []
                    template = copy.deepcopy(rng.choice(TEMPLATES))
                    template["id"] = new_id()
                    mine.append(template)
                    ops.append(WriteOp(template["resourceType"], template["id"], template))
                    if len(mine) > 3 and rng.random() < 0.5:
                        victim = mine.pop(rng.randrange(len(mine) - 1))
                        ops.append(WriteOp(victim["resourceType"], victim["id"], None))
                    elif len(mine) > 2:
                        changed = _mutate(mine[0], step)
                        mine[0] = changed
                        ops.append(WriteOp(changed["resourceType"], changed["id"], changed))
                    write_resources(conn, ops, index=False)
                    if rng.random() < 0.3:
                        stop.wait(0.01)  # hold the transaction open while others commit
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        # Every read sees one whole generation: never a resource twice, never a missing file.
        try:
            while not stop.is_set():
                ids = [r["id"] for r in lake_rows(tmp_path, "patient")]
                assert len(ids) == len(set(ids))
                meta = lake.metadata("patient")
                assert meta is not None and meta.row_count >= 0
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2)]
    read_thread = threading.Thread(target=reader)
    for t in [*writers, read_thread]:
        t.start()
    refreshes = 0
    try:
        while any(t.is_alive() for t in writers):
            refresh_views(engine, tmp_path, VIEWS)
            refreshes += 1
    finally:
        stop.set()  # a failing refresh must not leave the reader looping (pytest would never exit)
        read_thread.join(timeout=60)
    assert not errors, errors
    assert refreshes >= 2
    refresh_views(engine, tmp_path, VIEWS)
    _assert_lake_matches_store(engine, tmp_path)
    _full_rebuild_equals(engine, tmp_path)


def test_failed_refresh_keeps_the_published_generation(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    write(engine, PATIENTS[:5])
    refresh_views(engine, tmp_path, ["patient"])
    before = lake_rows(tmp_path, "patient")
    lake = ViewLake.for_zone(tmp_path)
    generation = lake.metadata("patient").generation
    write(engine, [_mutate(PATIENTS[0], 3)])

    def broken(_resource: dict) -> dict:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        refresh_views(engine, tmp_path, ["patient"], deid_profile=None, deidentify=broken)
    assert lake.metadata("patient").generation == generation
    assert lake_rows(tmp_path, "patient") == before
    store = tmp_path / "views" / "_store" / "patient"
    assert sorted(p.name for p in store.iterdir()) == sorted(["current", generation])
    # The next refresh still sees the change (the watermark did not move).
    result = refresh_views(engine, tmp_path, ["patient"])[0]
    assert result.mode == "incremental" and result.resources == 1
    assert lake_rows(tmp_path, "patient") == store_rows(engine, "patient")


def test_changed_definition_rebuilds_in_full(empty_engine, tmp_path) -> None:  # noqa: ANN001
    engine = empty_engine
    write(engine, PATIENTS[:5])
    refresh_views(engine, tmp_path, ["patient"])
    assert refresh_views(engine, tmp_path, ["patient"])[0].mode == "unchanged"
    changed = copy.deepcopy(CATALOG)
    changed["patient"]["select"][0]["column"].append({"name": "active", "path": "active", "type": "boolean"})
    result = refresh_views(engine, tmp_path, ["patient"], catalog=changed)[0]
    assert result.mode == "full" and result.rows == 5
    table_columns = set(lake_rows(tmp_path, "patient")[0])
    assert "active" in table_columns
    assert refresh_views(engine, tmp_path, ["patient"], full=True)[0].mode == "full"


def test_old_generations_are_pruned_and_reader_folder_holds_only_parquet(empty_engine, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import polars as pl

    from fhirlake.views import lake as lake_module

    monkeypatch.setattr(lake_module, "GRACE_SECONDS", 0.0)  # no reader here: prune at once
    engine = empty_engine
    write(engine, PATIENTS[:4])
    for i in range(4):
        write(engine, [_mutate(PATIENTS[i], i + 1)])
        refresh_views(engine, tmp_path, ["patient"])
    store = tmp_path / "views" / "_store" / "patient"
    assert len([p for p in store.iterdir() if p.name != "current"]) == 2  # current and previous
    folder = tmp_path / "views" / "patient"
    assert all(p.suffix == ".parquet" for p in folder.iterdir())
    frame = pl.read_parquet(folder)
    assert sorted(frame["gender"].to_list()) == sorted(r["gender"] for r in store_rows(engine, "patient"))
    assert os.path.islink(folder)


def test_empty_view_publishes_its_schema(empty_engine, tmp_path) -> None:  # noqa: ANN001
    import polars as pl

    result = refresh_views(empty_engine, tmp_path, ["condition"])[0]
    assert result.rows == 0
    frame = pl.read_parquet(tmp_path / "views" / "condition")
    assert frame.height == 0 and frame.columns == [c["name"] for c in CATALOG["condition"]["select"][0]["column"]]


def test_fragmented_parts_are_compacted(empty_engine, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from fhirlake.views import materialize

    monkeypatch.setattr(materialize, "MAX_PARTS", 3)
    engine = empty_engine
    write(engine, PATIENTS[:2])
    refresh_views(engine, tmp_path, ["patient"])
    lake = ViewLake.for_zone(tmp_path)
    counts = []
    for i in range(2, 8):
        write(engine, [PATIENTS[i]])
        refresh_views(engine, tmp_path, ["patient"])
        counts.append(len(lake.metadata("patient").parts))
    assert max(counts) <= 3 and 1 in counts  # grew by one part per refresh, then merged
    assert lake_rows(tmp_path, "patient") == store_rows(engine, "patient")
