"""Rule paths turned into node selectors that the engine runs while it walks a resource.

Rule paths are FHIRPath, but only a few shapes select *nodes to change*: a resource type (or
`Resource`), child steps, `nodesByType('T')`, `nodesByName('n')`, `.where(predicate)`,
`.ofType(T)`, `as T`, parentheses and `|` unions. Evaluating those with a general FHIRPath
engine would return values without their place in the tree, and would cost one evaluation per
rule per resource. Instead each branch becomes a list of steps run as a small automaton during a
single walk of the resource, so the engine knows (parent, key, index) of every match and can
cache the automaton's transitions per element. Predicates (`where`) are real FHIRPath and are
compiled by the FHIRPath engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fhirlake.deid.errors import DeidConfigError

ANY_RESOURCE = "*"
_IDENT = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)$")
_FUNC = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\((.*)\)$", re.S)
_STRING = re.compile(r"^'((?:[^'\\]|\\.)*)'$", re.S)


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # 'root' | 'child' | 'bytype' | 'byname' | 'type' | 'where'
    arg: str


def _scan(text: str, seps: str):
    """Yield (index, char) of separator characters at depth 0 outside string literals."""
    depth = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')'")
        elif depth == 0 and ch in seps:
            yield i, ch
        i += 1
    if quote or depth:
        raise ValueError("unbalanced parentheses or quotes")


def _split(text: str, sep: str) -> list[str]:
    parts, start = [], 0
    for i, _ in _scan(text, sep):
        parts.append(text[start:i])
        start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _type_name(text: str) -> str:
    name = text.strip().strip("`")
    if name.startswith("FHIR."):
        name = name[5:]
    if not _IDENT.match(name):
        raise ValueError(f"bad type name {text!r}")
    return name


def _string_arg(text: str) -> str:
    m = _STRING.match(text.strip())
    if not m:
        raise ValueError(f"expected a quoted string, got {text!r}")
    return m.group(1)


def _segments(text: str, first: bool) -> list[Step]:
    text = text.strip()
    # `X as T` at the end of a branch (as binds tighter than |, looser than '.')
    m = re.match(r"^(.*\S)\s+as\s+([A-Za-z_.`][A-Za-z0-9_.`]*)$", text, re.S)
    if m and list(_scan(m.group(1), "")) == [] and _balanced(m.group(1)):
        return _segments(m.group(1), first) + [Step("type", _type_name(m.group(2)))]
    if text.startswith("("):
        close = _matching(text, 0)
        inner = _segments(text[1:close], first)
        rest = text[close + 1 :].strip()
        if not rest:
            return inner
        if not rest.startswith("."):
            raise ValueError(f"unexpected {rest!r} after ')'")
        return inner + _segments(rest[1:], first=False)
    steps: list[Step] = []
    for n, seg in enumerate(_split(text, ".")):
        if not seg:
            raise ValueError("empty step")
        fm = _FUNC.match(seg)
        if fm:
            name, arg = fm.group(1), fm.group(2).strip()
            if n == 0 and first:
                steps.append(Step("root", ANY_RESOURCE))
            if name == "nodesByType":
                steps.append(Step("bytype", _type_name(_string_arg(arg))))
            elif name == "nodesByName":
                steps.append(Step("byname", _string_arg(arg)))
            elif name == "ofType":
                steps.append(Step("type", _type_name(arg)))
            elif name == "where":
                if not arg:
                    raise ValueError("where() needs a condition")
                steps.append(Step("where", arg))
            else:
                raise ValueError(f"function {name}() cannot select nodes to de-identify")
            continue
        if not _IDENT.match(seg):
            raise ValueError(f"unexpected {seg!r}")
        name = seg.strip("`")
        if n == 0 and first:
            if name[0].isupper():
                steps.append(Step("root", ANY_RESOURCE if name in ("Resource", "DomainResource") else name))
                continue
            steps.append(Step("root", ANY_RESOURCE))
        steps.append(Step("child", name))
    return steps


def _balanced(text: str) -> bool:
    try:
        list(_scan(text, ""))
    except ValueError:
        return False
    return True


def _matching(text: str, open_at: int) -> int:
    depth = 0
    quote = ""
    for i in range(open_at, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced '('")


def compile_selector(path: str, label: str) -> list[tuple[Step, ...]]:
    """The branches of a rule path; DeidConfigError naming the rule when the shape is unsupported."""
    try:
        branches = [tuple(_segments(b, first=True)) for b in _split(path, "|")]
    except ValueError as exc:
        raise DeidConfigError(f"{label}: cannot use path: {exc}") from None
    for steps in branches:
        if not steps or steps[0].kind != "root":
            raise DeidConfigError(f"{label}: a path must start at a resource type or nodesByType()/nodesByName()")
    return branches
