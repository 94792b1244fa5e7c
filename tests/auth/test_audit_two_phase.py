"""Two-phase audit: the access is durable before the answer, its outcome follows (issue 7).

Writer level: outcomes folded into a record still queued, or written as a later update on the right
row, an access whose outcome never came reads as "outcome unknown", commits group concurrent
requests. Server level (Flask app with auth on, tokens signed by the tests' own key): one row per
request, reads, writes, refused and unauthenticated requests alike, each with its outcome.
"""

from __future__ import annotations

import gzip
import json
import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from fhirlake.api.app import create_app
from fhirlake.audit import OUTCOME_UNKNOWN, AuditRecord, AuditWriter, audit_event_resource, search_audit
from fhirlake.config import Settings
from fhirlake.store.schema import audit_event

from .conftest import SigningKey, jwks_of, now, run_in_threads

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
PATIENTS = SHARED / "synthea" / "msft-anonymization-samples-r4" / "Patient.ndjson.gz"
ISSUER = "https://issuer.two-phase.example.org"
AUDIENCE = "https://two-phase.example.org/r4"


def marker() -> str:
    return "two-phase-" + secrets.token_hex(4)


def rows_of(engine: Engine, client_id: str) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(audit_event).where(audit_event.c.client_id == client_id).order_by(audit_event.c.id)
        ).all()


def started(client_id: str, *ids: str) -> AuditRecord:
    return AuditRecord("read", OUTCOME_UNKNOWN, "Patient", ids, ("name",), client_id=client_id)


def test_outcome_folds_into_a_record_still_queued(engine: Engine) -> None:
    writer = AuditWriter(engine, commit_interval=0.5)  # the second record waits half a second
    client_id = marker()
    writer.submit(started(client_id, "first")).wait()
    pending = writer.submit(started(client_id, "second"))
    assert writer.finish(pending, 404, "Not Found", ["second", "found-later"]) == pending.audit_id
    writer.close()
    first, second = rows_of(engine, client_id)
    assert (second.id, second.outcome, second.outcome_desc) == (pending.audit_id, 404, "Not Found")
    assert second.resource_ids == "second found-later"
    assert writer.outcomes == 0  # no update was needed
    assert first.outcome == OUTCOME_UNKNOWN


def test_outcome_of_a_committed_record_is_an_update_of_that_row(engine: Engine) -> None:
    writer = AuditWriter(engine, commit_interval=0)
    client_id = marker()
    pending = writer.submit(started(client_id, "p1"))
    audit_id = pending.wait()
    assert rows_of(engine, client_id)[0].outcome == OUTCOME_UNKNOWN  # durable before its outcome
    writer.finish(pending, 403, "Forbidden")
    writer.finish(pending, 200)  # a second outcome for one access is ignored
    writer.close()
    (row,) = rows_of(engine, client_id)
    assert (row.id, row.outcome, row.outcome_desc, row.resource_ids) == (audit_id, 403, "Forbidden", "p1")
    assert writer.outcomes == 1


def test_an_access_without_outcome_says_so(engine: Engine) -> None:
    writer = AuditWriter(engine, commit_interval=0)
    client_id = marker()
    lost = writer.submit(started(client_id, "lost"))  # the process "dies" before answering
    lost.wait()
    done = writer.submit(started(client_id, "done"))
    writer.finish(done, 200)
    writer.close()
    unknown, success = (audit_event_resource(r) for r in rows_of(engine, client_id))
    assert "outcome" not in unknown and "unknown" in unknown["outcomeDesc"]
    assert success["outcome"] == "0" and success["outcomeDesc"] == "200"
    with engine.connect() as conn:
        found = search_audit(conn, {"agent": client_id, "outcome": "0"})
    assert [e["resource"]["id"] for e in found["entry"]] == [success["id"]]  # unknown is no success


