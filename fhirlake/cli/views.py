"""`fhirlake views ...` and `fhirlake sql ...`: run ViewDefinitions, refresh and list the lake, query it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import click
import orjson

from fhirlake.config import Settings

DEFAULT_SUITE_PLACES = (
    Path("tests/views/sof_suite"),
    Path(__file__).resolve().parents[2] / "tests" / "views" / "sof_suite",
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sql-on-fhir-v2",
)


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_root().obj
    if settings is None:  # invoked without the root group (tests calling the group directly)
        from fhirlake.config import load_settings

        settings = load_settings()
    return settings


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[BinaryIO]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with temp.open("wb") as handle:
            yield handle
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)


def _load_view(path: Path):  # noqa: ANN202
    from fhirlake.views import ViewDefinitionError, compile_view

    try:
        definition = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such file") from None
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(definition, dict):
        raise click.ClickException(f"{path} does not hold a ViewDefinition (a JSON object)")
    try:
        return compile_view(definition)
    except ViewDefinitionError as exc:
        raise click.ClickException(f"{path}: invalid ViewDefinition: {exc}") from None


@click.group()
def views() -> None:
    """SQL-on-FHIR v2 views: run them, materialize them in the lake, list them."""


@views.command("run")
@click.argument("view_file", type=click.Path(path_type=Path))
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="An NDJSON(.gz) file or a folder of them.")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson", "json", "parquet"]), default="ndjson",
              show_default=True)
@click.option("--output", type=click.Path(path_type=Path), default=None, help="File to write (default: stdout).")
def run(view_file: Path, input_path: Path, fmt: str, output: Path | None) -> None:
    """Run VIEW_FILE over NDJSON resources (no server or database needed)."""
    from fhirlake.views import ViewDefinitionError, write_rows
    from fhirlake.views.ndjson_input import InputError, find_bad_line, input_files, read_lines

    view = _load_view(view_file)
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise click.ClickException("Parquet output needs --output FILE (or a redirected stdout)")
    try:
        files = input_files(input_path, view.resource_type)
        with _output(output) as out:
            count = write_rows(view.evaluate_ndjson(read_lines(files)), fmt, out, schema=view.schema)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    except ViewDefinitionError as exc:
        raise click.ClickException(f"the view failed on the input: {exc}") from None
    except ValueError as exc:  # malformed JSON somewhere in the input
        where = find_bad_line(files) or str(exc)
        raise click.ClickException(f"bad input: {where}") from None
    if output is not None:
        click.echo(f"{count} rows written to {output}", err=True)


@views.command("refresh")
@click.argument("names", nargs=-1)
@click.option("--full", is_flag=True, help="Rebuild from scratch instead of applying the changes since the last refresh.")
@click.option("--deid", "deid_profile", default=None, metavar="PROFILE",
              help="Write the de-identified zone <lake>/deid/PROFILE/views (e.g. safe-harbor).")
@click.option("--lake", "lake_dir", type=click.Path(path_type=Path), default=None, help="Lake folder (default <data-dir>/lake).")
@click.pass_context
def refresh(ctx: click.Context, names: tuple[str, ...], full: bool, deid_profile: str | None, lake_dir: Path | None) -> None:
    """Refresh catalog views (all when no NAME is given) from the database into the lake."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fhirlake.server.database import open_database
    from fhirlake.views import ViewDefinitionError
    from fhirlake.views.refresh import refresh_views

    settings = _settings(ctx)
    lake_dir = lake_dir or settings.lake_dir
    engine, _ = open_database(settings, pool_size=2)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True, console=_stderr_console()) as bar:
            task = bar.add_task("refreshing views", total=None)

            def progress(done: int, total: int, what: str) -> None:
                bar.update(task, advance=done, total=total, description=f"refreshing views ({what})")

            results = refresh_views(engine, lake_dir, list(names), full=full, deid_profile=deid_profile,
                                    progress=progress)
    except ViewDefinitionError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        from fhirlake.deid import DeidError

        if isinstance(exc, DeidError):
            raise click.ClickException(f"de-identification: {exc}") from None
        raise
    finally:
        engine.dispose()
    for r in results:
        click.echo(f"{r.name:<24} {r.mode:<12} {r.rows:>10} rows  {r.resources:>8} resources evaluated  {r.seconds:6.2f}s")


def _stderr_console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True)


