"""History at instance, type and system level with _since, _at, _count and paging."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.api.helpers import FHIR_JSON, create


def _family() -> str:
    return "H" + uuid.uuid4().hex[:8]


def test_instance_history_newest_first_with_deletes(client: httpx.Client) -> None:
    p = create(client, {"resourceType": "Patient", "name": [{"family": _family()}]})
    for g in ("male", "female"):
        p["gender"] = g
        client.put(f"/Patient/{p['id']}", json=p, headers=FHIR_JSON)
    client.delete(f"/Patient/{p['id']}")
    h = client.get(f"/Patient/{p['id']}/_history").json()
    assert h["type"] == "history" and h["total"] == 4
    methods = [e["request"]["method"] for e in h["entry"]]
    assert methods == ["DELETE", "PUT", "PUT", "POST"]
    assert "resource" not in h["entry"][0]
    assert [e["response"]["etag"] for e in h["entry"]] == ['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']


def test_type_history_paging_and_since(client: httpx.Client) -> None:
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    ids = {create(client, {"resourceType": "Device", "id": "x", "status": "active"})["id"] for _ in range(7)}
    seen: list[str] = []
    url: str | None = "/Device/_history"
    params: dict | None = {"_count": 3, "_since": before}
    pages = 0
    while url:
        page = client.get(url, params=params).json()
        params = None
        pages += 1
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0] if nxt else None
    assert pages == 3
    assert set(seen) == ids and len(seen) == 7
    future = client.get("/Device/_history", params={"_since": "2999-01-01"}).json()
    assert future.get("entry", []) == []


def test_history_at(client: httpx.Client) -> None:
    p = create(client, {"resourceType": "Patient", "gender": "male"})
    time.sleep(1.1)
    mid = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    p["gender"] = "female"
    client.put(f"/Patient/{p['id']}", json=p, headers=FHIR_JSON)
    at_mid = client.get(f"/Patient/{p['id']}/_history", params={"_at": mid}).json()
    assert [e["resource"]["gender"] for e in at_mid["entry"]] == ["male"]


def test_system_history_and_bad_params(client: httpx.Client) -> None:
    p = create(client, {"resourceType": "Patient", "name": [{"family": _family()}]})
    h = client.get("/_history", params={"_count": 5}).json()
    assert h["entry"][0]["resource"]["id"] == p["id"] and len(h["entry"]) == 5
    assert client.get("/_history", params={"_since": "yesterday"}).status_code == 400
    assert client.get("/_history", params={"_count": "-1"}).status_code == 400
    assert client.get("/_history", params={"foo": "1"}).status_code == 400
    assert client.get("/_history", params={"foo": "1"}, headers={"Prefer": "handling=lenient"}).status_code == 200
    assert client.get("/Patient/nope/_history").status_code == 404


def test_history_at_with_paging_sees_only_versions_current_then(client: httpx.Client) -> None:
    time.sleep(1.1)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    a = create(client, {"resourceType": "Substance", "code": {"text": "a1"}})
    b = create(client, {"resourceType": "Substance", "code": {"text": "b1"}})
    a["code"] = {"text": "a2"}
    client.put(f"/Substance/{a['id']}", json=a, headers=FHIR_JSON)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
    seen: list[str] = []
    url: str | None = "/Substance/_history"
    params: dict | None = {"_at": now, "_since": since, "_count": 1}
    while url:
        page = client.get(url, params=params).json()
        params = None
        seen += [e["resource"]["code"]["text"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0] if nxt else None
    # only the versions current at _at, even on later pages (a1 was replaced by a2)
    assert sorted(seen) == ["a2", "b1"]
    assert b["id"] != a["id"]
