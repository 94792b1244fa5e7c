"""Run the SQL-on-FHIR v2 conformance suite (its JSON test files) and build its test-report JSON.

Report format: ``{"<file>.json": {"tests": [{"name": title, "result": {"passed": bool, "reason"?: str}}]}}``.
Rows are compared as the suite requires: without regard to order, values strictly (1 is not "1",
but 5 equals 5.0), missing values as explicit nulls. Rows go through the engine's JSON writer, so
what is compared is what a client of ``fhirlake views`` would receive.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from .compiler import compile_view
from .errors import ViewDefinitionError
from .writers import write_rows


def suite_files(suite_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(suite_dir).glob("*.json") if p.name != "tests.schema.json")


def evaluate_to_json_rows(view_definition: dict, resources: Iterable[dict]) -> tuple[list[str], list[dict]]:
    """Compile and run a view; the rows as a JSON client receives them, and the column names."""
    view = compile_view(view_definition)
    buffer = io.BytesIO()
    write_rows(view.to_arrow(resources), "ndjson", buffer, schema=view.schema)
    rows = [json.loads(line) for line in buffer.getvalue().splitlines() if line]
    return view.schema.names, rows


def run_test(test: dict, resources: list[dict]) -> tuple[bool, str | None]:
    """(passed, reason when it failed)."""
    try:
        columns, rows = evaluate_to_json_rows(test["view"], resources)
    except ViewDefinitionError as exc:
        if test.get("expectError"):
            return True, None
        return False, f"unexpected error: {exc}"
    if test.get("expectError"):
        return False, f"expected an error, got {len(rows)} rows"
    if "expectColumns" in test and columns != test["expectColumns"]:
        return False, f"columns {columns} != expected {test['expectColumns']}"
    if "expectCount" in test:
        if len(rows) != test["expectCount"]:
            return False, f"{len(rows)} rows, expected {test['expectCount']}"
        return True, None
    expected = test.get("expect", [])
    got, want = Counter(map(_row_key, rows)), Counter(map(_row_key, expected))
    if got != want:
        missing = list((want - got).elements())[:3]
        extra = list((got - want).elements())[:3]
        return False, f"rows differ; missing {missing}, unexpected {extra}"
    return True, None


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        return ["#number", str(Decimal(str(value)).normalize())]
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return repr(value)


def _row_key(row: dict) -> str:
    return json.dumps(_canonical(row), sort_keys=True)


def run_suite(suite_dir: str | Path) -> dict:
    """Run every test of every file in `suite_dir`; the suite's test-report JSON as a dict."""
    report: dict[str, dict] = {}
    for path in suite_files(suite_dir):
        suite = json.loads(path.read_text(encoding="utf-8"))
        results = []
        for test in suite["tests"]:
            passed, reason = run_test(test, suite.get("resources", []))
            result: dict[str, Any] = {"passed": passed}
            if reason:
                result["reason"] = reason
            results.append({"name": test["title"], "result": result})
        report[path.name] = {"tests": results}
    return report


def summarize(report: dict) -> tuple[int, int]:
    """(passed, total) over a report."""
    outcomes = [t["result"]["passed"] for suite in report.values() for t in suite["tests"]]
    return sum(outcomes), len(outcomes)
