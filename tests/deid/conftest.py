from __future__ import annotations

from pathlib import Path

import pytest

from fhirlake.deid import DeidKeys

HERE = Path(__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
VECTORS = HERE / "anonymizer-vectors"  # MIT, from microsoft/Tools-for-Health-Data-Anonymization
SYNTHEA = SHARED / "synthea"
TEST_SECRET = "unit-test-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def keys() -> DeidKeys:
    return DeidKeys(TEST_SECRET)