@views.command("list")
@click.option("--deid", "deid_profile", default=None, metavar="PROFILE", help="List the de-identified zone.")
@click.option("--lake", "lake_dir", type=click.Path(path_type=Path), default=None)
@click.pass_context
def list_views(ctx: click.Context, deid_profile: str | None, lake_dir: Path | None) -> None:
    """Catalog views and their state in the lake: resource, rows, refreshed-at, watermark."""
    from rich.table import Table

    from fhirlake.views.catalog import load_catalog
    from fhirlake.views.lake import ViewLake

    lake = ViewLake.for_zone(lake_dir or _settings(ctx).lake_dir, deid_profile)
    catalog = load_catalog()
    table = Table("name", "resource", "rows", "refreshed at", "watermark", "folder")
    for name in sorted(set(catalog) | set(lake.names())):
        meta = lake.metadata(name)
        resource = meta.resource_type if meta else catalog[name].get("resource", "")
        if meta is None:
            table.add_row(name, resource, "-", "never", "-", "-")
        else:
            table.add_row(name, resource, str(meta.row_count), meta.refreshed_at, meta.watermark or "-",
                          str(lake.view_dir(name)))
    _stdout_console().print(table)


def _stdout_console():  # noqa: ANN202
    from rich.console import Console

    return Console(width=200)


@views.command("conformance")
@click.option("--report", "report_path", type=click.Path(path_type=Path), required=True,
              help="Where to write the suite's test-report JSON.")
@click.option("--suite", "suite_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of the SQL-on-FHIR v2 test files (default: the vendored copy in tests/views/sof_suite).")
def conformance(report_path: Path, suite_dir: Path | None) -> None:
    """Run the official SQL-on-FHIR v2 conformance suite and write its test report."""
    from fhirlake.views.conformance import run_suite, suite_files, summarize

    if suite_dir is None:
        suite_dir = next((p for p in DEFAULT_SUITE_PLACES if p.is_dir()), None)
        if suite_dir is None:
            raise click.ClickException("the conformance suite was not found; pass --suite DIR")
    if not suite_dir.is_dir() or not suite_files(suite_dir):
        raise click.ClickException(f"{suite_dir}: no suite test files there")
    report = run_suite(suite_dir)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    passed, total = summarize(report)
    click.echo(f"{passed} of {total} tests passed; report written to {report_path}")
    if passed != total:
        sys.exit(1)


@click.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "parquet"]), default="table", show_default=True)
@click.option("--output", type=click.Path(path_type=Path), default=None, help="File to write (default: stdout).")
@click.option("--deid", "deid_profile", default=None, metavar="PROFILE", help="Query the de-identified zone.")
@click.option("--lake", "lake_dir", type=click.Path(path_type=Path), default=None)
@click.option("--max-rows", default=100, show_default=True, help="Rows shown by --format table.")
@click.pass_context
def sql(ctx: click.Context, query: str, fmt: str, output: Path | None, deid_profile: str | None,
        lake_dir: Path | None, max_rows: int) -> None:
    """Run a SQL QUERY (DuckDB) over the materialized views; each view is a table named after it."""
    import duckdb

    from fhirlake.views.sql import LakeNotMaterialized, connect_lake

    try:
        con = connect_lake(lake_dir or _settings(ctx).lake_dir, deid_profile)
    except LakeNotMaterialized as exc:
        raise click.ClickException(str(exc)) from None
    try:
        relation = con.sql(query)
        if relation is None:  # a statement without a result (CREATE, SET, ...)
            return
        # DuckDB 2 renamed arrow() to to_arrow_table().
        result = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    except duckdb.Error as exc:
        raise click.ClickException(f"SQL error: {str(exc).splitlines()[0]}") from None
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise click.ClickException("Parquet output needs --output FILE (or a redirected stdout)")
    if fmt == "table" and output is None:
        _print_table(result, max_rows)
        return
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    with _output(output) as out:
        if fmt == "parquet":
            pq.write_table(result, out)
        elif fmt == "csv":
            pacsv.write_csv(_csv_ready(result), out)
        else:
            out.write(_text_table(result, max_rows).encode())


def _csv_ready(table):  # noqa: ANN001, ANN202
    import pyarrow as pa

    columns = []
    for column in table.columns:
        if pa.types.is_list(column.type) or pa.types.is_struct(column.type):
            column = pa.array([None if v is None else orjson.dumps(v).decode() for v in column.to_pylist()], pa.string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _print_table(result, max_rows: int) -> None:  # noqa: ANN001
    _stdout_console().print(_rich_table(result, max_rows))
    if result.num_rows > max_rows:
        click.echo(f"({result.num_rows} rows; {max_rows} shown: use --max-rows or --format csv)")


def _rich_table(result, max_rows: int):  # noqa: ANN001, ANN202
    from rich.table import Table

    table = Table(*result.column_names)
    for row in result.slice(0, max_rows).to_pylist():
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    return table


def _text_table(result, max_rows: int) -> str:  # noqa: ANN001
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(_rich_table(result, max_rows))
    return console.export_text()
