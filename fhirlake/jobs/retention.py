"""The ``retention`` job: delete bulk output past its expiry, and the job rows that described it.

Also removes the folders of cancelled and failed jobs, and of jobs whose rows are gone.
"""

from __future__ import annotations

from pyarrow import fs as pafs
from sqlalchemy import Engine, text

from fhirlake.config import Settings
from fhirlake.jobs.registry import job_handler
from fhirlake.lake.fs import join, resolve

BULK_KINDS = ("export", "import")


def apply_retention(engine: Engine, settings: Settings) -> dict:
    with engine.begin() as conn:
        expired = [str(r[0]) for r in conn.execute(text(
            "DELETE FROM job WHERE (status = 'completed' AND expires_at < now())"
            " OR (status IN ('cancelled', 'failed') AND finished_at < now() - make_interval(hours => :h))"
            " RETURNING id"), {"h": settings.export_retention_hours})]
        # Folders of cancelled/failed jobs go at once; their rows stay a while for inspection.
        keep = {str(r[0]) for r in conn.execute(text(
            "SELECT id FROM job WHERE kind = ANY(:kinds) AND status IN ('queued', 'running', 'completed')"),
            {"kinds": list(BULK_KINDS)})}
    filesystem, base = resolve(settings.bulk_dir)
    removed = 0
    if filesystem.get_file_info(base).type == pafs.FileType.Directory:
        for info in filesystem.get_file_info(pafs.FileSelector(base)):
            if info.type == pafs.FileType.Directory and info.base_name not in keep:
                filesystem.delete_dir(join(base, info.base_name))
                removed += 1
    return {"expired_jobs": len(expired), "folders_removed": removed}


@job_handler("retention")
def retention_job(ctx) -> dict:  # noqa: ANN001 - JobContext
    return apply_retention(ctx.engine, ctx.settings)
