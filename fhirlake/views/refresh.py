"""Refresh materialized views from the store: full rebuilds and incremental upserts.

    results = refresh_views(engine, settings.lake_dir)                 # every catalog view
    refresh_views(engine, lake_dir, ["patient"], full=True)            # rebuild one
    refresh_views(engine, lake_dir, deid_profile="safe-harbor")        # the de-identified zone

A view is rebuilt in full when it was never materialized, when its ViewDefinition changed (hash),
or when asked; otherwise only the resources changed since its watermark are re-evaluated: their
old rows are dropped and their current rows (if they still exist) added. All views of one run
read one snapshot, each resource type once for all the views over it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from sqlalchemy import Engine, text

from fhirlake.gc_pause import gc_paused

from .catalog import definition_hash, select_views
from .lake import LAYOUT, ViewLake, ViewMetadata, now_iso
from .materialize import Deidentify, GenerationBuilder, KeyedView
from .store_source import Snapshot, lock_key, snapshot, view_locks

log = logging.getLogger("fhirlake.views.refresh")

REWRITE_THREADS = 2  # part rewrites of an incremental refresh running beside the evaluation

# progress(resources_done_since_last_call, total_resources_of_this_run, what)
ProgressFn = Callable[[int, int, str], None]


@dataclass
class RefreshResult:
    name: str
    zone: str
    mode: str  # full | incremental | unchanged
    rows: int
    resources: int  # resources evaluated
    removed: int  # rows dropped (updated or deleted resources)
    watermark: str
    seconds: float


@dataclass
class _Plan:
    name: str
    definition: dict
    keyed: KeyedView
    hash: str
    previous: ViewMetadata | None
    full: bool


def _deidentifier(profile: str) -> Deidentify:
    from fhirlake.deid import Deidentifier, DeidKeys, load_profile

    return Deidentifier(load_profile(profile), DeidKeys.from_env()).deidentify


def refresh_views(engine: Engine, lake_dir: Path, names: Iterable[str] | None = None, *, full: bool = False,
                  deid_profile: str | None = None, deidentify: Deidentify | None = None,
                  catalog: dict[str, dict] | None = None, progress: ProgressFn | None = None) -> list[RefreshResult]:
    """Refresh catalog views (all when ``names`` is empty) into the lake; returns one result per view.

    ``deid_profile`` writes the de-identified zone ``<lake>/deid/<profile>/views`` and applies that
    profile to every resource before evaluation (``deidentify`` overrides the callable, for tests).
    """
    with gc_paused():
        return _refresh(engine, lake_dir, names, full, deid_profile, deidentify, catalog, progress)


def _refresh(engine: Engine, lake_dir: Path, names: Iterable[str] | None, full: bool, deid_profile: str | None,
             deidentify: Deidentify | None, catalog: dict[str, dict] | None,
             progress: ProgressFn | None) -> list[RefreshResult]:
    views = select_views(list(names or []), catalog)
    lake = ViewLake.for_zone(lake_dir, deid_profile)
    if deid_profile and deidentify is None:
        deidentify = _deidentifier(deid_profile)
    plans = []
    for name, definition in views.items():
        keyed = KeyedView(definition)
        plans.append(_Plan(name, definition, keyed, definition_hash(definition), None, full))
    results: list[RefreshResult] = []
    with view_locks(engine, [lock_key(lake.zone, p.name) for p in plans]), snapshot(engine) as snap:
        # The metadata is read under the locks: no other refresh of these views is in flight.
        for plan in plans:
            plan.previous = lake.metadata(plan.name)
            if (plan.previous is None or plan.previous.definition_hash != plan.hash
                    or plan.previous.watermark is None or plan.previous.layout != LAYOUT
                    or plan.previous.key_column != _key_column(plan, deidentify)):
                plan.full = True
            elif damaged := lake.damaged_parts(plan.name, plan.previous):
                log.warning("view %s: %d part file(s) damaged or missing (e.g. %s); rebuilding it in full",
                            plan.name, len(damaged), damaged[0])
                plan.full = True
        by_type: dict[str, list[_Plan]] = {}
        for plan in plans:
            by_type.setdefault(plan.keyed.resource_type, []).append(plan)
        total = sum(snap.count_live(t) for t, ps in by_type.items() if any(p.full for p in ps))
        report = progress or (lambda _n, _t, _w: None)
        report(0, total, "starting")
        for res_type, type_plans in by_type.items():
            fulls = [p for p in type_plans if p.full]
            if fulls:
                results += _full(lake, snap, res_type, fulls, deidentify, lambda n, t=res_type: report(n, total, t))
        results += _incremental_all(lake, snap, [p for p in plans if not p.full], deidentify)
    _record_state(engine, results, {p.name: p.hash for p in plans})
    return results


def _key_column(plan: _Plan, deidentify: Deidentify | None) -> str | None:
    """The view's own key column, except in a de-identified zone: rows there are keyed by the
    original resource id, which no column shows."""
    return None if deidentify is not None else plan.keyed.key_column


def _evaluate(keyed: KeyedView, lines: list[bytes], deidentify: Deidentify | None):  # noqa: ANN202
    if deidentify is not None:
        return keyed.evaluate_deidentified(lines, deidentify)
    return keyed.evaluate_lines(lines, batch_size=max(len(lines), 1))  # one vectorized pass per fetched batch


def _meta(lake: ViewLake, plan: _Plan, watermark: str, mode: str) -> ViewMetadata:
    return ViewMetadata(
        name=plan.name, zone=lake.zone, resource_type=plan.keyed.resource_type, definition_hash=plan.hash,
        watermark=watermark, row_count=0, refreshed_at=now_iso(), generation="",
        previous_generation=plan.previous.generation if plan.previous else None, mode=mode,
    )


def _full(lake: ViewLake, snap: Snapshot, res_type: str, plans: list[_Plan], deidentify: Deidentify | None,
          advance: Callable[[int], None]) -> list[RefreshResult]:
    """Rebuild every view in ``plans`` (all over ``res_type``) from one pass over its resources."""
    started = time.perf_counter()
    builders = [GenerationBuilder(lake, p.name, p.keyed.schema, _key_column(p, deidentify)) for p in plans]
    evaluated = 0
    try:
        for lines in snap.stream_current(res_type):
            for plan, builder in zip(plans, builders, strict=True):
                for keys, batch in _evaluate(plan.keyed, lines, deidentify):
                    builder.add(keys, batch)
            evaluated += len(lines)
            advance(len(lines))
        results = []
        for plan, builder in zip(plans, builders, strict=True):
            meta = builder.publish(_meta(lake, plan, snap.watermark, "full"))
            results.append(RefreshResult(plan.name, lake.zone, "full", meta.row_count, evaluated, 0, snap.watermark,
                                         time.perf_counter() - started))
        return results
    except BaseException:
        for builder in builders:
            builder.abort()
        raise


def _incremental_all(lake: ViewLake, snap: Snapshot, plans: list[_Plan],
                     deidentify: Deidentify | None) -> list[RefreshResult]:
    """Upsert the changes since each view's watermark into a new generation of it.

    Per watermark (usually one for all views), the keys of the changed resources are read first
    (one small query); rewriting the previous parts without the old rows of those keys starts at
    once on ``REWRITE_THREADS`` helper threads (pyarrow, outside the GIL), largest view first, while
    this thread reads the changed contents (one query) and evaluates them (Python).
    """
    started = time.perf_counter()
    results: list[RefreshResult] = []
    rewrites: list[tuple[_Plan, GenerationBuilder, Future[int]]] = []  # in the order they were started
    evaluated: dict[str, int] = {}
    by_since: dict[str, list[_Plan]] = {}
    for plan in plans:
        by_since.setdefault(plan.previous.watermark, []).append(plan)  # type: ignore[union-attr, arg-type]
    with ThreadPoolExecutor(max_workers=REWRITE_THREADS, thread_name_prefix="view-rewrite") as rewriter:
        try:
            for since, group in by_since.items():
                keys = snap.changed_keys(sorted({p.keyed.resource_type for p in group}), since)
                started_here = []
                for plan in sorted(group, key=lambda p: -p.previous.data_bytes):  # type: ignore[union-attr]
                    removed = keys.removed[plan.keyed.resource_type]
                    if not removed:
                        results.append(_unchanged(lake, snap, plan, started))
                        continue
                    builder = GenerationBuilder(lake, plan.name, plan.keyed.schema, _key_column(plan, deidentify))
                    previous_dir = lake.current_dir(plan.name)
                    assert previous_dir is not None and plan.previous is not None
                    carried = rewriter.submit(builder.carry_over, previous_dir, plan.previous.parts,
                                              pa.array(removed, pa.string()))
                    started_here.append((plan, builder))
                    rewrites.append((plan, builder, carried))
                lines = snap.live_contents(keys)
                for plan, builder in started_here:
                    live = lines[plan.keyed.resource_type]
                    for batch_keys, batch in _evaluate(plan.keyed, live, deidentify) if live else ():
                        builder.add(batch_keys, batch)
                    evaluated[plan.name] = len(live)
            for plan, builder, carried in rewrites:
                removed_rows = carried.result()
                builder.compact_if_fragmented()
                meta = builder.publish(_meta(lake, plan, snap.watermark, "incremental"))
                results.append(RefreshResult(plan.name, lake.zone, "incremental", meta.row_count, evaluated[plan.name],
                                             removed_rows, snap.watermark, time.perf_counter() - started))
        except BaseException:
            for plan, builder, carried in rewrites:
                carried.cancel()
                wait([carried])  # the builder's folder is removed only once nothing writes into it
                if builder.dir.exists() and not _is_published(lake, plan.name, builder):
                    builder.abort()
            raise
    return results


def _is_published(lake: ViewLake, name: str, builder: GenerationBuilder) -> bool:
    current = lake.current_dir(name)
    return current is not None and current.name == builder.dir.name


def _unchanged(lake: ViewLake, snap: Snapshot, plan: _Plan, started: float) -> RefreshResult:
    previous = plan.previous
    assert previous is not None
    previous.watermark = snap.watermark
    previous.refreshed_at = now_iso()
    lake.rewrite_metadata(plan.name, previous)
    return RefreshResult(plan.name, lake.zone, "unchanged", previous.row_count, 0, 0, snap.watermark,
                         time.perf_counter() - started)


def _record_state(engine: Engine, results: list[RefreshResult], hashes: dict[str, str]) -> None:
    """Mirror each view's state into ``view_state`` (for monitoring; the lake's metadata is the truth)."""
    if not results:
        return
    with engine.begin() as conn:
        for r in results:
            conn.execute(
                text(
                    "INSERT INTO view_state (name, zone, definition_hash, watermark, row_count, refreshed_at)"
                    " VALUES (:n, :z, :h, :w, :c, now()) ON CONFLICT (name, zone) DO UPDATE SET"
                    " definition_hash = EXCLUDED.definition_hash, watermark = EXCLUDED.watermark,"
                    " row_count = EXCLUDED.row_count, refreshed_at = EXCLUDED.refreshed_at"
                ),
                {"n": r.name, "z": r.zone, "h": hashes[r.name], "w": r.watermark, "c": r.rows},
            )
