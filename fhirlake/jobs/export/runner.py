"""Run an export: one REPEATABLE READ snapshot, every file streamed from it, each published atomically.

Speed: the stored JSON text is already exactly one NDJSON line, so NDJSON output is a
``COPY (SELECT content ...) TO STDOUT`` in CSV form whose quote and delimiter are control characters
that valid JSON text never contains raw: PostgreSQL then sends every row verbatim followed by a
newline, and the bytes go to the file without being parsed. Files split at
``export_file_max_resources``: boundaries are rids computed once per type, so each file is one COPY
over a rid range. Memory stays flat (1 MB write buffer) whatever the export size.

A de-identified export (``ExportRequest.deidentify``) takes the same COPY stream but passes every
row through the profile's engine (:mod:`fhirlake.jobs.export.deid`) before writing it; the plain
path is untouched by it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from fhirlake.config import Settings
from fhirlake.deid import DeidConfigError, Deidentifier
from fhirlake.jobs.export.deid import DeidStep, export_deidentifier, instant
from fhirlake.jobs.export.params import PARQUET, ExportRequest
from fhirlake.jobs.export.selection import Selection, build
from fhirlake.jobs.registry import job_handler
from fhirlake.lake.fs import delete_tree, join, resolve
from fhirlake.lake.publish import atomic_output
from fhirlake.store.resources import format_instant

log = logging.getLogger("fhirlake.jobs.export")

FLUSH_BYTES = 1 << 20
FETCH_ROWS = 5000
# CSV with quote \x01 and delimiter \x02: JSON text never holds raw control characters, so no
# value is ever quoted or escaped and each row arrives as "<content>\n".
_COPY_OPTIONS = "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
_CONTENT_FROM = "FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
PARQUET_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("version", pa.int32(), nullable=False),
    pa.field("last_updated", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("resource", pa.string(), nullable=False),
])
# De-identified rows take id and last_updated from the de-identified resource: a profile may
# remove either, so they may be null there.
DEID_PARQUET_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("version", pa.int32(), nullable=False),
    pa.field("last_updated", pa.timestamp("ms", tz="UTC")),
    pa.field("resource", pa.string(), nullable=False),
])

Progress = Callable[[dict], None]
Check = Callable[[], None]


@dataclass
class OutputFile:
    type: str
    name: str
    count: int


@dataclass
class ExportOutcome:
    transaction_time: str
    output: list[OutputFile] = field(default_factory=list)
    deleted: list[OutputFile] = field(default_factory=list)
    error: list[OutputFile] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _noop(*_args: object) -> None:
    return None


def run_export(engine: Engine, req: ExportRequest, folder: str | Path, *, file_max_resources: int,
               progress: Progress | None = None, check: Check | None = None,
               deidentifier: Deidentifier | None = None) -> ExportOutcome:
    """Write the export into ``folder``. With ``req.deidentify``, ``deidentifier`` (default: the
    profile's engine with this process's key; DeidConfigError without one) transforms every resource."""
    progress = progress or _noop
    check = check or _noop
    deid = None
    if req.deidentify:
        deid = DeidStep(deidentifier or export_deidentifier(req.deidentify), req.deidentify)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as sa_conn, sa_conn.begin():
        raw = sa_conn.connection.driver_connection
        outcome = ExportOutcome(_snapshot_time(raw))
        if req.level == "group":
            _require_group(sa_conn, req.group_id or "")
        sel = build(sa_conn, raw, req)
        totals = _type_totals(raw, sel)
        grand = sum(totals.values())
        done = 0
        progress({"phase": "exporting", "done": 0, "total": grand})
        for res_type in totals:
            check()
            bounds = _file_bounds(raw, sel, res_type, file_max_resources)
            if req.output_format == PARQUET:
                bounds = [(None, None)]
            for index, (lo, hi) in enumerate(bounds):
                failed_before = deid.failed if deid else 0
                name = _file_name(res_type, index, req)
                count = _write_file(raw, sel, res_type, lo, hi, folder, name, req, check, deid)
                if count or deid is None:
                    outcome.output.append(OutputFile(res_type, name, count))
                check()
                done += count + (deid.failed - failed_before if deid else 0)
                progress({"phase": "exporting", "type": res_type, "done": done, "total": grand})
        if req.since:
            outcome.deleted = _write_deleted(raw, sel, folder, check, deid)
        errors = [*sel.errors, *(deid.error_outcomes() if deid else [])]
        if errors:
            with atomic_output(folder, "error.000.ndjson") as out:
                out.write(b"".join(orjson.dumps(o) + b"\n" for o in errors))
            outcome.error.append(OutputFile("OperationOutcome", "error.000.ndjson", len(errors)))
        progress({"phase": "completed", "done": done, "total": grand})
    return outcome


def _snapshot_time(raw) -> str:  # noqa: ANN001 - psycopg connection
    """The instant the snapshot stands for (taken by this very statement).

    A writer stamps meta.lastUpdated before it commits: a transaction still open when the snapshot
    was taken may commit later with an earlier lastUpdated. The transaction time is therefore no
    later than the start of the oldest such writer, so that ``_since=<transactionTime>`` next time
    never misses it (it may repeat a few resources, which the IG allows).
    """
    with raw.cursor() as cur:
        cur.execute(
            "SELECT least(statement_timestamp(), (SELECT min(xact_start) FROM pg_stat_activity"
            " WHERE backend_xid IS NOT NULL AND datname = current_database() AND pid <> pg_backend_pid()))"
        )
        moment = cur.fetchone()[0]
    return format_instant(moment)


def _require_group(sa_conn, group_id: str) -> None:  # noqa: ANN001
    from fhirlake.jobs.export.selection import group_patients
    from fhirlake.jobs.worker import JobFailed

    if group_patients(sa_conn, group_id) is None:
        raise JobFailed(f"Group/{group_id} does not exist")


def _type_totals(raw, sel: Selection) -> dict[str, int]:  # noqa: ANN001
    params: dict = {"types": sel.types}
    if not sel.filtered_types:
        cond = sel.condition(params, None)
        with raw.cursor() as cur:
            cur.execute(
                f"SELECT r.res_type, count(*) FROM resource r WHERE {cond} AND r.res_type = ANY(%(types)s)"
                " GROUP BY r.res_type ORDER BY r.res_type",
                params,
            )
            return {t: n for t, n in cur.fetchall() if n}
    totals = {}
    for res_type in sel.types:
        params = {}
        cond = sel.condition(params, res_type)
        with raw.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM resource r WHERE {cond}", params)
            n = cur.fetchone()[0]
        if n:
            totals[res_type] = n
    return totals


def _file_bounds(raw, sel: Selection, res_type: str, per_file: int) -> list[tuple[int | None, int | None]]:  # noqa: ANN001
    """(exclusive low rid, inclusive high rid) of each file of a type."""
    params: dict = {"per": max(per_file, 1)}
    cond = sel.condition(params, res_type)
    with raw.cursor() as cur:
        cur.execute(
            f"SELECT rid FROM (SELECT r.rid, row_number() OVER (ORDER BY r.rid) AS n FROM resource r WHERE {cond}) s"
            " WHERE n %% %(per)s = 0 ORDER BY rid",
            params,
        )
        cuts = [row[0] for row in cur.fetchall()]
    bounds: list[tuple[int | None, int | None]] = []
    low = None
    for cut in cuts:
        bounds.append((low, cut))
        low = cut
    bounds.append((low, None))
    return bounds


def _file_name(res_type: str, index: int, req: ExportRequest) -> str:
    if req.output_format == PARQUET:
        return f"{res_type}.parquet"
    return f"{res_type}.{index:03d}.ndjson" + (".gz" if req.gzip else "")


def _range_condition(sel: Selection, res_type: str, lo: int | None, hi: int | None, params: dict) -> str:
    cond = sel.condition(params, res_type)
    if lo is not None:
        params["lo"] = lo
        cond += " AND r.rid > %(lo)s"
    if hi is not None:
        params["hi"] = hi
        cond += " AND r.rid <= %(hi)s"
    return cond


def _write_file(raw, sel: Selection, res_type: str, lo: int | None, hi: int | None, folder: str | Path,  # noqa: ANN001
                name: str, req: ExportRequest, check: Check, deid: DeidStep | None = None) -> int:
    params: dict = {}
    cond = _range_condition(sel, res_type, lo, hi, params)
    elements = _elements_for(req, res_type)
    if deid is not None:
        deid.begin_file(name)
    with atomic_output(folder, name) as stream:
        if req.output_format == PARQUET:
            if deid is not None:
                return _stream_parquet_deid(raw, cond, params, stream, elements, check, deid)
            return _stream_parquet(raw, cond, params, stream, elements, check)
        sink = pa.CompressedOutputStream(stream, "gzip") if req.gzip else stream
        try:
            if deid is not None:
                return _stream_copy_deid(raw, cond, params, sink, elements, check, deid)
            if elements is None:
                return _stream_copy(raw, cond, params, sink, check)
            return _stream_subset(raw, cond, params, sink, elements, check)
        finally:
            if sink is not stream:
                sink.close()


def _stream_copy(raw, cond: str, params: dict, sink, check: Check) -> int:  # noqa: ANN001
    count = 0
    buffered: list = []
    size = 0
    query = f"COPY (SELECT v.content {_CONTENT_FROM} WHERE {cond}) TO STDOUT {_COPY_OPTIONS}"
    with raw.cursor() as cur, cur.copy(query, params) as copy:
        for data in copy:
            buffered.append(data)
            size += len(data)
            if size >= FLUSH_BYTES:
                chunk = b"".join(buffered)
                count += chunk.count(b"\n")
                sink.write(chunk)
                buffered.clear()
                size = 0
                check()
    if buffered:
        chunk = b"".join(buffered)
        count += chunk.count(b"\n")
        sink.write(chunk)
    return count


def _stream_copy_deid(raw, cond: str, params: dict, sink, elements: list[str] | None, check: Check,  # noqa: ANN001
                      deid: DeidStep) -> int:
    """The COPY stream, one row at a time through the profile (then ``_elements``); 1 MB writes.

    The profile runs before ``_elements`` so that a resource's date offset and pseudonyms do not
    depend on which elements were asked for (the patient reference decides the offset).
    """
    count = 0
    buffered: list[bytes] = []
    size = 0
    query = f"COPY (SELECT v.content {_CONTENT_FROM} WHERE {cond}) TO STDOUT {_COPY_OPTIONS}"
    with raw.cursor() as cur, cur.copy(query, params) as copy:
        for data in copy:
            resource = deid.resource(data)
            if resource is None:
                continue
            line = orjson.dumps(_subset_resource(resource, elements) if elements is not None else resource) + b"\n"
            buffered.append(line)
            size += len(line)
            count += 1
            if size >= FLUSH_BYTES:
                sink.write(b"".join(buffered))
                buffered.clear()
                size = 0
                check()
    if buffered:
        sink.write(b"".join(buffered))
    return count


def _stream_parquet_deid(raw, cond: str, params: dict, stream, elements: list[str] | None,  # noqa: ANN001
                         check: Check, deid: DeidStep) -> int:
    count = 0
    writer = pq.ParquetWriter(stream, DEID_PARQUET_SCHEMA, compression="zstd")
    try:
        with raw.cursor(name="export_parquet_deid") as cur:
            cur.execute(f"SELECT v.version, v.content {_CONTENT_FROM} WHERE {cond} ORDER BY r.rid", params)
            while rows := cur.fetchmany(FETCH_ROWS):
                ids, versions, updated, contents = [], [], [], []
                for version, content in rows:
                    resource = deid.resource(content)
                    if resource is None:
                        continue
                    if elements is not None:
                        resource = _subset_resource(resource, elements)
                    ids.append(resource.get("id"))
                    versions.append(version)
                    updated.append(instant((resource.get("meta") or {}).get("lastUpdated")))
                    contents.append(orjson.dumps(resource).decode())
                if contents:
                    writer.write_batch(pa.record_batch(
                        [pa.array(ids, pa.string()), pa.array(versions, pa.int32()),
                         pa.array(updated, pa.timestamp("ms", tz="UTC")), pa.array(contents, pa.string())],
                        schema=DEID_PARQUET_SCHEMA))
                count += len(contents)
                check()
    finally:
        writer.close()
    return count


def _elements_for(req: ExportRequest, res_type: str) -> list[str] | None:
    names = [*req.elements.get("*", []), *req.elements.get(res_type, [])]
    if not req.elements:
        return None
    return names


def _subset(content: str, elements: list[str]) -> bytes:
    return orjson.dumps(_subset_resource(orjson.loads(content), elements))


def _subset_resource(resource: dict, elements: list[str]) -> dict:
    from fhirlake.search.subset import apply_elements, mandatory_keys

    keep = [*elements, *mandatory_keys(resource.get("resourceType", ""))]
    return apply_elements(resource, keep)


def _stream_subset(raw, cond: str, params: dict, sink, elements: list[str], check: Check) -> int:  # noqa: ANN001
    count = 0
    with raw.cursor(name="export_subset") as cur:
        cur.execute(f"SELECT v.content {_CONTENT_FROM} WHERE {cond} ORDER BY r.rid", params)
        while rows := cur.fetchmany(FETCH_ROWS):
            sink.write(b"".join(_subset(row[0], elements) + b"\n" for row in rows))
            count += len(rows)
            check()
    return count


def _stream_parquet(raw, cond: str, params: dict, stream, elements: list[str] | None, check: Check) -> int:  # noqa: ANN001
    count = 0
    writer = pq.ParquetWriter(stream, PARQUET_SCHEMA, compression="zstd")
    try:
        with raw.cursor(name="export_parquet") as cur:
            cur.execute(
                f"SELECT r.res_id, v.version, v.last_updated, v.content {_CONTENT_FROM} WHERE {cond} ORDER BY r.rid",
                params,
            )
            while rows := cur.fetchmany(FETCH_ROWS * 4):
                ids, versions, updated, contents = zip(*rows, strict=True)
                if elements is not None:
                    contents = tuple(_subset(c, elements).decode() for c in contents)
                writer.write_batch(pa.record_batch(
                    [pa.array(ids), pa.array(versions, pa.int32()), pa.array(updated, pa.timestamp("ms", tz="UTC")),
                     pa.array(contents)], schema=PARQUET_SCHEMA))
                count += len(rows)
                check()
    finally:
        writer.close()
    return count


def _was_in_compartment(res_type: str, res_id: str, content: str | None, patients: list[str] | None) -> bool:
    """Whether a deleted resource, as its last version stood, belonged to one of ``patients``'
    compartments (any patient's when None)."""
    if res_type == "Patient":
        return patients is None or res_id in patients
    if not content:
        return False
    from fhirlake.auth.compartment import compartment_patients

    found = compartment_patients(orjson.loads(content))
    return bool(found) if patients is None else not found.isdisjoint(patients)


def _write_deleted(raw, sel: Selection, folder: str | Path, check: Check,  # noqa: ANN001
                   deid: DeidStep | None = None) -> list[OutputFile]:
    """Resources deleted since ``_since``: NDJSON of transaction Bundles with DELETE entries (Patient
    and Group level: those that were in the compartment of a patient asked for).

    De-identified: ids are replaced by the profile's pseudonyms (entries whose id the profile removes
    are left out), so that the deletions apply to an earlier de-identified export.
    """
    params: dict = {"types": sel.types, "since": sel.request.since_dt()}
    until = ""
    if sel.request.until:
        params["until"] = sel.request.until_dt()
        until = " AND r.last_updated <= %(until)s"
    # Patient and Group level: the index rows of a deleted resource are gone, so its compartment
    # is read from its last version before the deletion.
    last_live = ", p.content" if sel.members else ", NULL"
    join = " LEFT JOIN resource_version p ON p.rid = r.rid AND p.version = r.version - 1" if sel.members else ""
    count = 0
    with raw.cursor(name="export_deleted") as cur:
        cur.execute(
            f"SELECT r.res_type, r.res_id{last_live} FROM resource r{join} WHERE r.deleted AND r.version > 0"
            f" AND r.last_updated >= %(since)s{until} AND r.res_type = ANY(%(types)s) ORDER BY r.rid",
            params,
        )
        rows = cur.fetchall()
    if sel.members:
        rows = [row for row in rows if _was_in_compartment(row[0], row[1], row[2], sel.patients)]
    if not rows:
        return []
    with atomic_output(folder, "deleted.000.ndjson") as out:
        for res_type, original_id, _content in rows:
            res_id = deid.resource_id(res_type, original_id) if deid is not None else original_id
            if not res_id:
                continue
            bundle = {"resourceType": "Bundle", "type": "transaction",
                      "entry": [{"request": {"method": "DELETE", "url": f"{res_type}/{res_id}"}}]}
            out.write(orjson.dumps(bundle) + b"\n")
            count += 1
        check()
    return [OutputFile("Bundle", "deleted.000.ndjson", count)]


# ---------------------------------------------------------------- the job


def job_folder(settings: Settings, job_id: str) -> str:
    _fs, base = resolve(settings.bulk_dir)
    return join(base, job_id)


def attempt_folder(settings: Settings, job_id: str, attempt: int) -> str:
    return join(job_folder(settings, job_id), f"a{attempt}")


@job_handler("export")
def export_job(ctx) -> dict:  # noqa: ANN001 - JobContext (import cycle)
    req = ExportRequest.from_json(ctx.job.params)
    folder = attempt_folder(ctx.settings, ctx.job.id, ctx.attempt)
    _remove_other_attempts(ctx.settings, ctx.job.id, ctx.attempt)

    def progress(values: dict) -> None:
        ctx.progress(**values)

    deidentifier = None
    if req.deidentify:
        from fhirlake.jobs.worker import JobFailed

        try:  # before any file is written: no key, no output
            deidentifier = export_deidentifier(req.deidentify)
        except DeidConfigError as exc:
            raise JobFailed(f"de-identification is not possible on this worker: {exc}") from None
    try:
        outcome = run_export(ctx.engine, req, folder, file_max_resources=ctx.settings.export_file_max_resources,
                             progress=progress, check=ctx.check, deidentifier=deidentifier)
    except BaseException:
        delete_tree(folder)  # a stopped or failed attempt leaves nothing behind
        raise
    result = outcome.to_json()
    result["folder"] = f"a{ctx.attempt}"
    if req.deidentify:
        result["deidentify"] = req.deidentify
    result["finished"] = format_instant(datetime.now(UTC))
    return result


def _remove_other_attempts(settings: Settings, job_id: str, attempt: int) -> None:
    from pyarrow import fs as pafs

    filesystem, base = resolve(settings.bulk_dir)
    folder = join(base, job_id)
    if filesystem.get_file_info(folder).type == pafs.FileType.NotFound:
        return
    for info in filesystem.get_file_info(pafs.FileSelector(folder)):
        if info.base_name != f"a{attempt}" and info.type == pafs.FileType.Directory:
            filesystem.delete_dir(info.path)
