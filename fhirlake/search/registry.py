"""The R4 search parameters, per resource type, loaded once from the official definitions.

Every (resource type, parameter code) gets a stable 32-bit id (``pid``) derived from its name:
index rows carry it instead of text, which keeps the index tables and their B-trees compact and
needs no lookup table that could drift between processes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import orjson

from fhirlake.fhir import structure

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
SEARCH_PARAMETERS = RESOURCES / "search-parameters.json"
COMPARTMENTS = RESOURCES / "compartments"

# Parameters that the planner answers from the resource table itself (no index rows needed).
RESOURCE_COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})


def param_id(res_type: str, key: str) -> int:
    """Stable signed 32-bit id of an index key ("Observation", "code" or "code:text")."""
    value = zlib.crc32(f"{res_type}.{key}".encode())
    return value - (1 << 32) if value >= (1 << 31) else value


@dataclass(frozen=True)
class Component:
    definition: str
    expression: str
    type: str  # search type of the referenced parameter


@dataclass(frozen=True)
class SearchParam:
    res_type: str
    code: str
    type: str  # number date string token reference composite quantity uri special
    expression: str | None  # the part of the official expression that applies to res_type
    url: str
    description: str
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    pid: int = 0
    # composites: the pid under which each component's rows are stored (shared between composites)
    component_pids: tuple[int, ...] = ()
    # composites: the components whose rows this parameter writes (the others write them)
    owned_components: tuple[int, ...] = ()

    def sub_pid(self, suffix: str) -> int:
        """Id of a derived index key: "text" (token display text), "identifier", "of-type", "c0".."""
        return param_id(self.res_type, f"{self.code}:{suffix}")

    def component_pid(self, i: int) -> int:
        """Id of the index rows of component ``i``; see ``Registry._share_components``."""
        return self.component_pids[i] if self.component_pids else self.sub_pid(f"c{i}")


def split_union(expression: str) -> list[str]:
    """Split an expression on top-level ``|`` (not inside parentheses or quotes)."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _root_name(part: str) -> str:
    stripped = part.lstrip("(").strip()
    end = 0
    while end < len(stripped) and (stripped[end].isalnum() or stripped[end] == "_"):
        end += 1
    return stripped[:end]


def _expression_for(expression: str | None, res_type: str, bases: list[str]) -> str | None:
    if not expression:
        return None
    own = []
    for part in split_union(expression):
        root = _root_name(part)
        if root == res_type:
            own.append(part)
        elif root in ("Resource", "DomainResource") and root in bases:
            own.append(res_type + part.lstrip("(")[len(root):] if not part.startswith("(") else
                       "(" + res_type + part[1 + len(root):])
    return " | ".join(own) if own else None


class Registry:
    def __init__(self) -> None:
        bundle = orjson.loads(SEARCH_PARAMETERS.read_bytes())
        definitions = [entry["resource"] for entry in bundle["entry"]]
        by_url = {d["url"]: d for d in definitions}
        all_types = structure.resource_types()
        self.by_type: dict[str, dict[str, SearchParam]] = {t: {} for t in all_types}
        for d in definitions:
            bases = d["base"]
            types = all_types if any(b in ("Resource", "DomainResource") for b in bases) else bases
            for res_type in types:
                if res_type not in self.by_type:
                    continue
                components = tuple(
                    Component(c["definition"], c["expression"], by_url.get(c["definition"], {}).get("type", "token"))
                    for c in d.get("component", ())
                )
                param = SearchParam(
                    res_type=res_type,
                    code=d["code"],
                    type=d["type"],
                    expression=_expression_for(d.get("expression"), res_type, bases),
                    url=d["url"],
                    description=d.get("description", ""),
                    targets=tuple(d.get("target", ())),
                    components=components,
                    pid=param_id(res_type, d["code"]),
                )
                self.by_type[res_type][d["code"]] = param
        self._share_components()
        self._check_unique_pids()
        # compartment type ("Patient") -> resource type -> parameter codes linking it in
        self.compartments: dict[str, dict[str, tuple[str, ...]]] = {}
        for path in sorted(COMPARTMENTS.glob("compartmentdefinition-*.json")):
            definition = orjson.loads(path.read_bytes())
            self.compartments[definition["code"]] = {
                e["code"]: tuple(c for c in e["param"] if c != "{def}") for e in definition["resource"] if e.get("param")
            }

    def _share_components(self) -> None:
        """Composites that select the same elements often have a component in common:
        Observation's code-value-quantity, -concept, -string and -date all pair ``code`` with
        a value. Such a component is indexed once, under the pid of the first composite (by code)
        that has it (its ``code:c<i>``), and the others search those rows: the same elements
        are numbered alike (``grp``), so the join on (rid, grp) still pairs the right values."""
        for params in self.by_type.values():
            owner: dict[tuple[str | None, str, str], int] = {}
            for code in sorted(params):
                param = params[code]
                if param.type != "composite" or not param.components:
                    continue
                pids, owned = [], []
                for i, component in enumerate(param.components):
                    key = (param.expression, component.expression, component.type)
                    if key not in owner:
                        owner[key] = param.sub_pid(f"c{i}")
                        owned.append(i)
                    pids.append(owner[key])
                params[code] = replace(param, component_pids=tuple(pids), owned_components=tuple(owned))

    def shared_component_pids(self) -> list[tuple[str, int]]:
        """(index table type, pid) of component rows that composites no longer write because
        they share another composite's (for the migration that drops them)."""
        out = []
        for params in self.by_type.values():
            for param in params.values():
                for i, component in enumerate(param.components):
                    if i not in param.owned_components:
                        out.append((component.type, param.sub_pid(f"c{i}")))
        return out

    def _check_unique_pids(self) -> None:
        seen: dict[int, str] = {}
        for res_type, params in self.by_type.items():
            for code in params:
                composite = tuple(f"{code}:c{i}" for i in range(len(params[code].components)))
                for key in (code, f"{code}:text", f"{code}:identifier", f"{code}:of-type", *composite):
                    pid = param_id(res_type, key)
                    name = f"{res_type}.{key}"
                    if seen.setdefault(pid, name) != name:
                        raise RuntimeError(f"search parameter id collision: {name} and {seen[pid]}")

    def get(self, res_type: str, code: str) -> SearchParam | None:
        return self.by_type.get(res_type, {}).get(code)

    def params(self, res_type: str) -> dict[str, SearchParam]:
        return self.by_type.get(res_type, {})

    def compartment_params(self, res_type: str, compartment: str = "Patient") -> tuple[SearchParam, ...]:
        """Reference parameters that put a resource of res_type in a compartment."""
        codes = self.compartments.get(compartment, {}).get(res_type, ())
        return tuple(p for c in codes if (p := self.get(res_type, c)) is not None)


@lru_cache(maxsize=1)
def registry() -> Registry:
    return Registry()
