"""Structural validation of ViewDefinitions: each error names the offending element."""

from __future__ import annotations

import pytest

from fhirlake.views import ViewDefinitionError
from fhirlake.views.model import parse_view


def _view(**extra) -> dict:
    view = {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}
    view.update(extra)
    return view


@pytest.mark.parametrize(
    ("view", "path", "words"),
    [
        ({}, "resource", "required"),
        ({"resource": "Patient"}, "select", "at least one"),
        (_view(status="final"), "status", "status"),
        (_view(select=[{"forEach": 1, "column": [{"name": "a", "path": "id"}]}]), "select[0].forEach", "string"),
        (_view(select=[{"forEach": "name", "forEachOrNull": "name", "column": [{"name": "a", "path": "id"}]}]),
         "select[0]", "only one"),
        (_view(select=[{"column": [{"name": "a", "path": "id"}, {"name": "a", "path": "gender"}]}]),
         "select[0].column[1].name", "duplicate"),
        (_view(select=[{"column": [{"name": "a", "path": "id"}]}, {"column": [{"name": "a", "path": "id"}]}]),
         "select[1].column[0].name", "duplicate"),
        (_view(select=[{"column": [{"name": "1abc", "path": "id"}]}]), "select[0].column[0].name", "letter"),
        (_view(select=[{"column": [{"name": "a"}]}]), "select[0].column[0].path", "required"),
        (_view(select=[{"column": [{"name": "a", "path": "id", "collection": "yes"}]}]),
         "select[0].column[0].collection", "true or false"),
        (_view(select=[{"column": [{"name": "a", "path": "id", "type": "HumanName"}]}]),
         "select[0].column[0].type", "primitive"),
        (_view(select=[{"colum": []}]), "select[0].colum", "unknown"),
        (_view(select=[{"unionAll": [{"column": [{"name": "a", "path": "id"}]},
                                     {"column": [{"name": "b", "path": "id"}]}]}]),
         "select[0].unionAll[1]", "same columns"),
        (_view(constant=[{"name": "x"}]), "constant[0]", "exactly one"),
        (_view(constant=[{"name": "x", "valueInteger": "1"}]), "constant[0].valueInteger", "integer"),
        (_view(constant=[{"name": "x", "valueString": "a"}, {"name": "x", "valueString": "b"}]),
         "constant[1]", "duplicate"),
        (_view(where=[{"description": "no path"}]), "where[0].path", "required"),
    ],
)
def test_invalid_views_name_the_element(view: dict, path: str, words: str) -> None:
    with pytest.raises(ViewDefinitionError) as info:
        parse_view(view)
    assert info.value.path == path
    assert words in info.value.message


def test_output_column_order_follows_the_spec() -> None:
    view = _view(
        select=[
            {
                "column": [{"name": "a", "path": "'A'"}],
                "select": [{"forEach": "name", "column": [{"name": "c", "path": "'C'"}]}],
                "unionAll": [{"column": [{"name": "e", "path": "'E1'"}]}, {"column": [{"name": "e", "path": "'E2'"}]}],
            },
            {"column": [{"name": "g", "path": "'G'"}]},
        ]
    )
    assert [c.name for c in parse_view(view).output_columns()] == ["a", "c", "e", "g"]


def test_type_urls_are_normalized() -> None:
    view = _view(select=[{"column": [{"name": "a", "path": "id",
                                      "type": "http://hl7.org/fhir/StructureDefinition/dateTime"}]}])
    assert parse_view(view).output_columns()[0].declared_type == "dateTime"
