"""`fhirlake deid`: de-identify NDJSON files from anywhere (no database, no server).

    FHIRLAKE_DEID_KEY=... fhirlake deid --profile safe-harbor IN_DIR_OR_FILE OUT_DIR
    fhirlake deid --config my-rules.json IN OUT

Each input ``*.ndjson`` / ``*.ndjson.gz`` gives one de-identified ``.ndjson`` (``.ndjson.gz`` with
``--gzip``) of the same name in OUT_DIR, published by rename when complete. Lines that cannot be
processed are never written; ``errors.ndjson`` lists them as ``{"file", "line", "error"}`` (the
error never quotes the line). Problems with the key, the profile, the configuration or the input
exit with status 2 before anything is written.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import click
import orjson

from fhirlake.deid import DeidConfigError, Deidentifier, DeidError, DeidKeys, load_config, load_profile
from fhirlake.deid.config import PROFILES

ERRORS_FILE = "errors.ndjson"
FLUSH_BYTES = 1 << 20
PROGRESS_EVERY = 1000  # lines between progress updates


class SetupError(click.ClickException):
    """A problem found before any data is touched (exit status 2, like a usage error)."""

    exit_code = 2


@dataclass
class FileResult:
    name: str
    written: int = 0
    failed: int = 0


@dataclass
class RunResult:
    files: list[FileResult] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(f.written for f in self.files)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.files)


def input_files(source: Path) -> list[Path]:
    """The NDJSON files of a folder (not recursive, sorted), or the one file named."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz")))
    raise SetupError(f"{source}: no such file or folder")


def output_name(path: Path, compress: bool) -> str:
    stem = path.name.removesuffix(".gz")
    return stem + ".gz" if compress else stem


def build_engine(profile: str | None, config: Path | None) -> Deidentifier:
    """Configuration and key, checked before any file is opened (SetupError otherwise)."""
    if (profile is None) == (config is None):
        raise SetupError(f"give either --profile ({', '.join(PROFILES)}) or --config FILE")
    try:
        rules = load_profile(profile) if profile is not None else load_config(config)
        return Deidentifier(rules, DeidKeys.from_env())
    except DeidConfigError as exc:
        raise SetupError(str(exc)) from None


def _lines(raw: BinaryIO, path: Path, on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    """The file's lines; reports progress in bytes read from disk (compressed size for .gz)."""
    handle = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
    seen = 0
    for number, line in enumerate(handle, start=1):
        yield line
        if number % PROGRESS_EVERY == 0:
            position = raw.tell()
            on_bytes(position - seen)
            seen = position
    on_bytes(path.stat().st_size - seen)


def deidentify_file(engine: Deidentifier, path: Path, out_dir: Path, compress: bool, errors: BinaryIO,
                    on_bytes: Callable[[int], None]) -> FileResult:
    result = FileResult(output_name(path, compress))
    target = out_dir / result.name
    temp = out_dir / f".{result.name}.tmp"

    def report(line_number: int, error: DeidError) -> None:
        result.failed += 1
        errors.write(orjson.dumps({"file": path.name, "line": line_number, "error": str(error)}) + b"\n")

    try:
        with path.open("rb") as raw, temp.open("wb") as sink_file:
            sink = gzip.GzipFile(fileobj=sink_file, mode="wb", compresslevel=6) if compress else sink_file
            buffered: list[bytes] = []
            size = 0
            try:
                for out in engine.deidentify_ndjson(_lines(raw, path, on_bytes), on_error=report):
                    buffered.append(out)
                    size += len(out)
                    result.written += 1
                    if size >= FLUSH_BYTES:
                        sink.write(b"".join(buffered))
                        buffered.clear()
                        size = 0
                sink.write(b"".join(buffered))
            except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
                report(0, DeidError(f"the file could not be read to its end ({type(exc).__name__})"))
            finally:
                if sink is not sink_file:
                    sink.close()
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    return result


def deidentify_files(engine: Deidentifier, files: list[Path], out_dir: Path, compress: bool = False,
                     on_bytes: Callable[[int], None] | None = None) -> RunResult:
    """De-identify every file into ``out_dir`` and write ``errors.ndjson`` there (empty when none)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    on_bytes = on_bytes or (lambda _n: None)
    run = RunResult()
    errors_temp = out_dir / f".{ERRORS_FILE}.tmp"
    try:
        with errors_temp.open("wb") as errors:
            for path in files:
                run.files.append(deidentify_file(engine, path, out_dir, compress, errors, on_bytes))
        errors_temp.replace(out_dir / ERRORS_FILE)
    finally:
        errors_temp.unlink(missing_ok=True)
    return run


@click.command("deid")
@click.option("--profile", default=None, metavar="NAME", help=f"A shipped profile: {', '.join(PROFILES)}.")
@click.option("--config", "config", default=None, type=click.Path(path_type=Path, dir_okay=False),
              help="A configuration file (JSON or YAML, the anonymizer's shape) instead of a profile.")
@click.option("--gzip", "compress", is_flag=True, help="Write .ndjson.gz files.")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
def deid(profile: str | None, config: Path | None, compress: bool, source: Path, out_dir: Path) -> None:
    """De-identify the NDJSON file(s) of SOURCE into OUT_DIR.

    The key comes from FHIRLAKE_DEID_KEY or the file named by FHIRLAKE_DEID_KEY_FILE.
    """
    files = input_files(source)
    if not files:
        raise SetupError(f"{source}: no *.ndjson or *.ndjson.gz files there")
    if out_dir.exists() and any(p.resolve().parent == out_dir.resolve() for p in files):
        raise SetupError("OUT_DIR holds the input files: choose another folder, outputs would replace them")
    engine = build_engine(profile, config)
    for warning in engine.warnings:
        click.echo(f"warning: {warning}", err=True)
    total = sum(p.stat().st_size for p in files)
    with click.progressbar(length=total, label="de-identifying", file=sys.stderr) as bar:
        run = deidentify_files(engine, files, out_dir, compress, bar.update)
    click.echo(f"de-identified {run.written} resources from {len(run.files)} files into {out_dir}")
    if run.failed:
        click.echo(f"{run.failed} lines could not be processed and were left out: see {out_dir / ERRORS_FILE}",
                   err=True)
