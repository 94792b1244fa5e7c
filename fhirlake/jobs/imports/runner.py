"""The ``import`` job: load the inputs of a ``POST /$import`` and publish the error NDJSON."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fhirlake.jobs.imports.loader import ImportRun, Source, expand_paths
from fhirlake.jobs.imports.request import is_url
from fhirlake.jobs.registry import job_handler
from fhirlake.lake.fs import delete_tree
from fhirlake.lake.publish import atomic_output
from fhirlake.store.resources import format_instant


def _sources(inputs: list[dict]) -> list[Source]:
    sources: list[Source] = []
    for item in inputs:
        location = item["location"]
        if is_url(location):
            # named without its query: signed URLs carry credentials there, and names reach reports
            path_part = location.split("#", 1)[0].split("?", 1)[0]
            kind = "bundle" if path_part.endswith((".json", ".json.gz")) else "ndjson"
            sources.append(Source(path_part, kind, url=location))
        else:
            sources.extend(expand_paths([Path(location)]))
    return sources


@job_handler("import")
def import_job(ctx) -> dict:  # noqa: ANN001 - JobContext
    from fhirlake.jobs.export.runner import attempt_folder

    folder = attempt_folder(ctx.settings, ctx.job.id, ctx.attempt)
    sources = _sources(ctx.job.params["inputs"])
    total = sum(s.size for s in sources)
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        ctx.progress(phase="importing", done=done, total=total, unit="bytes")

    started = format_instant(datetime.now(UTC))
    try:
        with atomic_output(folder, "errors.ndjson") as sink:
            run = ImportRun(ctx.engine, sink, progress_bytes=progress, check=ctx.check)
            summary = run.load(sources)
    except BaseException:
        delete_tree(folder)
        raise
    error = [{"type": "OperationOutcome", "name": "errors.ndjson", "count": summary.errors}] if summary.errors else []
    output = [{"type": t, "name": None, "count": n} for t, n in sorted(summary.per_type.items())]
    return {"transaction_time": started, "folder": f"a{ctx.attempt}", "output": output, "error": error,
            "inputs": summary.inputs, "loaded": summary.loaded, "unchanged": summary.unchanged}
