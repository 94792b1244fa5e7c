"""FHIRPath conditions and expressions used by rules (`where(...)`, generalize cases), compiled
once by fhirlake's FHIRPath engine. JSON primitives are handed over as typed FHIRPath values
(dates as FhirDate, decimals as Decimal) so that `$this >= @2010-01-01` compares as dates."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fhirlake.deid.errors import DeidProcessingError


def _engine():
    from fhirlake.fhir import fhirpath

    return fhirpath


def compile_expression(text: str) -> Callable[[Any, Any], list]:
    """Compile; raises FhirPathError (FhirPathSyntaxError) when the text is not valid FHIRPath."""
    return _engine().compile_path(text)


def typed_value(value: Any, type_code: str) -> Any:
    fp = _engine()
    if isinstance(value, str):
        if type_code == "date":
            return fp.FhirDate.parse(value) or value
        if type_code in ("dateTime", "instant"):
            return fp.FhirDateTime.parse(value) or value
        if type_code == "time":
            return fp.FhirTime.parse(value) or value
    if type_code == "decimal" and isinstance(value, float):
        return Decimal(repr(value))
    return value


def evaluate(expr: Callable[[Any, Any], list], node: Any, type_code: str, resource: Any) -> list:
    fp = _engine()
    try:
        return expr(typed_value(node, type_code), {"resource": resource, "rootResource": resource})
    except fp.FhirPathError:
        # the engine's message may quote data values: do not carry it along
        raise DeidProcessingError("FHIRPath evaluation failed") from None


def is_true(result: list) -> bool:
    return len(result) == 1 and result[0] is True


def to_json(result: list, type_code: str) -> Any:
    """A generalize result back to a JSON primitive of the element's type."""
    fp = _engine()
    if len(result) != 1:
        raise DeidProcessingError("a generalize expression must give exactly one value")
    value = getattr(result[0], "value", result[0])
    if isinstance(value, fp.FhirDate | fp.FhirDateTime | fp.FhirTime):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if type_code in ("integer", "unsignedInt", "positiveInt") else float(value)
    if isinstance(value, bool | int | float | str):
        return value
    raise DeidProcessingError("a generalize expression gave a value that is not a primitive")
