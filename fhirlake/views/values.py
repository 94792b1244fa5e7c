"""Turn FHIRPath result values into column cells of the column's Arrow type."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .types import INT32_TYPES


class CellTypeError(ValueError):
    """A value that cannot be a cell of the column's declared type."""


def _decimal_text(value: Any) -> str:
    if isinstance(value, bool):
        raise CellTypeError(f"boolean {value!r} is not a decimal")
    if isinstance(value, Decimal):
        # Exact text as parsed; never scientific notation for values JSON wrote without it.
        return str(value) if value.is_finite() else _fail(value, "decimal")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return _fail(value, "decimal")


def _string_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return _fail(value, "string")
    # FHIRPath dates/times/quantities print in their FHIRPath text form (ISO for dates/times).
    return str(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return _fail(value, "boolean")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        return _fail(value, "integer")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return _fail(value, "integer")


def _fail(value: Any, type_name: str) -> Any:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise CellTypeError(f"value {shown} is not a {type_name}")


def cell_converter(fhir_type: str) -> Callable[[Any], Any]:
    if fhir_type == "boolean":
        return _boolean
    if fhir_type in INT32_TYPES or fhir_type == "integer64":
        return _integer
    if fhir_type == "decimal":
        return _decimal_text
    return _string_text
