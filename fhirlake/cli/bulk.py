"""CLI: ``fhirlake export``, ``fhirlake import``, ``fhirlake worker``, ``fhirlake scheduler``."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from fhirlake.config import Settings


def _settings(ctx: click.Context) -> Settings:
    root = ctx.find_root()
    return root.obj


def _engine(ctx: click.Context):  # noqa: ANN202
    from fhirlake.server.database import open_database

    engine, _url = open_database(_settings(ctx))
    return engine


@click.command("worker")
@click.option("--threads", default=None, type=int, help="Jobs run at once by this process (default FHIRLAKE_WORKER_THREADS).")
@click.option("--kind", "kinds", multiple=True, help="Only claim jobs of these kinds (default: every known kind).")
@click.pass_context
def worker(ctx: click.Context, threads: int | None, kinds: tuple[str, ...]) -> None:
    """Run jobs from the job table until stopped (SIGTERM hands running jobs back to the queue)."""
    from fhirlake.jobs.worker import Worker, install_signal_handlers

    settings = _settings(ctx)
    engine = _engine(ctx)
    w = Worker(engine, settings, list(kinds) or None)
    install_signal_handlers(w)
    w.run_forever(threads or settings.worker_threads)


@click.command("scheduler")
@click.option("--schedule", "schedule_path", type=click.Path(path_type=Path), default=None,
              help="Schedule file (default FHIRLAKE_SCHEDULE, else jobs/schedule.yaml when present, else built-in).")
@click.pass_context
def scheduler(ctx: click.Context, schedule_path: Path | None) -> None:
    """Trigger periodic jobs (retention, view refresh); only one scheduler in a cluster is active."""
    from fhirlake.jobs.scheduler import run_scheduler

    run_scheduler(_engine(ctx), _settings(ctx), schedule_path)


@click.command("export")
@click.option("--type", "types", multiple=True, help="Resource type(s) to export (repeat or comma-separate).")
@click.option("--since", default=None, help="Only resources changed at or after this instant.")
@click.option("--until", default=None, help="Only resources changed at or before this instant.")
@click.option("--type-filter", "type_filters", multiple=True, help="A FHIR search like Observation?status=final.")
@click.option("--format", "output_format", default="ndjson", show_default=True, help="ndjson or parquet.")
@click.option("--gzip", is_flag=True, help="Write .ndjson.gz files.")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.pass_context
def export(ctx: click.Context, types: tuple[str, ...], since: str | None, until: str | None,
           type_filters: tuple[str, ...], output_format: str, gzip: bool, out_dir: Path) -> None:
    """Export a consistent snapshot of the database to OUT_DIR (one file per type, split by size)."""
    from fhirlake.fhir.outcome import FhirError
    from fhirlake.jobs.export.params import parse_export
    from fhirlake.jobs.export.runner import run_export

    settings = _settings(ctx)
    params = [("_type", ",".join(types))] if types else []
    params += [("_since", since)] if since else []
    params += [("_until", until)] if until else []
    params += [("_typeFilter", f) for f in type_filters]
    params += [("_outputFormat", output_format)]
    params += [("outputCompression", "gzip")] if gzip else []
    try:
        req = parse_export(params, level="system", request_url="fhirlake export", base_url="")
    except FhirError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    engine = _engine(ctx)
    with click.progressbar(length=1, label="exporting", show_pos=True) as bar:
        def progress(values: dict) -> None:
            total = values.get("total") or 0
            if total and bar.length != total:
                bar.length = total
            done = values.get("done", 0)
            bar.update(done - bar.pos)

        outcome = run_export(engine, req, out_dir, file_max_resources=settings.export_file_max_resources,
                             progress=progress)
    total = sum(f.count for f in outcome.output)
    click.echo(f"exported {total} resources in {len(outcome.output)} files to {out_dir}"
               f" (transactionTime {outcome.transaction_time})")
    for f in outcome.deleted + outcome.error:
        click.echo(f"{f.type}: {f.count} in {f.name}")


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--errors", "error_file", type=click.Path(path_type=Path), default=Path("import-errors.ndjson"),
              show_default=True, help="Where bad lines are reported (NDJSON of OperationOutcomes).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="resources per transaction [default: 2000]")
@click.pass_context
def import_(ctx: click.Context, paths: tuple[Path, ...], error_file: Path, batch_size: int | None) -> None:
    """Load NDJSON / NDJSON.gz files, folders of them, or folders of transaction Bundles."""
    from fhirlake.jobs.imports.loader import ImportRun, expand_paths

    engine = _engine(ctx)
    sources = expand_paths(list(paths))
    total_bytes = sum(s.size for s in sources)
    logging.getLogger("fhirlake").setLevel(logging.WARNING)
    with click.progressbar(length=max(total_bytes, 1), label="importing") as bar:
        sizing = {"batch_size": batch_size} if batch_size else {}
        run = ImportRun(engine, error_file, progress_bytes=bar.update, **sizing)
        summary = run.load(sources)
    click.echo(f"imported {summary.loaded} resources ({summary.unchanged} unchanged) from {len(sources)} inputs;"
               f" {summary.errors} problems" + (f" reported in {error_file}" if summary.errors else ""))
    if summary.errors:
        ctx.exit(1)

