"""Randomized oracle test: queries built from real values of the 100-patient Synthea set; the
expected result of each is computed independently by evaluating the parameter's official FHIRPath
expression with fhirpathpy over every loaded resource, then compared with search (all pages)."""

from __future__ import annotations

import gzip
import random
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import orjson
import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models

sys.path.insert(0, str(Path(__file__).parent))
from store_helper import bulk_load, clear_all  # noqa: E402

from fhirlake.search.registry import registry  # noqa: E402
from fhirlake.search.service import SearchRequest, search  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
SYNTHEA = SHARED / "synthea" / "smart-generated-sample-data-r4-100"
BASE = "http://oracle.test/fhir"
QUERIES_PER_PARAM = 12

# (resource type, parameter code); parameters whose expressions use resolve() are left out
# because fhirpathpy does not implement it.
PARAMS = [
    ("Observation", "code"), ("Observation", "subject"), ("Observation", "date"), ("Observation", "value-quantity"),
    ("Observation", "category"), ("Condition", "code"), ("Condition", "clinical-status"), ("Condition", "onset-date"),
    ("Patient", "gender"), ("Patient", "birthdate"), ("Patient", "family"), ("Patient", "address-city"),
    ("Encounter", "date"), ("Encounter", "class"), ("Procedure", "code"), ("Immunization", "vaccine-code"),
    ("MedicationRequest", "status"), ("MedicationRequest", "subject"), ("Practitioner", "name"),
]


def _load() -> dict[str, list[dict]]:
    by_type: dict[str, list[dict]] = {}
    for path in sorted(SYNTHEA.glob("*.ndjson.gz")):
        for line in gzip.open(path):
            res = orjson.loads(line)
            by_type.setdefault(res["resourceType"], []).append(res)
    return by_type


@pytest.fixture(scope="module")
def synthea(engine):
    by_type = _load()
    everything = [r for rs in by_type.values() for r in rs]
    with engine.begin() as conn:
        clear_all(conn)
        for i in range(0, len(everything), 2000):
            bulk_load(conn, everything[i:i + 2000])
    return by_type


# ---------------------------------------------------------------- the oracle's own value logic


def _interval(text: str) -> tuple[datetime, datetime]:
    if len(text) == 4:
        lo = datetime(int(text), 1, 1, tzinfo=UTC)
        return lo, datetime(int(text) + 1, 1, 1, tzinfo=UTC)
    if len(text) == 10:
        lo = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        return lo, lo + timedelta(days=1)
    lo = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return lo, lo + timedelta(seconds=1)


def _value_interval(v) -> tuple[datetime, datetime]:
    if isinstance(v, dict):  # Period
        lo = _interval(v["start"])[0] if "start" in v else datetime.min.replace(tzinfo=UTC)
        hi = _interval(v["end"])[1] if "end" in v else datetime.max.replace(tzinfo=UTC)
        return lo, hi
    return _interval(v)


def _date_match(prefix: str, search_value: str, v) -> bool:
    slo, shi = _interval(search_value)
    lo, hi = _value_interval(v)
    contained = lo >= slo and hi <= shi
    return {"eq": contained, "ge": hi > shi or contained, "lt": lo < slo, "le": lo < slo or contained, "gt": hi > shi}[prefix]


def _codings(v) -> list[tuple[str | None, str]]:
    if isinstance(v, str):
        return [(None, v)]
    if "coding" in v:
        return [(c.get("system"), c.get("code")) for c in v["coding"]]
    return [(v.get("system"), v.get("code"))]


def _strings(v) -> list[str]:
    if isinstance(v, str):
        return [v]
    out = []
    for key in ("family", "given", "prefix", "suffix", "text", "line", "city", "state", "postalCode", "country"):
        x = v.get(key)
        out.extend(x if isinstance(x, list) else [x] if x else [])
    return out


