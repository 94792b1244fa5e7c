"""Turn extracted (value, FHIR type) pairs into rows of the typed index tables.

Row layouts (``rid`` is added by the caller):
  token     (pid, grp, system, code)
  string    (pid, grp, norm, exact)
  date      (pid, grp, lo, hi)                 half-open [lo, hi)
  number    (pid, grp, system, code, unit, lo, hi)   closed [lo, hi]; numbers and quantities
  reference (pid, target_type, target_id, url)
  uri       (pid, grp, uri)
"""

from __future__ import annotations

from typing import Any

from fhirlake.fhir import structure
from fhirlake.search.values import (
    DT_MAX,
    DT_MIN,
    NUM_MAX,
    NUM_MIN,
    date_range,
    normalize_string,
    to_decimal,
)

MAX_NORM = 255  # B-tree entries must stay small; prefix search beyond this is not meaningful


class Rows:
    """Row buffers for one batch, one list per index table."""

    __slots__ = ("token", "string", "date", "number", "reference", "uri")

    def __init__(self) -> None:
        self.token: list[tuple] = []
        self.string: list[tuple] = []
        self.date: list[tuple] = []
        self.number: list[tuple] = []
        self.reference: list[tuple] = []
        self.uri: list[tuple] = []


def add_string(rows: Rows, rid: int, pid: int | None, grp: int, text: Any) -> None:
    if pid is not None and isinstance(text, str) and text:
        rows.string.append((rid, pid, grp, normalize_string(text)[:MAX_NORM], text))


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def string_rows(rows: Rows, rid: int, pid: int, grp: int, value: Any, code: str) -> None:
    if isinstance(value, str):
        add_string(rows, rid, pid, grp, value)
    elif isinstance(value, dict):
        parts = _NAME_PARTS if code == "HumanName" else _ADDRESS_PARTS if code == "Address" else ("text", "value", "display")
        for part in parts:
            v = value.get(part)
            if isinstance(v, list):
                for x in v:
                    add_string(rows, rid, pid, grp, x)
            else:
                add_string(rows, rid, pid, grp, v)


def token_rows(rows: Rows, rid: int, pid: int, grp: int, value: Any, code: str, text_pid: int | None,
               of_type_pid: int | None) -> None:
    out = rows.token
    if isinstance(value, bool):
        out.append((rid, pid, grp, None, "true" if value else "false"))
    elif isinstance(value, str):
        out.append((rid, pid, grp, None, value))
    elif isinstance(value, (int, float)):
        out.append((rid, pid, grp, None, str(value)))
    elif isinstance(value, dict):
        if code == "CodeableConcept" or "coding" in value:
            for coding in value.get("coding", ()):
                if coding.get("code") is not None or coding.get("system") is not None:
                    out.append((rid, pid, grp, coding.get("system"), coding.get("code")))
                add_string(rows, rid, text_pid, grp, coding.get("display"))
            add_string(rows, rid, text_pid, grp, value.get("text"))
        elif code == "Identifier":
            out.append((rid, pid, grp, value.get("system"), value.get("value")))
            id_type = value.get("type")
            if isinstance(id_type, dict) and of_type_pid is not None:
                add_string(rows, rid, text_pid, grp, id_type.get("text"))
                for coding in id_type.get("coding", ()):
                    out.append((rid, of_type_pid, grp, coding.get("system"), f"{coding.get('code')}|{value.get('value')}"))
        elif code == "ContactPoint":
            out.append((rid, pid, grp, None, value.get("value")))
        elif code == "Reference":
            ident = value.get("identifier")
            if isinstance(ident, dict):
                out.append((rid, pid, grp, ident.get("system"), ident.get("value")))
        else:  # Coding, Quantity (system|code) and friends
            if value.get("code") is not None or value.get("system") is not None:
                out.append((rid, pid, grp, value.get("system"), value.get("code")))
            add_string(rows, rid, text_pid, grp, value.get("display"))


def _range_of(text: Any, upper: bool) -> Any:
    if not isinstance(text, str):
        return None
    r = date_range(text)
    if r is None:
        return None
    return r[1] if upper else r[0]