def test_concurrent_requests_get_their_own_outcome_and_share_commits(engine: Engine) -> None:
    writer = AuditWriter(engine)
    client_id = marker()
    statuses = (200, 404, 500, 403)
    threads_n, per_thread = 16, 25

    def request(n: int) -> None:
        rng = random.Random(n)
        for i in range(per_thread):
            pending = writer.submit(started(client_id, f"t{n}-{i}"))
            time.sleep(rng.random() * 0.004)  # the request's own work, overlapping the commit
            writer.finish(pending, statuses[(n + i) % 4])

    errors = run_in_threads(request, threads_n)
    writer.close()
    assert errors == []
    rows = rows_of(engine, client_id)
    assert len(rows) == threads_n * per_thread
    for row in rows:  # each outcome landed on its own access: ids mapped right
        n, i = (int(x) for x in row.resource_ids[1:].split("-"))
        assert row.outcome == statuses[(n + i) % 4], row.resource_ids
    assert writer.records == threads_n * per_thread
    assert writer.records / writer.batches >= 2  # concurrent requests shared commits


# -- through the server ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return SigningKey.rsa("RS256")


@pytest.fixture
def server(engine: Engine, tmp_path: Path, signing_key: SigningKey) -> Iterator[tuple[FlaskClient, AuditWriter]]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_of(signing_key)))
    settings = Settings(base_url=AUDIENCE, data_dir=tmp_path, auth_enabled=True, auth_issuer=ISSUER,
                        auth_jwks=str(jwks), auth_audience=AUDIENCE)
    app = create_app(settings, engine)
    writer = app.extensions["fhirlake.auth"].audit
    yield app.test_client(), writer
    writer.close()


def bearer(key: SigningKey, client_id: str, scope: str) -> dict[str, str]:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": client_id, "client_id": client_id, "scope": scope,
              "iat": now(), "exp": now() + 300}
    return {"Authorization": "Bearer " + key.sign(claims)}


def a_patient() -> dict:
    with gzip.open(PATIENTS, "rt") as fh:
        patient = json.loads(fh.readline())
    patient["id"] = marker()
    return patient


def test_every_request_leaves_one_row_with_its_outcome(
    server: tuple[FlaskClient, AuditWriter], engine: Engine, signing_key: SigningKey
) -> None:
    client, writer = server
    client_id = marker()
    writes = bearer(signing_key, client_id, "system/Patient.cruds")
    reads_only = bearer(signing_key, client_id, "system/Observation.rs")
    patient = a_patient()
    put = client.put(f"/Patient/{patient['id']}", json=patient,
                     headers={**writes, "Content-Type": "application/fhir+json"})
    assert put.status_code == 201
    assert client.get(f"/Patient/{patient['id']}", headers=writes).status_code == 200
    assert client.get("/Patient/not-there-at-all", headers=writes).status_code == 404
    assert client.get(f"/Patient/{patient['id']}", headers=reads_only).status_code == 403
    writer.close()  # the outcomes are asynchronous: let them land
    rows = rows_of(engine, client_id)
    assert [(r.interaction, r.resource_ids, r.outcome) for r in rows] == [
        ("update", patient["id"], 200),  # the write: one row, committed with the change
        ("read", patient["id"], 200),
        ("read", "not-there-at-all", 404),
        ("read", patient["id"], 403),
    ]
    assert rows[2].outcome_desc == "Not Found"


def test_unauthenticated_requests_are_audited_too(
    server: tuple[FlaskClient, AuditWriter], engine: Engine
) -> None:
    client, writer = server
    path = f"/Patient/{marker()}"
    answer = client.get(path, headers={"Authorization": "Bearer not-a-token"}, query_string={"name": "SMITH"})
    assert answer.status_code == 401
    writer.close()
    with engine.connect() as conn:
        (row,) = conn.execute(
            select(audit_event).where(audit_event.c.resource_ids == path.rsplit("/", 1)[1])
        ).all()
    assert (row.client_id, row.interaction, row.outcome, row.query_params) == (None, "read", 401, "name")
    assert "SMITH" not in json.dumps(audit_event_resource(row))
