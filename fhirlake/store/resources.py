"""Reading and writing resource versions.

Every write goes through :func:`write_resources`, inside the caller's transaction, so that a
transaction bundle, an import batch and a single create share one code path: lock or create the
logical rows, stamp ``meta``, append versions, move the current pointers, update search indexes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
import psycopg
from sqlalchemy import Connection, text

from fhirlake.fhir.outcome import FhirError

if TYPE_CHECKING:
    from fhirlake.search.rows import CopyText, Rows


@dataclass(frozen=True, slots=True)
class StoredVersion:
    rid: int
    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    method: str
    content: str | None  # None for a delete tombstone

    @property
    def deleted(self) -> bool:
        return self.method == "delete"

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(slots=True)
class WriteOp:
    """One change. ``resource`` is None for a delete; ``expected_version`` implements If-Match."""

    res_type: str
    res_id: str
    resource: dict | None
    expected_version: int | None = None
    # create-only: fail with 409 instead of updating when the id already exists
    must_be_new: bool = False
    # search index rows of ``resource`` extracted in advance (fhirlake.search.index.prepare_rows,
    # or prepare_copy_text)
    index_rows: Rows | CopyText | None = None


def new_id() -> str:
    return str(uuid.uuid4())


def format_instant(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _now_ms() -> datetime:
    # Millisecond precision: the JSON meta.lastUpdated and the column must compare equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


_READ_CURRENT = text(
    """
    SELECT r.rid, v.version, v.last_updated, v.method, v.content
    FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version
    WHERE r.res_type = :t AND r.res_id = :i
    """
)

_READ_VERSION = text(
    """
    SELECT v.rid, v.version, v.last_updated, v.method, v.content
    FROM resource_version v JOIN resource r ON r.rid = v.rid
    WHERE r.res_type = :t AND r.res_id = :i AND v.version = :v
    """
)


def read_current(conn: Connection, res_type: str, res_id: str) -> StoredVersion | None:
    row = conn.execute(_READ_CURRENT, {"t": res_type, "i": res_id}).first()
    if row is None:
        return None
    return StoredVersion(row[0], res_type, res_id, row[1], row[2], row[3], row[4])


# The audit row of a read by id, written by the read's own statement. Only what differs between
# requests travels as a parameter; the time is the statement's (now()), the rest is implied.
_READ_AUDIT_PARAMS = ("client_id", "user_id", "patient_id", "query_params", "source_ip")
_READ_CURRENT_AUDITED = text(
    # The read runs first; the audit row records its outcome (200, 404 unknown, 410 deleted) so that a
    # plain read needs no second write.
    "WITH x AS (SELECT r.rid, v.version, v.last_updated, v.method, v.content"
    " FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version"
    " WHERE r.res_type = :t AND r.res_id = :i AND r.version > 0),"
    " a AS (INSERT INTO audit_event (recorded, action, interaction, resource_type, resource_ids, "
    + ", ".join(_READ_AUDIT_PARAMS) + ", outcome, outcome_desc) SELECT now(), 'R', 'read', :t, :i, "
    + ", ".join(f":a_{c}" for c in _READ_AUDIT_PARAMS)
    + ", CASE WHEN x.rid IS NULL THEN 404 WHEN x.method = 'delete' THEN 410 ELSE 200 END,"
    " CASE WHEN x.rid IS NULL THEN 'Not Found' WHEN x.method = 'delete' THEN 'Gone' END"
    " FROM (SELECT 1) one LEFT JOIN x ON true RETURNING id, outcome)"
    " SELECT a.id, a.outcome, x.rid, x.version, x.last_updated, x.method, x.content FROM a LEFT JOIN x ON true"
)


def read_current_audited(conn: Connection, res_type: str, res_id: str,
                         audit_row: dict) -> tuple[StoredVersion | None, int, int]:
    """Read the current version and insert its audit row in ONE statement.

    ``audit_row`` holds the columns named in ``_READ_AUDIT_PARAMS``
    (``fhirlake.audit.record.access_columns``). On an autocommit connection the statement commits durably on its own, so the access
    is on record before it is answered, in a single round trip; concurrent readers share WAL
    flushes through PostgreSQL's group commit. Returns (version or None, audit row id, outcome).
    """
    params = {"t": res_type, "i": res_id, **{f"a_{c}": audit_row[c] for c in _READ_AUDIT_PARAMS}}
    row = conn.execute(_READ_CURRENT_AUDITED, params).one()
    if row[2] is None:
        return None, row[0], row[1]
    return StoredVersion(row[2], res_type, res_id, row[3], row[4], row[5], row[6]), row[0], row[1]


def read_version(conn: Connection, res_type: str, res_id: str, version: int) -> StoredVersion | None:
    row = conn.execute(_READ_VERSION, {"t": res_type, "i": res_id, "v": version}).first()
    if row is None:
        return None
    return StoredVersion(row[0], res_type, res_id, row[1], row[2], row[3], row[4])


def read_current_many(conn: Connection, rids: Sequence[int]) -> dict[int, str]:
    """Current JSON text of many live resources by rid (search results, includes)."""
    if not rids:
        return {}
    rows = conn.execute(
        text(
            "SELECT r.rid, v.content FROM resource r JOIN resource_version v"
            " ON v.rid = r.rid AND v.version = r.version WHERE r.rid = ANY(:rids) AND NOT r.deleted"
        ),
        {"rids": list(rids)},
    )
    return {rid: content for rid, content in rows}


def stamp_meta(resource: dict, version: int, last_updated: datetime | str) -> dict:
    """Return the resource with server-owned meta fields set; key order otherwise kept.
    ``last_updated`` may come preformatted (one write stamps many resources with one instant)."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated if isinstance(last_updated, str) else format_instant(last_updated)
    if "meta" in resource:
        out = dict(resource)
        out["meta"] = meta
        return out
    # Put meta right after id (where servers conventionally serve it).
    out = {}
    placed = False
    for key, value in resource.items():
        out[key] = value
        if key == "id":
            out["meta"] = meta
            placed = True
    if not placed:
        out["meta"] = meta
    return out


