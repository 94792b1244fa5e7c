"""Job handlers of the views subsystem (loaded by workers through fhirlake.jobs.registry).

- ``view-refresh``: refresh the catalog views into the lake (the scheduler triggers it every
  ``view_refresh_minutes``; ``jobs/schedule.yaml`` lists it). Params (all optional):
  ``{"names": [...], "full": false, "deid": "safe-harbor"}``.
- ``view-export``: ``$viewdefinition-export``: run each requested view over the store into one file
  per view (Parquet, NDJSON, CSV or JSON) under ``<data-dir>/view-exports/<job>/a<attempt>/``,
  each published atomically. Status and files are served by ``fhirlake.api.view_routes``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import text

from fhirlake.config import Settings
from fhirlake.jobs.registry import job_handler
from fhirlake.lake.publish import atomic_output

from .refresh import refresh_views
from .run import RunRequest, prepare_run
from .stream import limit_rows, stream_rows

log = logging.getLogger("fhirlake.views.jobs")

REFRESH_KIND = "view-refresh"
EXPORT_KIND = "view-export"
EXTENSIONS = {"parquet": "parquet", "ndjson": "ndjson", "csv": "csv", "json": "json"}


def export_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "view-exports"


def export_folder(settings: Settings, job_id: str, attempt: int) -> Path:
    return export_root(settings) / job_id / f"a{attempt}"


@job_handler(REFRESH_KIND)
def refresh_job(ctx) -> dict[str, Any]:  # noqa: ANN001 - JobContext (import cycle)
    params = ctx.job.params or {}
    done = 0

    def progress(n: int, total: int, what: str) -> None:
        nonlocal done
        done += n
        ctx.progress(phase="refreshing", done=done, total=total, type=what)
        ctx.check()  # a cancelled job stops here; the unpublished generation is discarded

    results = refresh_views(ctx.engine, ctx.settings.lake_dir, params.get("names") or None,
                            full=bool(params.get("full")), deid_profile=params.get("deid"), progress=progress)
    removed = prune_exports(ctx.engine, ctx.settings)
    return {
        "views": [{"name": r.name, "zone": r.zone, "mode": r.mode, "rows": r.rows, "resources": r.resources,
                   "seconds": round(r.seconds, 3)} for r in results],
        "export_folders_removed": removed,
    }


def prune_exports(engine, settings: Settings) -> int:  # noqa: ANN001
    """Remove export folders whose job is gone (expired, deleted by retention), failed or cancelled."""
    root = export_root(settings)
    if not root.is_dir():
        return 0
    with engine.connect() as conn:
        keep = {str(r[0]) for r in conn.execute(text(
            "SELECT id FROM job WHERE kind = :k AND status IN ('queued', 'running', 'completed')"), {"k": EXPORT_KIND})}
    removed = 0
    for folder in root.iterdir():
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _counted(batches: Iterable[pa.RecordBatch], counter: list[int]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        counter[0] += batch.num_rows
        yield batch


@job_handler(EXPORT_KIND)
def export_job(ctx) -> dict[str, Any]:  # noqa: ANN001 - JobContext
    params = ctx.job.params
    fmt = params.get("format", "parquet")
    folder = export_folder(ctx.settings, ctx.job.id, ctx.attempt)
    shutil.rmtree(folder, ignore_errors=True)  # an earlier, interrupted attempt of this job
    started = datetime.now(UTC)
    outputs = []
    views = params["views"]
    for index, item in enumerate(views):
        ctx.check()
        ctx.progress(phase="exporting", done=index, total=len(views), type=item["name"])
        request = RunRequest(view_resource=item["definition"], patient=params.get("patient"), group=params.get("group"),
                             since=params.get("since"), format=fmt, header=params.get("header", True))
        with ctx.engine.connect() as conn:
            plan = prepare_run(conn, request)
        file_name = f"{item['name']}.{EXTENSIONS[fmt]}"
        rows = [0]
        with atomic_output(folder, file_name) as out:
            batches = _counted(limit_rows(plan.batches(ctx.engine), None), rows)
            for chunk in stream_rows(batches, fmt, plan.view.schema, plan.header):
                out.write(chunk)
                ctx.check()
        outputs.append({"name": item["name"], "file": file_name, "rows": rows[0]})
    ctx.progress(phase="exporting", done=len(views), total=len(views))
    return {"folder": folder.name, "format": fmt, "output": outputs, "started": started.isoformat(),
            "finished": datetime.now(UTC).isoformat()}
