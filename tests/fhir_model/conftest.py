"""Parametrization over the official R4 examples and the Synthea sets."""

from __future__ import annotations

import pytest
from fhir_model_data import official_examples, synthea_files


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "example_name" in metafunc.fixturenames:
        metafunc.parametrize("example_name", sorted(official_examples()))
    if "synthea_file" in metafunc.fixturenames:
        files = synthea_files()
        metafunc.parametrize("synthea_file", files, ids=[f"{p.parent.name}/{p.name}" for p in files])


@pytest.fixture
def example(example_name: str) -> dict:
    return official_examples()[example_name]
