"""All 134 tests of the official SQL-on-FHIR v2 suite (vendored in sof_suite/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhirlake.views.conformance import run_suite, run_test, suite_files, summarize

SUITE = Path(__file__).resolve().parent / "sof_suite"


def _cases() -> list:
    cases = []
    for path in suite_files(SUITE):
        suite = json.loads(path.read_text(encoding="utf-8"))
        for test in suite["tests"]:
            cases.append(pytest.param(test, suite["resources"], id=f"{path.stem}::{test['title']}"))
    return cases


CASES = _cases()


def test_suite_is_complete() -> None:
    assert len(suite_files(SUITE)) == 22
    assert len(CASES) == 134


@pytest.mark.parametrize(("test", "resources"), CASES)
def test_sof(test: dict, resources: list[dict]) -> None:
    passed, reason = run_test(test, resources)
    assert passed, reason


def test_report_format() -> None:
    report = run_suite(SUITE)
    assert sorted(report) == [p.name for p in suite_files(SUITE)]
    first = report["basic.json"]["tests"][0]
    assert first["name"] == "basic attribute"
    assert first["result"]["passed"] is True
    passed, total = summarize(report)
    assert total == 134
    assert passed == total