def date_rows(rows: Rows, rid: int, pid: int, grp: int, value: Any, code: str) -> None:
    if isinstance(value, str):
        r = date_range(value)
        if r:
            rows.date.append((rid, pid, grp, r[0], r[1]))
    elif isinstance(value, dict):
        if code == "Timing":
            events = [r for e in value.get("event", ()) if (r := date_range(e)) if isinstance(e, str)]
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if events:
                rows.date.append((rid, pid, grp, min(r[0] for r in events), max(r[1] for r in events)))
            elif isinstance(bounds, dict):
                date_rows(rows, rid, pid, grp, bounds, "Period")
        elif "start" in value or "end" in value:
            lo = _range_of(value.get("start"), False) or DT_MIN
            hi = _range_of(value.get("end"), True) or DT_MAX
            rows.date.append((rid, pid, grp, lo, hi))


def _quantity_bounds(q: dict) -> tuple[Any, Any] | None:
    v = to_decimal(q.get("value"))
    if v is None:
        return None
    comparator = q.get("comparator")
    if comparator in ("<", "<="):
        return NUM_MIN, v
    if comparator in (">", ">="):
        return v, NUM_MAX
    return v, v


def number_rows(rows: Rows, rid: int, pid: int, grp: int, value: Any, code: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = to_decimal(value)
        rows.number.append((rid, pid, grp, None, None, None, v, v))
    elif isinstance(value, dict):
        if code == "Range":
            low, high = value.get("low") or {}, value.get("high") or {}
            lo, hi = to_decimal(low.get("value")), to_decimal(high.get("value"))
            if lo is None and hi is None:
                return
            unit_of = low if lo is not None else high
            rows.number.append((rid, pid, grp, unit_of.get("system"), unit_of.get("code"), unit_of.get("unit"),
                                lo if lo is not None else NUM_MIN, hi if hi is not None else NUM_MAX))
        elif code == "Money":
            v = to_decimal(value.get("value"))
            if v is not None:
                rows.number.append((rid, pid, grp, "urn:iso:std:iso:4217", value.get("currency"), value.get("currency"), v, v))
        else:
            bounds = _quantity_bounds(value)
            if bounds:
                rows.number.append((rid, pid, grp, value.get("system"), value.get("code"), value.get("unit"), *bounds))


def parse_reference(ref: str) -> tuple[str | None, str | None]:
    """(type, id) of a literal reference, relative or absolute; (None, None) if not one."""
    if ref.startswith("#"):
        return None, None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and structure.is_resource_type(parts[-2]):
        return parts[-2], parts[-1]
    return None, None


def reference_rows(rows: Rows, rid: int, pid: int, value: Any, code: str, identifier_pid: int | None) -> None:
    if isinstance(value, str):  # canonical / uri
        target_type, target_id = parse_reference(value.split("|")[0])
        rows.reference.append((rid, pid, target_type, target_id, value))
        return
    if not isinstance(value, dict):
        return
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        target_type, target_id = parse_reference(ref)
        is_absolute = "://" in ref or ref.startswith("urn:")
        rows.reference.append((rid, pid, target_type, target_id, ref if is_absolute or target_type is None else None))
    ident = value.get("identifier")
    if isinstance(ident, dict) and identifier_pid is not None:
        rows.token.append((rid, identifier_pid, 0, ident.get("system"), ident.get("value")))


def uri_rows(rows: Rows, rid: int, pid: int, grp: int, value: Any) -> None:
    if isinstance(value, str) and value:
        rows.uri.append((rid, pid, grp, value[:2000]))


class CopyText:
    """The rows of one resource already in COPY text format, one block per index table, every line
    starting with ``PLACEHOLDER`` as its rid (``with_rid`` puts the real one in).

    A loader's parsing process formats rows so that the process writing them only copies bytes:
    formatting is about a third of the Python work of writing index rows, and rows travel between
    processes far cheaper as a few byte strings than as tuples."""

    __slots__ = ("blocks",)
    PLACEHOLDER = b"0"

    def __init__(self, blocks: dict[str, bytes]) -> None:
        self.blocks = blocks

    def has(self, table: str) -> bool:
        return bool(self.blocks.get(table))

    def with_rid(self, table: str, rid: bytes) -> bytes:
        block = self.blocks.get(table)
        if not block:
            return b""
        # A line break inside a value is written as the two characters \n: a real one only ends a
        # row, so every placeholder that follows a real one (or starts the block) is a rid.
        marker = b"\n" + self.PLACEHOLDER + b"\t"
        return (b"\n" + block).replace(marker, b"\n" + rid + b"\t")[1:]
