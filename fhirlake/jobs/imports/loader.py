"""Bulk loading: NDJSON (plain or gzip), folders of them, folders of transaction Bundles, http(s) URLs.

Per resource: parse, check it is a resource with an id, validate (fhirlake.fhir.validation),
resolve conditional references (``Organization?identifier=...``, cached), skip it when the stored
current version has the same content (re-import creates no new versions), then write through
:func:`fhirlake.store.resources.write_resources` (which indexes for search) in batches, one
transaction per batch. A batch that fails is retried resource by resource, so a bad line never
rolls back good ones. Every problem becomes an OperationOutcome line in the error NDJSON, naming
the input and the line number.

Transaction Bundles are loaded idempotently: an entry's ``urn:uuid:<u>`` fullUrl becomes the id
``<u>`` (references to it are rewritten to ``Type/<u>``); each Bundle is one batch.
"""

from __future__ import annotations

import gzip
import io
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
from sqlalchemy import Engine, text

from fhirlake.fhir.outcome import FhirError
from fhirlake.gc_pause import gc_paused
from fhirlake.search.index import prepare_rows
from fhirlake.services.resource_body import check_no_nul
from fhirlake.store.resources import WriteOp, stamp_meta, write_resources

from .parsing import (
    BadLine,
    ParsePool,
    may_hold_conditional_references,
    op_for,
    parse_for_writing,
    worth_a_process,
)

log = logging.getLogger("fhirlake.jobs.import")

# Types that others refer to by conditional reference load first.
TYPE_ORDER = ["Organization", "Location", "Practitioner", "PractitionerRole", "Medication", "Device", "Patient"]
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
JSON_SUFFIXES = (".json", ".json.gz")


@dataclass
class Source:
    """One input: a local file or an http(s) URL, NDJSON of resources or one Bundle (JSON)."""

    name: str
    kind: str  # ndjson | bundle
    path: Path | None = None
    url: str | None = None
    size: int = 0

    def open(self) -> tuple[IO[bytes], IO[bytes]]:
        """(line reader, raw handle whose position measures progress in bytes)."""
        if self.path is not None:
            raw: IO[bytes] = self.path.open("rb")
        else:
            raw = _http_stream(self.url or "")
        gz = self.name.endswith(".gz")
        reader: IO[bytes] = gzip.GzipFile(fileobj=raw) if gz else raw  # type: ignore[assignment]
        return reader, raw


def _http_stream(url: str) -> IO[bytes]:
    import tempfile

    import httpx

    # Spool to a temporary file: constant memory, and the loader can measure progress in bytes.
    spool = tempfile.TemporaryFile()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60) as response:
            if response.status_code != 200:
                raise OSError(f"the server answered {response.status_code} {response.reason_phrase}")
            for chunk in response.iter_bytes(1 << 20):
                spool.write(chunk)
    except httpx.HTTPError as exc:  # unreachable, timed out, broken transfer: this input fails, not the run
        spool.close()
        raise OSError(f"download failed ({type(exc).__name__})") from exc
    except OSError:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _type_rank(name: str) -> tuple[int, str]:
    head = Path(name).name.split(".", 1)[0]
    return (TYPE_ORDER.index(head) if head in TYPE_ORDER else len(TYPE_ORDER), name)


def source_for(path: Path) -> Source:
    kind = "bundle" if path.name.endswith(JSON_SUFFIXES) and not path.name.endswith(NDJSON_SUFFIXES) else "ndjson"
    return Source(str(path), kind, path=path, size=path.stat().st_size)


def expand_paths(paths: list[Path]) -> list[Source]:
    """Files as given; a folder contributes its NDJSON files, or, when it has none, its JSON Bundles."""
    sources: list[Source] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(NDJSON_SUFFIXES))
            if not files:
                files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(JSON_SUFFIXES))
            sources.extend(source_for(p) for p in sorted(files, key=lambda p: _type_rank(p.name)))
        else:
            sources.append(source_for(path))
    return sources


@dataclass
class Summary:
    loaded: int = 0
    unchanged: int = 0
    errors: int = 0
    per_type: dict[str, int] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)


@dataclass
class _Item:
    line: int
    op: WriteOp
    # conditional references in the resource, found once while parsing (None: not looked for yet)
    refs: set[str] | None = None


