"""`fhirlake` command: serve, db, and the command groups of each subsystem."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from fhirlake.config import Settings, load_settings


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj


@click.group()
@click.option("--database-url", envvar="FHIRLAKE_DATABASE_URL", default=None, help="An existing PostgreSQL.")
@click.option("--data-dir", envvar="FHIRLAKE_DATA_DIR", default=None, type=click.Path(path_type=Path),
              help="Private cluster, lake and bulk files (default ./fhirlake-data).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, data_dir: Path | None, verbose: bool) -> None:
    """fhirlake: an analytics-oriented FHIR R4 server."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = load_settings().with_overrides(database_url=database_url, data_dir=data_dir)


@cli.command()
@click.option("--host", envvar="FHIRLAKE_HOST", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", envvar="FHIRLAKE_PORT", default=None, type=int, help="Port (default 8080).")
@click.option("--sample-data", is_flag=True, help="Load the bundled Synthea sample when the database is empty.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", default=8, show_default=True, help="Threads per worker (gthread).")
@click.option("--no-jobs", is_flag=True, help="Do not start the job worker and scheduler alongside the API.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, sample_data: bool, workers: int, threads: int,
          no_jobs: bool) -> None:
    """Start the FHIR API (and, for the local start, a job worker and the scheduler)."""
    from fhirlake.server.database import open_database
    from fhirlake.server.security_check import check_bind

    settings = _settings(ctx).with_overrides(host=host, port=port)
    problem = check_bind(settings)
    if problem:
        raise click.ClickException(problem)
    if not settings.auth_enabled:
        click.secho("WARNING: authentication is OFF. Anyone who can reach "
                    f"{settings.host}:{settings.port} can read and change every record.", fg="red", err=True)
    engine, url = open_database(settings)
    if sample_data:
        _load_sample(engine)
    engine.dispose()
    children: list[subprocess.Popen] = []
    if not no_jobs:
        children = _start_job_processes(url, settings)
    from fhirlake.api.app import create_app
    from fhirlake.server.gunicorn_app import FhirlakeGunicorn
    from fhirlake.store.db import make_engine

    run_settings = settings.with_overrides(database_url=url)

    def factory():  # noqa: ANN202
        return create_app(run_settings, make_engine(url, pool_size=threads))

    click.echo(f"fhirlake serving FHIR R4 at http://{settings.host}:{settings.port}/ (database {_redact(url)})")
    try:
        FhirlakeGunicorn(factory, {
            "bind": f"{settings.host}:{settings.port}", "workers": workers, "worker_class": "gthread",
            "threads": threads, "timeout": 120, "graceful_timeout": 10, "accesslog": None, "loglevel": "warning",
        }).run()
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


def _redact(url: str) -> str:
    """Never print a password."""
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        scheme, rest = url.split("//", 1)
        creds, host = rest.split("@", 1)
        return f"{scheme}//{creds.split(':', 1)[0]}:***@{host}"
    return url


def _start_job_processes(url: str, settings: Settings) -> list[subprocess.Popen]:
    """The local start runs one job worker and the scheduler as child processes."""
    env = {**os.environ, "FHIRLAKE_DATABASE_URL": url, "FHIRLAKE_DATA_DIR": str(settings.data_dir)}
    base = [sys.executable, "-m", "fhirlake.cli.main"]
    return [subprocess.Popen([*base, "worker"], env=env), subprocess.Popen([*base, "scheduler"], env=env)]


def _load_sample(engine) -> None:  # noqa: ANN001
    from sqlalchemy import text

    from fhirlake.services.loader import SAMPLE_DIR, folder_bytes, load_folder

    with engine.connect() as conn:
        if conn.execute(text("SELECT EXISTS (SELECT 1 FROM resource)")).scalar():
            click.echo("sample data: the database already has resources; nothing loaded")
            return
    with click.progressbar(length=folder_bytes(SAMPLE_DIR), label="loading sample data") as bar:
        loaded = load_folder(engine, SAMPLE_DIR, progress_bytes=bar.update)
    click.echo(f"sample data: {loaded} resources loaded")


@cli.group()
def db() -> None:
    """Database schema and indexes."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply migrations (Alembic) to the configured database."""
    from fhirlake.server.database import open_database
    from fhirlake.store.migrate import current_revision

    engine, _ = open_database(_settings(ctx.parent.parent if ctx.parent and ctx.parent.parent else ctx))
    click.echo(f"database at revision {current_revision(engine)}")


@db.command("reindex")
@click.pass_context
def db_reindex(ctx: click.Context) -> None:
    """Rebuild search index rows of every resource (resumable), with progress."""
    from fhirlake.search.index import reindex
    from fhirlake.server.database import open_database

    engine, _ = open_database(_settings(ctx.parent.parent if ctx.parent and ctx.parent.parent else ctx))
    state = {"shown": 0}
    with click.progressbar(length=1, label="reindexing") as bar:

        def progress(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - state["shown"])
            state["shown"] = done

        done = reindex(engine, progress)
    click.echo(f"reindexed {done} resources (resumes where it stopped if interrupted)")


def _register_subsystem_commands() -> None:
    # Each subsystem owns its commands; imported here (not at module top) to keep `fhirlake --help` light.
    from fhirlake.cli.bulk import export, import_, scheduler, worker
    from fhirlake.cli.clients import clients
    from fhirlake.cli.deid import deid
    from fhirlake.cli.views import sql, views

    for command in (clients, export, import_, worker, scheduler, views, sql, deid):
        cli.add_command(command)


_register_subsystem_commands()

if __name__ == "__main__":
    cli()
