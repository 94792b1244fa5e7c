"""Audit trail: group commit under concurrency, in-transaction records, rendering, search."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import Engine, func, select, text

from fhirlake.audit import (
    AuditError,
    AuditRecord,
    AuditSearchError,
    AuditWriter,
    audit_event_resource,
    read_audit,
    record_in,
    search_audit,
)
from fhirlake.auth import AccessContext, parse_scopes
from fhirlake.store.db import make_engine
from fhirlake.store.schema import audit_event
from tests.auth.conftest import run_in_threads


def marker() -> str:
    return "audit-test-" + secrets.token_hex(4)


def count_for(engine: Engine, client_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(audit_event.c.client_id == client_id)).scalar_one()


@pytest.mark.parametrize("synchronous", [True, False])
def test_group_commit_loses_nothing_under_concurrency(engine: Engine, synchronous: bool) -> None:
    writer = AuditWriter(engine, synchronous=synchronous)
    client_id = marker()
    threads_n, per_thread = 16, 40

    def work(n: int) -> None:
        for i in range(per_thread):
            writer.record(AuditRecord("read", 200, "Patient", (f"p{n}-{i}",), client_id=client_id))
            # durable on return: visible to any other connection at once
            if i == per_thread - 1:
                assert count_for(engine, client_id) >= i + 1

    errors = run_in_threads(work, threads_n)
    writer.close()
    assert errors == []
    assert count_for(engine, client_id) == threads_n * per_thread
    with engine.connect() as conn:
        ids = conn.execute(
            select(audit_event.c.resource_ids).where(audit_event.c.client_id == client_id)
        ).scalars()
        assert sorted(ids) == sorted(f"p{n}-{i}" for n in range(threads_n) for i in range(per_thread))
    assert writer.records == threads_n * per_thread
    assert writer.batches < writer.records  # concurrent records shared commits


def test_one_bad_record_does_not_sink_its_batch(engine: Engine) -> None:
    writer = AuditWriter(engine)
    client_id = marker()
    pending = [writer.submit(AuditRecord("read", 200, client_id=client_id)) for _ in range(5)]
    bad = writer.submit(AuditRecord("read", 2**40, client_id=client_id))  # integer out of range
    pending += [writer.submit(AuditRecord("read", 200, client_id=client_id)) for _ in range(5)]
    for p in pending:
        p.wait()
    with pytest.raises(AuditError):
        bad.wait()
    writer.close()
    assert count_for(engine, client_id) == 10


def test_unreachable_database_raises() -> None:
    writer = AuditWriter(make_engine("postgresql://postgres@127.0.0.1:1/none"))
    with pytest.raises(AuditError):
        writer.record(AuditRecord("read", 200), timeout=20)
    writer.close()


def test_record_in_follows_the_callers_transaction(engine: Engine) -> None:
    client_id = marker()
    with engine.connect() as conn:
        with conn.begin() as tx:
            record_in(conn, AuditRecord("create", 201, "Observation", ("o1",), client_id=client_id))
            tx.rollback()
    assert count_for(engine, client_id) == 0
    with engine.begin() as conn:
        record_in(conn, AuditRecord("create", 201, "Observation", ("o1",), client_id=client_id))
    assert count_for(engine, client_id) == 1


def _rows(engine: Engine, client_id: str) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(audit_event).where(audit_event.c.client_id == client_id).order_by(audit_event.c.id)
        ).all()


def test_rendering_has_names_not_values(engine: Engine) -> None:
    client_id = marker()
    ctx = AccessContext(
        scopes=parse_scopes("patient/Observation.rs"),
        client_id=client_id,
        user_id="Practitioner/9",
        patient_id="pat-1",
    )
    record = AuditRecord.for_request(
        ctx,
        "search-type",
        200,
        "Observation",
        query_params=[
            "code=http://loinc.org|8867-4",
            "value-quantity=gt120",
            "subject:Patient.name=SMITH",
            "code",
        ],
        source_ip="10.1.2.3",
    )
    AuditWriter(engine).record(record)
    (row,) = _rows(engine, client_id)
    assert row.query_params == "code value-quantity subject:Patient.name"
    event = audit_event_resource(row)
    text_form = json.dumps(event)
    for secret in ("8867-4", "loinc", "gt120", "SMITH"):
        assert secret not in text_form
    assert event["resourceType"] == "AuditEvent" and event["id"] == str(row.id)
    assert event["type"]["code"] == "rest" and event["subtype"][0]["code"] == "search-type"
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["recorded"].endswith("Z")
    user, client = event["agent"]
    assert user == {
        "who": {"reference": "Practitioner/9"},
        "requestor": True,
        "network": {"address": "10.1.2.3", "type": "2"},
    }
    assert client["who"]["identifier"]["value"] == client_id and client["requestor"] is False
    query, patient = event["entity"]
    assert query["type"]["code"] == "Observation" and query["role"]["code"] == "24"
    assert query["detail"] == [
        {"type": "query-parameter-names", "valueString": "code,value-quantity,subject:Patient.name"}
    ]
    assert patient["what"] == {"reference": "Patient/pat-1"}
    assert event["source"]["observer"] == {"display": "fhirlake"}


@pytest.mark.parametrize(
    ("interaction", "status", "action", "outcome", "subtype"),
    [
        ("read", 200, "R", "0", "read"),
        ("create", 201, "C", "0", "create"),
        ("update", 403, "U", "4", "update"),
        ("delete", 500, "D", "8", "delete"),
        ("export", 202, "R", "0", "operation"),
        ("search-compartment", 200, "R", "0", "search"),
        ("login", 401, "E", "4", "110122"),
    ],
)
def test_rendering_codes(interaction: str, status: int, action: str, outcome: str, subtype: str) -> None:
    row = AuditRecord(interaction, status, "Observation", ("a", "b"), client_id="c").row()
    row["id"] = 7
    event = audit_event_resource(row)
    assert (event["action"], event["outcome"], event["subtype"][0]["code"]) == (action, outcome, subtype)
    assert [e["what"]["reference"] for e in event["entity"]] == ["Observation/a", "Observation/b"]


def test_search_audit(engine: Engine) -> None:
    client_id = marker()
    writer = AuditWriter(engine)
    base = datetime(2031, 5, 17, 10, 0, tzinfo=UTC)
    specs = [
        ("read", 200, "Patient", "p1", base),
        ("search-type", 200, "Observation", "p1", base + timedelta(hours=1)),
        ("read", 403, "Observation", "p2", base + timedelta(days=1)),
        ("create", 201, "Condition", "p2", base + timedelta(days=2)),
        ("delete", 500, "Condition", None, base + timedelta(days=40)),
    ]
    for interaction, status, rtype, patient, when in specs:
        writer.record(
            AuditRecord(interaction, status, rtype, client_id=client_id, patient_id=patient, recorded=when)
        )
    writer.close()

    def ids(**params: object) -> list[str]:
        with engine.connect() as conn:
            bundle = search_audit(conn, {"agent": client_id, **params}, base_url="https://h/r4")  # type: ignore[dict-item]
        assert bundle["type"] == "searchset"
        return [e["resource"]["subtype"][0]["code"] + ":" + e["resource"]["outcome"] for e in bundle["entry"]]

    assert len(ids()) == 5
    assert ids(**{"entity-type": "Observation"}) == ["search-type:0", "read:4"]
    assert ids(patient="Patient/p2") == ["read:4", "create:0"]
    assert ids(outcome="4,8") == ["read:4", "delete:8"]
    assert ids(action="C") == ["create:0"]
    assert ids(subtype="read") == ["read:0", "read:4"]
    assert ids(date="2031-05-17") == ["read:0", "search-type:0"]
    assert ids(date=["ge2031-05-18", "lt2031-06"]) == ["read:4", "create:0"]
    assert ids(date="gt2031-05") == ["delete:8"]
    assert ids(date="2031-05-17T11:00:00Z") == ["search-type:0"]
    assert ids(_sort="-date", _count="2") == ["delete:8", "create:0"]
    # keyset paging: follow next links to the end
    seen: list[str] = []
    params: dict = {"agent": client_id, "_count": "2", "_total": "accurate"}
    pages = 0
    while True:
        with engine.connect() as conn:
            bundle = search_audit(conn, params, base_url="https://h/r4")
        assert bundle["total"] == 5
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        pages += 1
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        params = dict(parse_qsl(urlsplit(nxt[0]).query))
    assert pages == 3 and len(seen) == len(set(seen)) == 5
    with engine.connect() as conn:
        first = read_audit(conn, seen[0])
        assert first is not None and first["id"] == seen[0]
        assert read_audit(conn, "0") is None and read_audit(conn, "x'; drop table audit_event; --") is None
        for bad in (
            {"code": "x"},
            {"date": "yesterday"},
            {"outcome": "3"},
            {"_count": "-1"},
            {"_cursor": "abc"},
        ):
            with pytest.raises(AuditSearchError):
                search_audit(conn, bad)
        # values are data, never SQL
        assert search_audit(conn, {"agent": "x' OR '1'='1"})["entry"] == []
        assert conn.execute(text("SELECT count(*) FROM audit_event")).scalar_one() >= 5