# A batch is one transaction; up to WRITERS + 1 are in memory at once (being written, being filled). Larger
# batches spread the per-batch queries over more resources (1,000 -> 2,000: +5-10% measured with
# bench/bench_import.py); the byte bound keeps batches of large resources (claims, bundles of
# observations) within tens of MB.
BATCH_SIZE = 2000
BATCH_BYTES = 16 << 20
# Two transactions in flight let PostgreSQL use both cores while this process parses.
WRITERS = 2
# Large inputs are parsed in a second process (see .parsing), in chunks of this many lines, this
# many chunks ahead of the writing (so that it keeps parsing while this process waits for writers).
PARSE_CHUNK_LINES = 1000
PARSE_CHUNK_BYTES = 2 << 20  # large resources: at most 12 x 2 MiB of lines (and their rows) in flight
PARSE_CHUNKS_AHEAD = 12
# A longer NDJSON line is reported as an error and skipped, not read into memory: a file without
# newlines (or a truncated one) must not make the importer hold gigabytes. Far above any real
# resource (the REST API takes bodies up to 32 MiB).
MAX_LINE_BYTES = 64 << 20


class ImportRun:
    """One import: sources in order, one error sink, one conditional-reference cache."""

    def __init__(self, engine: Engine, error_sink: Path | IO[bytes] | None, *, batch_size: int = BATCH_SIZE,
                 batch_bytes: int = BATCH_BYTES,
                 progress_bytes: Callable[[int], None] | None = None, check: Callable[[], None] | None = None,
                 parse_process: bool | None = None, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.engine = engine
        self.max_line_bytes = max_line_bytes
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.progress_bytes = progress_bytes or (lambda n: None)
        self.check = check or (lambda: None)
        self.summary = Summary()
        self._refs: dict[str, str] = {}
        self._urns: dict[str, str] = {}  # urn:uuid fullUrl -> Type/id across all Bundles of the run
        self._errors_path = error_sink if isinstance(error_sink, Path) else None
        self._errors: IO[bytes] | None = error_sink if error_sink is not None and not isinstance(error_sink, Path) else None
        # Batches are written on helper threads while the next one is parsed and validated, so
        # that PostgreSQL works while Python parses. Up to WRITERS batches are in flight at once,
        # each in its own transaction; see _flush for what keeps them independent.
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: deque[tuple[Future, set[tuple[str, str]]]] = deque()
        self._error_lock = threading.Lock()
        self._per_input: dict[str, list[int]] = {}  # input name -> [loaded, unchanged, errors]
        self._extract_early = True  # see _load_ndjson; off while batches turn out unchanged
        # None: a parsing process when the inputs are large enough (.parsing.worth_a_process)
        self.parse_process = parse_process
        self._pool: ParsePool | None = None

    # ------------------------------------------------------------ errors

    def _error(self, source: str, line: int | None, message: str, code: str = "invalid") -> None:
        with self._error_lock:
            self._write_error(source, line, message, code)

    def _write_error(self, source: str, line: int | None, message: str, code: str) -> None:
        self.summary.errors += 1
        self._counts_of(source)[2] += 1
        where = f"{source}, line {line}" if line is not None else source
        outcome = {"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": code, "diagnostics": f"{where}: {message}",
            "location": [where],
        }]}
        if self._errors is None and self._errors_path is not None:
            self._errors_path.parent.mkdir(parents=True, exist_ok=True)
            self._errors = self._errors_path.open("wb")
        if self._errors is not None:
            self._errors.write(orjson.dumps(outcome) + b"\n")

    def close(self) -> None:
        try:
            self._drain()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            self._close_errors()

    def _close_errors(self) -> None:
        if self._errors is not None and self._errors_path is not None:
            self._errors.close()

    # ------------------------------------------------------------ driving

    def load(self, sources: list[Source]) -> Summary:
        wanted = self.parse_process
        if wanted is None:
            wanted = worth_a_process(sum(s.size for s in sources if s.kind == "ndjson"))
        with gc_paused():
            if wanted:  # before the writer threads start (see ParsePool)
                self._pool = ParsePool()
            try:
                return self._load(sources)
            finally:
                if self._pool is not None:
                    self._pool.close()
                    self._pool = None

    def _load(self, sources: list[Source]) -> Summary:
        # Bundles may reference entries of other Bundles (Synthea puts shared Practitioners in one):
        # learn every urn:uuid first.
        for source in sources:
            if source.kind == "bundle":
                bundle = self._read_bundle(source, report=False)
                if bundle is not None:
                    self._learn_urns(bundle)
        try:
            for source in sources:
                self.check()
                with self._error_lock:
                    self._counts_of(source.name)  # inputs are listed in the order given
                try:
                    if source.kind == "bundle":
                        self._load_bundle(source)
                    else:
                        self._load_ndjson(source)
                except (OSError, EOFError, ValueError) as exc:  # unreadable input (bad gzip, HTTP error)
                    self._drain()
                    self._error(source.name, None, f"cannot read this input: {exc}", code="exception")
                # No waiting for this input's last batches: the next input is parsed while they
                # are written (their counts are kept per input as they land).
        finally:
            self.close()
        self.summary.inputs = [{"input": name, "loaded": loaded, "unchanged": unchanged, "errors": errors}
                               for name, (loaded, unchanged, errors) in self._per_input.items()]
        return self.summary

    def _load_ndjson(self, source: Source) -> None:
        reader, raw = source.open()
        with raw:
            batch: list[_Item] = []
            keys: set[tuple[str, str]] = set()
            size = 0  # bytes of NDJSON in the batch
            position = 0
            too_long = f"line longer than {self.max_line_bytes:,} bytes: skipped"
            lines = _numbered_lines(reader, self.max_line_bytes,
                                    lambda number: self._error(source.name, number, too_long, "too-costly"))
            parsed = self._parsed_elsewhere(lines) if self._pool is not None else self._parsed_here(lines)
            for number, line, op in parsed:
                if isinstance(op, BadLine):
                    self._error(source.name, number, str(op), op.code)
                    continue
                key = (op.res_type, op.res_id)
                if key in keys:  # the same resource twice in one batch: write the first batch now
                    self._flush(source.name, batch)
                    keys.clear()
                    size = 0
                refs = None if may_hold_conditional_references(line) else set()
                batch.append(_Item(number, op, refs))
                keys.add(key)
                size += len(line)
                if len(batch) >= self.batch_size or size >= self.batch_bytes:
                    self._flush(source.name, batch)
                    keys.clear()
                    size = 0
                    position = self._advance(raw, position)
            self._flush(source.name, batch)
            self._advance(raw, position)

    def _parsed_here(self, lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes, WriteOp | BadLine]]:
        for number, line in lines:
            # Index rows are extracted here, while a writer thread has the database busy; not when
            # the last batch written changed nothing (a re-import): the extraction would be wasted.
            try:
                yield number, line, parse_for_writing(line, self._extract_early, prepare_rows)
            except BadLine as exc:
                yield number, line, exc

    def _parsed_elsewhere(self, lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes, WriteOp | BadLine]]:
        """The same as _parsed_here, parsed by the parsing process a few chunks ahead."""
        assert self._pool is not None
        ahead: deque[tuple[list[tuple[int, bytes]], Future]] = deque()
        exhausted = False
        while ahead or not exhausted:
            # keep PARSE_CHUNKS_AHEAD chunks submitted, then hand out the oldest one's results
            while not exhausted and len(ahead) < PARSE_CHUNKS_AHEAD:
                chunk = _chunk(lines)
                if chunk:
                    ahead.append((chunk, self._pool.submit([line for _, line in chunk], self._extract_early)))
                else:
                    exhausted = True
            if not ahead:
                return
            done, future = ahead.popleft()
            for (number, line), (res_type, second, third) in zip(done, future.result(), strict=True):
                if res_type is None:
                    yield number, line, BadLine(second, third)
                else:  # validated over there: only parsed again here
                    yield number, line, WriteOp(res_type, second, orjson.loads(line), index_rows=third)

    def _advance(self, raw: IO[bytes], position: int) -> int:
        try:
            now = raw.tell()
        except (OSError, io.UnsupportedOperation):
            return position
        self.progress_bytes(now - position)
        self.check()
        return now

    # ------------------------------------------------------------ writing

    def _flush(self, source: str, batch: list[_Item]) -> None:
        """Hand the batch to a writer thread.

        Batches in flight together must not depend on each other: none may hold a resource that
        an earlier one in flight also holds (the later version must win), and a batch that may
        carry conditional references resolves them only after every earlier batch has committed
        (it may refer to their resources). Otherwise it waits for the earlier batches first.
        """
        if not batch:
            return
        items = list(batch)
        batch.clear()
        keys = {(item.op.res_type, item.op.res_id) for item in items}
        if any(item.refs != set() for item in items) or any(keys & other for _, other in self._in_flight):
            self._drain()
        while len(self._in_flight) >= WRITERS:
            self._in_flight.popleft()[0].result()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(WRITERS, thread_name_prefix="fhirlake-import-writer")
        self._in_flight.append((self._writer.submit(self._write_batch, source, items), keys))

    def _drain(self) -> None:
        """Wait for every batch in flight, oldest first; the first exception is raised here."""
        first: BaseException | None = None
        while self._in_flight:
            try:
                self._in_flight.popleft()[0].result()
            except BaseException as exc:  # noqa: BLE001 - wait for the others before raising
                first = first or exc
        if first is not None:
            raise first

    def _write_batch(self, source: str, items: list[_Item]) -> None:
        good = self._resolve_references(source, items)
        try:
            with self.engine.begin() as conn:
                todo = self._changed(conn, good)
                write_resources(conn, [i.op for i in todo])
            self._count(source, todo, len(good) - len(todo))
            self._extract_early = bool(todo) or not good
            return
        except Exception:  # noqa: BLE001 - find the bad resource(s), keep the good ones
            pass
        for item in good:
            try:
                with self.engine.begin() as conn:
                    todo = self._changed(conn, [item])
                    write_resources(conn, [i.op for i in todo])
                self._count(source, todo, 1 - len(todo))
            except FhirError as exc:
                self._error(source, item.line, f"{item.op.res_type}/{item.op.res_id}: {exc.diagnostics}", exc.issues[0].code)
            except Exception as exc:  # noqa: BLE001
                self._error(source, item.line, f"{item.op.res_type}/{item.op.res_id}: not stored ({type(exc).__name__})",
                            "exception")

    def _counts_of(self, source: str) -> list[int]:
        """[loaded, unchanged, errors] of one input (under _error_lock: writer threads count too)."""
        return self._per_input.setdefault(source, [0, 0, 0])

    def _count(self, source: str, written: list[_Item], unchanged: int) -> None:
        with self._error_lock:  # writer threads count concurrently
            self.summary.loaded += len(written)
            self.summary.unchanged += unchanged
            counts = self._counts_of(source)
            counts[0] += len(written)
            counts[1] += unchanged
            for item in written:
                self.summary.per_type[item.op.res_type] = self.summary.per_type.get(item.op.res_type, 0) + 1

    def _changed(self, conn, items: list[_Item]) -> list[_Item]:  # noqa: ANN001
        """Drop resources whose stored current version already has this exact content."""
        # One round trip for the whole batch, whatever its types. The keys travel as two
        # comma-joined strings (types and checked ids never hold a comma): adapting two Python
        # lists of a thousand strings each cost more than the query.
        rows = conn.execute(
            text(
                "SELECT r.res_type, r.res_id, r.version, r.last_updated, v.content FROM resource r"
                " JOIN unnest(string_to_array(:types, ','), string_to_array(:ids, ',')) AS u(t, i)"
                " ON r.res_type = u.t AND r.res_id = u.i"
                " JOIN resource_version v ON v.rid = r.rid AND v.version = r.version WHERE NOT r.deleted"
            ),
            {"types": ",".join([item.op.res_type for item in items]),
             "ids": ",".join([item.op.res_id for item in items])},
        )
        current: dict[tuple[str, str], tuple[int, object, str]] = {
            (res_type, res_id): (version, updated, content) for res_type, res_id, version, updated, content in rows
        }
        out = []
        for item in items:
            found = current.get((item.op.res_type, item.op.res_id))
            if found is not None and item.op.resource is not None:
                version, updated, content = found
                if orjson.dumps(stamp_meta(item.op.resource, version, updated)).decode() == content:  # type: ignore[arg-type]
                    continue
            out.append(item)
        return out

    # ------------------------------------------------------------ conditional references

    def _resolve_references(self, source: str, items: list[_Item]) -> list[_Item]:
        wanted: set[str] = set()
        for item in items:
            if item.refs is None:
                item.refs = set()
                _conditional_refs(item.op.resource, item.refs)
            wanted |= item.refs
        missing = [r for r in wanted if r not in self._refs]
        failures: dict[str, str] = {}
        if missing:
            from fhirlake.services.bundle import resolve_conditional_reference

            with self.engine.connect() as conn:
                for ref in missing:
                    try:
                        self._refs[ref] = resolve_conditional_reference(conn, ref)
                    except Exception as exc:  # noqa: BLE001 - FhirError or SearchError
                        failures[ref] = getattr(exc, "diagnostics", None) or str(exc)
                        conn.rollback()
        good = []
        for item in items:
            refs = item.refs or set()
            bad = [r for r in refs if r in failures]
            if bad:
                self._error(source, item.line, f"{item.op.res_type}/{item.op.res_id}: {failures[bad[0]]}", "not-found")
                continue
            if refs:
                item.op.resource = _rewrite(item.op.resource, self._refs)  # type: ignore[assignment]
            good.append(item)
        return good

    # ------------------------------------------------------------ bundles

    def _read_bundle(self, source: Source, report: bool = True) -> dict | None:
        try:
            reader, raw = source.open()
            with raw:
                data = reader.read()
            bundle = orjson.loads(data)
            check_no_nul(data, bundle)
        except (OSError, EOFError, orjson.JSONDecodeError) as exc:
            if report:
                self._error(source.name, None, f"not readable JSON: {exc}", "structure")
            return None
        except FhirError as exc:
            if report:
                self._error(source.name, None, f"{exc.diagnostics} at {exc.issues[0].expression[0]}", "value")
            return None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") not in (
                "transaction", "batch", "collection"):
            if report:
                self._error(source.name, None, "not a transaction, batch or collection Bundle", "structure")
            return None
        return bundle

    def _learn_urns(self, bundle: dict) -> None:
        for entry in bundle.get("entry") or []:
            full_url, resource = entry.get("fullUrl"), entry.get("resource")
            if isinstance(full_url, str) and full_url.startswith("urn:uuid:") and isinstance(resource, dict):
                self._urns[full_url] = f"{resource.get('resourceType')}/{full_url[len('urn:uuid:'):]}"

    def _load_bundle(self, source: Source) -> None:
        bundle = self._read_bundle(source)
        self.progress_bytes(source.size)
        if bundle is None:
            return
        self._learn_urns(bundle)
        entries = bundle.get("entry") or []
        mapping = self._urns
        items: list[_Item] = []
        for n, entry in enumerate(entries):
            method = ((entry.get("request") or {}).get("method") or "PUT").upper()
            resource = entry.get("resource")
            if method not in ("POST", "PUT") or not isinstance(resource, dict):
                self._error(source.name, None, f"Bundle.entry[{n}]: only POST and PUT entries with a resource are loaded")
                continue
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str) and full_url in mapping:
                resource = {**resource, "id": mapping[full_url].split("/", 1)[1]}
            resource = _rewrite(resource, mapping)
            try:
                items.append(_Item(n, op_for(resource)))
            except BadLine as exc:
                self._error(source.name, None, f"Bundle.entry[{n}]: {exc}", exc.code)
        batch: list[_Item] = []
        seen: set[tuple[str, str]] = set()
        for item in items:
            key = (item.op.res_type, item.op.res_id)
            if key in seen:
                continue
            seen.add(key)
            batch.append(item)
        self._flush(source.name, batch)