def _queries(rng: random.Random, ptype: str, values_by_id: dict[str, list]) -> list[tuple[str, set[str]]]:
    pool = [(rid, v) for rid, vs in values_by_id.items() for v in vs]
    if not pool:
        return []
    out = []
    for _ in range(QUERIES_PER_PARAM):
        _rid, v = rng.choice(pool)
        if ptype == "token":
            system, code = rng.choice(_codings(v))
            q = f"{system}|{code}" if system and rng.random() < 0.5 else code
            expected = {i for i, vs in values_by_id.items()
                        if any(c == code and (system is None or "|" not in q or s == system) for x in vs for s, c in _codings(x))}
        elif ptype == "reference":
            q = v["reference"]
            expected = {i for i, vs in values_by_id.items() if any(x.get("reference") == q for x in vs)}
        elif ptype == "date":
            raw = v.get("start", "1900") if isinstance(v, dict) else v
            prefix = rng.choice(["eq", "ge", "lt", "le", "gt"])
            q_value = raw[: rng.choice([4, 10])]
            q = f"{prefix}{q_value}"
            expected = {i for i, vs in values_by_id.items() if any(_date_match(prefix, q_value, x) for x in vs)}
        elif ptype == "quantity":
            number = round(float(v["value"]))
            prefix = rng.choice(["gt", "lt", "ge", "le"])
            q = f"{prefix}{number}"
            op = {"gt": float.__gt__, "lt": float.__lt__, "ge": float.__ge__, "le": float.__le__}[prefix]
            expected = {i for i, vs in values_by_id.items() if any("value" in x and op(float(x["value"]), float(number)) for x in vs)}
        else:  # string: starts-with, case-insensitive
            word = rng.choice(_strings(v))
            q = word[: rng.randint(1, len(word))]
            expected = {i for i, vs in values_by_id.items() if any(s.lower().startswith(q.lower()) for x in vs for s in _strings(x))}
        out.append((q, expected))
    return out


def _all_pages(engine, res_type: str, params: list[tuple[str, str]]) -> list[str]:
    found: list[str] = []
    with engine.connect() as conn:
        while True:
            bundle = orjson.loads(search(conn, SearchRequest(res_type, params, BASE)))
            found += [e["resource"]["id"] for e in bundle.get("entry", [])]
            nxt = [lnk["url"] for lnk in bundle["link"] if lnk["relation"] == "next"]
            if not nxt:
                return found
            params = parse_qsl(nxt[0].split("?", 1)[1])


@pytest.mark.parametrize(("res_type", "code"), PARAMS, ids=[f"{t}.{c}" for t, c in PARAMS])
def test_oracle(synthea, engine, res_type, code):
    param = registry().get(res_type, code)
    assert param is not None and param.expression
    values_by_id = {r["id"]: evaluate(r, param.expression, [], models["r4"]) for r in synthea[res_type]}
    rng = random.Random(f"{res_type}.{code}")
    queries = _queries(rng, param.type, values_by_id)
    assert queries, f"no values for {res_type}.{code} in the data"
    for q, expected in queries:
        sort = rng.choice([[], [("_sort", "-date" if "date" in registry().params(res_type) else "_id")]])
        got = _all_pages(engine, res_type, [(code, q), ("_count", "37"), *sort])
        assert len(got) == len(set(got)), f"{res_type}?{code}={q}: a page repeated a resource"
        assert set(got) == expected, f"{res_type}?{code}={q}: {len(got)} found, {len(expected)} expected"


def test_oracle_and_of_two_parameters(synthea, engine):
    reg = registry()
    code_expr, subj_expr = reg.get("Observation", "code").expression, reg.get("Observation", "subject").expression
    subjects = {r["id"]: {v.get("reference") for v in evaluate(r, subj_expr, [], models["r4"])} for r in synthea["Observation"]}
    codes = {r["id"]: {(c.get("system"), c.get("code")) for v in evaluate(r, code_expr, [], models["r4"]) for c in v.get("coding", [])}
             for r in synthea["Observation"]}
    rng = random.Random(7)
    for obs in rng.sample(synthea["Observation"], 15):
        subject, coding = obs["subject"]["reference"], obs["code"]["coding"][0]
        expected = {i for i in subjects if subject in subjects[i] and (coding["system"], coding["code"]) in codes[i]}
        got = _all_pages(engine, "Observation", [("subject", subject), ("code", f"{coding['system']}|{coding['code']}"),
                                                 ("_sort", "-date"), ("_count", "3")])
        assert sorted(got) == sorted(expected) and len(got) == len(set(got))
