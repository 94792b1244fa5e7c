"""The FHIRPath abstract syntax tree: small frozen dataclasses, produced by `parser.parse`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Node:
    pos: int


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A literal value: bool, str, int, Decimal, FhirDate/FhirDateTime/FhirTime or Quantity."""

    value: Any


@dataclass(frozen=True, slots=True)
class EmptyLiteral(Node):
    """`{}`"""


@dataclass(frozen=True, slots=True)
class Identifier(Node):
    """A member name or type name at the start of a path (`Patient`, `name`, `` `given` ``)."""

    name: str


@dataclass(frozen=True, slots=True)
class Member(Node):
    """`target.name`"""

    target: Node
    name: str


@dataclass(frozen=True, slots=True)
class FunctionCall(Node):
    """`target.name(args)`; target is None for a call at the start of a path."""

    target: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Indexer(Node):
    target: Node
    index: Node


@dataclass(frozen=True, slots=True)
class Variable(Node):
    """`$this`, `$index`, `$total`"""

    name: str


@dataclass(frozen=True, slots=True)
class External(Node):
    """`%name` (the name without '%')"""

    name: str


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str  # '+' or '-'
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class TypeSpecifier(Node):
    """A qualified type name, e.g. `Quantity`, `System.String`, `FHIR.boolean`."""

    namespace: str | None
    name: str


@dataclass(frozen=True, slots=True)
class TypeOp(Node):
    """`operand is Type` / `operand as Type`"""

    op: str  # 'is' | 'as'
    operand: Node
    type: TypeSpecifier