def _chunk(lines: Iterator[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The next PARSE_CHUNK_LINES lines, or fewer once they reach PARSE_CHUNK_BYTES."""
    chunk: list[tuple[int, bytes]] = []
    size = 0
    for item in lines:
        chunk.append(item)
        size += len(item[1])
        if len(chunk) >= PARSE_CHUNK_LINES or size >= PARSE_CHUNK_BYTES:
            break
    return chunk


def _numbered_lines(reader: IO[bytes], max_bytes: int,
                    too_long: Callable[[int], None]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines; a line over ``max_bytes`` is passed to
    ``too_long`` and skipped without being held whole."""
    number = 0
    while True:
        line = reader.readline(max_bytes + 1)
        if not line:
            return
        number += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # the rest of it, a piece at a time
                line = reader.readline(1 << 20)
            too_long(number)
            continue
        line = line.strip()
        if line:
            yield number, line


def _conditional_refs(node: object, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if "?" in value and not value.startswith("#"):
                    found.add(value)
            elif isinstance(value, (dict, list)):
                _conditional_refs(value, found)
    elif isinstance(node, list):
        for v in node:
            if isinstance(v, (dict, list)):
                _conditional_refs(v, found)


def _rewrite(node: object, mapping: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, mapping))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, mapping) for v in node]
    return node
