"""Two concurrent updates with the same If-Match must never both succeed."""

from __future__ import annotations

import threading

import httpx

from tests.api.helpers import FHIR_JSON, create, patient


def test_concurrent_if_match_updates(server) -> None:  # noqa: ANN001
    with httpx.Client(base_url=server.url) as c:
        p = create(c, patient("Race"))
    rounds, writers = 20, 6
    for round_no in range(rounds):
        barrier = threading.Barrier(writers)
        statuses: list[int] = []
        lock = threading.Lock()
        version = round_no + 1

        def writer(n: int, barrier: threading.Barrier = barrier, version: int = version,
                   statuses: list[int] = statuses, lock: threading.Lock = lock) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                body = {**p, "name": [{"family": f"w{n}"}]}
                barrier.wait()
                r = c.put(f"/Patient/{p['id']}", json=body, headers={**FHIR_JSON, "If-Match": f'W/"{version}"'})
                with lock:
                    statuses.append(r.status_code)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [412] * (writers - 1), statuses
    with httpx.Client(base_url=server.url) as c:
        assert c.get(f"/Patient/{p['id']}").json()["meta"]["versionId"] == str(rounds + 1)
        history = c.get(f"/Patient/{p['id']}/_history", params={"_count": 100}).json()
        assert history["total"] == rounds + 1


def test_concurrent_creates_with_same_client_id(server) -> None:  # noqa: ANN001
    writers = 6
    barrier = threading.Barrier(writers)
    statuses: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            barrier.wait()
            r = c.put("/Patient/same-id-race", json={**patient(), "id": "same-id-race"}, headers=FHIR_JSON)
            with lock:
                statuses.append(r.status_code)

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * (writers - 1) + [201]
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/Patient/same-id-race").json()["meta"]["versionId"] == str(writers)