def _lock_existing(conn: Connection, res_type: str, ids: list[str]) -> dict[str, tuple[int, int, bool]]:
    rows = conn.execute(
        text(
            "SELECT res_id, rid, version, deleted FROM resource"
            " WHERE res_type = :t AND res_id = ANY(:ids) ORDER BY rid FOR UPDATE"
        ),
        {"t": res_type, "ids": ids},
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _lock_existing_many(conn: Connection, types: list[str], ids: list[str]) -> dict[tuple[str, str], tuple[int, int, bool]]:
    """Lock the logical rows of many (type, id) pairs in one round trip (rid order, as
    _lock_existing: concurrent writers lock in the same order)."""
    rows = conn.execute(
        text(
            "SELECT r.res_type, r.res_id, r.rid, r.version, r.deleted FROM resource r"
            " JOIN unnest(string_to_array(:types, ','), string_to_array(:ids, ',')) AS u(t, i)"
            " ON r.res_type = u.t AND r.res_id = u.i ORDER BY r.rid FOR UPDATE OF r"
        ),
        {"types": _joined(types), "ids": _joined(ids)},
    )
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def write_resources(conn: Connection, ops: Sequence[WriteOp], *, index: bool = True) -> list[StoredVersion]:
    """Apply ``ops`` in order inside the caller's transaction and return the new versions.

    Raises FhirError 409/412 on version conflicts; the caller's transaction then rolls back.
    Each (type, id) may appear at most once per call.
    """
    if not ops:
        return []
    for op in ops:  # ids travel comma-joined (_joined); a valid FHIR id has no comma
        if "," in op.res_id or not op.res_id:
            raise FhirError(400, f"'{op.res_id}' is not a valid FHIR id", code="value")
    now = _now_ms()
    now_text = format_instant(now)
    existing = _lock_existing_many(conn, [op.res_type for op in ops], [op.res_id for op in ops])

    # Create logical rows for new resources. ON CONFLICT covers a concurrent creator of the same
    # id: we then lock the row it made and treat the write as an update.
    missing = [op for op in ops if (op.res_type, op.res_id) not in existing and op.resource is not None]
    fresh: set[int] = set()  # rids created by this call: they have no index rows to replace
    # One round trip for the change numbers of the new logical rows and of the versions.
    all_seqs = _next_seqs(conn, len(missing) + len(ops))
    if missing:
        seqs = all_seqs[:len(missing)]
        rows = conn.execute(
            text(
                "INSERT INTO resource (res_type, res_id, version, seq, last_updated, deleted)"
                " SELECT t, i, 0, s, :now, true FROM unnest(string_to_array(:types, ','), string_to_array(:ids, ','),"
                " CAST(string_to_array(:seqs, ',') AS bigint[])) AS u(t, i, s)"
                " ON CONFLICT (res_type, res_id) DO NOTHING RETURNING res_type, res_id, rid"
            ),
            {
                "types": _joined([op.res_type for op in missing]),
                "ids": _joined([op.res_id for op in missing]),
                "seqs": _joined(seqs),
                "now": now,
            },
        )
        for res_type, res_id, rid in rows:
            existing[(res_type, res_id)] = (rid, 0, True)
            fresh.add(rid)
        raced = [op for op in missing if (op.res_type, op.res_id) not in existing]
        for op in raced:
            for res_id, state in _lock_existing(conn, op.res_type, [op.res_id]).items():
                existing[(op.res_type, res_id)] = state

    seqs = all_seqs[len(missing):]
    results: list[StoredVersion] = []
    version_rows: list[dict] = []
    to_index: list[tuple[int, str, dict]] = []
    to_index_prepared: list[tuple[int, Rows | CopyText]] = []
    to_unindex: list[int] = []
    for op, seq in zip(ops, seqs, strict=True):
        state = existing.get((op.res_type, op.res_id))
        if state is None:  # delete of something that never existed: nothing to do
            continue
        rid, version, deleted = state
        live = version > 0 and not deleted
        if op.expected_version is not None and (not live or version != op.expected_version):
            raise FhirError(
                412,
                f"{op.res_type}/{op.res_id}: version {op.expected_version} was expected,"
                f" the current version is {version if live else 'none (deleted or new)'}",
                code="conflict",
            )
        if op.must_be_new and live:
            raise FhirError(409, f"{op.res_type}/{op.res_id} already exists", code="duplicate")
        if op.resource is None:
            if not live:
                continue  # deleting a deleted resource is a no-op (idempotent)
            new_version = version + 1
            method = "delete"
            content = None
            to_unindex.append(rid)
        else:
            new_version = version + 1
            method = "create" if not live and version == 0 else ("update" if live else "create")
            stamped = stamp_meta(op.resource, new_version, now_text)
            content = orjson.dumps(stamped).decode()
            if op.index_rows is not None:
                to_index_prepared.append((rid, op.index_rows))
            else:
                to_index.append((rid, op.res_type, stamped))
        version_rows.append(
            {
                "rid": rid,
                "version": new_version,
                "res_type": op.res_type,
                "res_id": op.res_id,
                "seq": seq,
                "method": method,
                "content": content,
            }
        )
        existing[(op.res_type, op.res_id)] = (rid, new_version, method == "delete")
        results.append(StoredVersion(rid, op.res_type, op.res_id, new_version, now, method, content))

    raw = conn.connection.driver_connection
    assert raw is not None
    # One cursor for all COPYs of this write: creating a psycopg cursor copies its adapter map.
    with raw.cursor() as cur:
        if version_rows:
            _insert_versions(conn, cur, version_rows, now)
        if index:
            _update_indexes(conn, cur, to_index, to_index_prepared, to_unindex, fresh)
    return results


def _joined(values: Sequence[object]) -> str:
    """Values for ``string_to_array(:x, ',')``: adapting a Python list of thousands of values as
    an array parameter costs more than the query. Only for values that never hold a comma
    (resource types, checked ids, numbers, write methods)."""
    return ",".join(map(str, values))


def _next_seqs(conn: Connection, n: int) -> list[int]:
    return list(conn.execute(text("SELECT nextval('change_seq') FROM generate_series(1, :n)"), {"n": n}).scalars())


def _insert_versions(conn: Connection, cur: psycopg.Cursor, rows: list[dict], now: datetime) -> None:
    """The versions of one write, all stamped with its instant ``now``."""
    # COPY: the content text is large, and COPY moves it without per-value SQL escaping.
    with cur.copy(
        "COPY resource_version (rid, version, res_type, res_id, seq, last_updated, method, content) FROM STDIN"
    ) as copy:
        for r in rows:
            copy.write_row((r["rid"], r["version"], r["res_type"], r["res_id"], r["seq"], now, r["method"],
                            r["content"]))
    cols = {k: _joined([r[k] for r in rows]) for k in ("rid", "version", "seq", "method")}
    conn.execute(
        text(
            "UPDATE resource r SET version = u.version, seq = u.seq, last_updated = :last_updated,"
            " deleted = (u.method = 'delete')"
            " FROM unnest(CAST(string_to_array(:rid, ',') AS bigint[]), CAST(string_to_array(:version, ',') AS int[]),"
            " CAST(string_to_array(:seq, ',') AS bigint[]), string_to_array(:method, ','))"
            " AS u(rid, version, seq, method) WHERE r.rid = u.rid"
        ),
        {**cols, "last_updated": now},
    )


def _update_indexes(conn: Connection, cur: psycopg.Cursor, to_index: list[tuple[int, str, dict]],
                    prepared: list[tuple[int, Rows | CopyText]], to_unindex: list[int], fresh: set[int]) -> None:
    """Search index rows change in the same transaction as the resource (DESIGN.md: Storage)."""
    from fhirlake.search.index import index_resources, remove_index

    if to_unindex:
        remove_index(conn, to_unindex)
    new = [item for item in to_index if item[0] in fresh]
    old = [item for item in to_index if item[0] not in fresh]
    new_prepared = [item for item in prepared if item[0] in fresh]
    old_prepared = [item for item in prepared if item[0] not in fresh]
    if new or new_prepared:
        index_resources(conn, new, replace=False, cursor=cur, prepared=new_prepared)
    if old or old_prepared:
        index_resources(conn, old, cursor=cur, prepared=old_prepared)
