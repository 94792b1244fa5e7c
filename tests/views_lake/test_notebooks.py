"""Every notebook in notebooks/ runs end to end against a lake built from the Synthea set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .helpers import synthea_resources

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
DIABETES_CODES = {"44054006", "15777000", "368581000119106"}


def _outputs(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(json.dumps(output.get("data", {})))
    return "\n".join(texts)


def test_there_is_a_notebook() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, synthea_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIRLAKE_LAKE_DIR", str(synthea_lake))
    monkeypatch.setenv("FHIRLAKE_NOTEBOOK_OUTPUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _outputs(notebook)
    assert "Traceback" not in text and "Error" not in text.split("views in the lake")[0]
    if path.name == "diabetes_hba1c_cohort.ipynb":
        cohort = {c["subject"]["reference"].split("/")[-1].removeprefix("urn:uuid:")
                  for c in synthea_resources("Condition")
                  if c["code"]["coding"][0]["code"] in DIABETES_CODES}
        assert re.search(rf"\b{len(cohort)} patients in the cohort", text), text[:2000]
        results = [o for o in synthea_resources("Observation")
                   if o["code"]["coding"][0]["code"] == "4548-4"
                   and o["subject"]["reference"].split("/")[-1].removeprefix("urn:uuid:") in cohort]
        assert f"{len(results)} HbA1c results" in text
        figure = tmp_path / "hba1c_trend.png"
        assert figure.exists() and figure.stat().st_size > 10_000
