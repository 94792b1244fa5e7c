"""Tokenizer and precedence-climbing parser for the FHIRPath N1 grammar."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache

from fhirlake.fhir.fhirpath import ast
from fhirlake.fhir.fhirpath.errors import FhirPathSyntaxError
from fhirlake.fhir.fhirpath.values import CALENDAR_UNITS, FhirDate, FhirDateTime, FhirTime, Quantity

_TIME = r"\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?"
_TZ = r"(?:Z|[+-]\d{2}:\d{2})"
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<datetime>@\d{4}(?:-\d{2}(?:-\d{2})?)?T(?:""" + _TIME + r""")?""" + _TZ + r"""?)
  | (?P<time>@T""" + _TIME + r""")
  | (?P<date>@\d{4}(?:-\d{2}(?:-\d{2})?)?)
  | (?P<number>\d+(?:\.\d+)?L?)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<delimited>`(?:[^`\\]|\\.)*`)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<special>\$(?:this|index|total))
  | (?P<op><=|>=|!=|!~|[-+*/&|<>=~(),.\[\]{}%])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

# Binary operators: token -> precedence (higher binds tighter). `is`/`as` are handled apart.
_BINARY = {
    "implies": 1, "or": 2, "xor": 2, "and": 3, "in": 4, "contains": 4,
    "=": 5, "~": 5, "!=": 5, "!~": 5, "<": 6, ">": 6, "<=": 6, ">=": 6, "|": 7,
    "+": 9, "-": 9, "&": 9, "*": 10, "/": 10, "div": 10, "mod": 10,
}
_TYPE_OP_PRECEDENCE = 8
_UNARY_PRECEDENCE = 11
_KEYWORD_OPS = {"implies", "or", "xor", "and", "in", "contains", "div", "mod", "is", "as"}


class _Token:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind: str, text: str, pos: int) -> None:
        self.kind, self.text, self.pos = kind, text, pos

    def __repr__(self) -> str:
        return f"{self.kind}:{self.text}@{self.pos}"


def _unescape(body: str, pos: int, expression: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "u":
            hexa = body[i + 2 : i + 6]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", hexa):
                raise FhirPathSyntaxError("bad unicode escape", pos + i, expression)
            out.append(chr(int(hexa, 16)))
            i += 6
            continue
        if nxt not in _ESCAPES:
            raise FhirPathSyntaxError(f"unknown escape \\{nxt}", pos + i, expression)
        out.append(_ESCAPES[nxt])
        i += 2
    return "".join(out)


def tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    n = len(expression)
    while pos < n:
        m = _TOKEN_RE.match(expression, pos)
        if m is None:
            raise FhirPathSyntaxError(f"unexpected character {expression[pos]!r}", pos, expression)
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            tokens.append(_Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Token("eof", "", n))
    return tokens


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = tokenize(expression)
        self.i = 0

    # -- helpers -----------------------------------------------------------------------------
    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: _Token | None = None) -> FhirPathSyntaxError:
        tok = tok or self.peek()
        return FhirPathSyntaxError(message, tok.pos, self.expression)

    def expect(self, text: str) -> _Token:
        tok = self.peek()
        if tok.text != text or tok.kind not in ("op", "ident"):
            raise self.error(f"expected {text!r}, found {tok.text or 'end of expression'!r}")
        return self.advance()

    def at_op(self, text: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text == text

    # -- grammar -------------------------------------------------------------------------------
    def parse(self) -> ast.Node:
        node = self.expression_(0)
        if self.peek().kind != "eof":
            raise self.error(f"unexpected {self.peek().text!r}")
        return node

    def binary_op(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in _BINARY:
            return tok.text
        if tok.kind == "ident" and tok.text in _KEYWORD_OPS:
            return tok.text
        return None

    def expression_(self, min_prec: int) -> ast.Node:
        left = self.unary()
        while True:
            op = self.binary_op()
            if op is None:
                return left
            if op in ("is", "as"):
                if _TYPE_OP_PRECEDENCE < min_prec:
                    return left
                tok = self.advance()
                left = ast.TypeOp(tok.pos, op, left, self.type_specifier())
                continue
            prec = _BINARY[op]
            if prec < min_prec:
                return left
            tok = self.advance()
            right = self.expression_(prec + 1)
            left = ast.Binary(tok.pos, op, left, right)

    def unary(self) -> ast.Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("+", "-"):
            self.advance()
            operand = self.expression_(_UNARY_PRECEDENCE)
            if tok.text == "-" and isinstance(operand, ast.Literal) and _is_number(operand.value):
                return ast.Literal(tok.pos, -operand.value)
            return ast.Unary(tok.pos, tok.text, operand)
        return self.postfix(self.term())

    def postfix(self, node: ast.Node) -> ast.Node:
        while True:
            if self.at_op("."):
                self.advance()
                tok = self.advance()
                if tok.kind not in ("ident", "delimited"):
                    raise self.error("expected a name after '.'", tok)
                name = self.identifier_text(tok)
                if self.at_op("(") and tok.kind == "ident":
                    node = ast.FunctionCall(tok.pos, node, name, self.arguments())
                else:
                    node = ast.Member(tok.pos, node, name)
            elif self.at_op("["):
                tok = self.advance()
                index = self.expression_(0)
                self.expect("]")
                node = ast.Indexer(tok.pos, node, index)
            else:
                return node

    def arguments(self) -> tuple[ast.Node, ...]:
        self.expect("(")
        args: list[ast.Node] = []
        if not self.at_op(")"):
            args.append(self.expression_(0))
            while self.at_op(","):
                self.advance()
                args.append(self.expression_(0))
        self.expect(")")
        return tuple(args)

    def identifier_text(self, tok: _Token) -> str:
        if tok.kind == "delimited":
            return _unescape(tok.text[1:-1], tok.pos + 1, self.expression)
        return tok.text

    def term(self) -> ast.Node:
        tok = self.advance()
        kind = tok.kind
        if kind == "number":
            return self.number(tok)
        if kind == "string":
            return ast.Literal(tok.pos, _unescape(tok.text[1:-1], tok.pos + 1, self.expression))
        if kind == "date":
            value = FhirDate.parse(tok.text[1:])
            if value is None:
                raise self.error("bad date literal", tok)
            return ast.Literal(tok.pos, value)
        if kind == "datetime":
            value_dt = FhirDateTime.parse(tok.text[1:])
            if value_dt is None:
                raise self.error("bad dateTime literal", tok)
            return ast.Literal(tok.pos, value_dt)
        if kind == "time":
            value_t = FhirTime.parse(tok.text[2:])
            if value_t is None:
                raise self.error("bad time literal", tok)
            return ast.Literal(tok.pos, value_t)
        if kind == "special":
            return ast.Variable(tok.pos, tok.text[1:])
        if kind == "delimited":
            return ast.Identifier(tok.pos, self.identifier_text(tok))
        if kind == "ident":
            if tok.text in ("true", "false"):
                return ast.Literal(tok.pos, tok.text == "true")
            if self.at_op("("):
                return ast.FunctionCall(tok.pos, None, tok.text, self.arguments())
            return ast.Identifier(tok.pos, tok.text)
        if kind == "op":
            if tok.text == "(":
                node = self.expression_(0)
                self.expect(")")
                return node
            if tok.text == "{":
                self.expect("}")
                return ast.EmptyLiteral(tok.pos)
            if tok.text == "%":
                name_tok = self.advance()
                if name_tok.kind == "ident":
                    return ast.External(tok.pos, name_tok.text)
                if name_tok.kind in ("delimited", "string"):
                    return ast.External(tok.pos, _unescape(name_tok.text[1:-1], name_tok.pos, self.expression))
                raise self.error("expected a name after '%'", name_tok)
        raise self.error(f"unexpected {tok.text or 'end of expression'!r}", tok)

    def number(self, tok: _Token) -> ast.Node:
        text = tok.text
        if text.endswith("L"):
            return ast.Literal(tok.pos, int(text[:-1]))
        value: int | Decimal = Decimal(text) if "." in text else int(text)
        nxt = self.peek()
        if nxt.kind == "string":
            self.advance()
            return ast.Literal(tok.pos, Quantity(value, _unescape(nxt.text[1:-1], nxt.pos, self.expression)))
        if nxt.kind == "ident" and nxt.text in CALENDAR_UNITS:
            self.advance()
            return ast.Literal(tok.pos, Quantity(value, nxt.text))
        return ast.Literal(tok.pos, value)

    def type_specifier(self) -> ast.TypeSpecifier:
        tok = self.advance()
        if tok.kind not in ("ident", "delimited"):
            raise self.error("expected a type name", tok)
        names = [self.identifier_text(tok)]
        while self.at_op(".") and self.peek(1).kind in ("ident", "delimited"):
            self.advance()
            names.append(self.identifier_text(self.advance()))
        if len(names) == 1:
            return ast.TypeSpecifier(tok.pos, None, names[0])
        return ast.TypeSpecifier(tok.pos, ".".join(names[:-1]), names[-1])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


@lru_cache(maxsize=4096)
def parse(expression: str) -> ast.Node:
    """Parse an expression into an AST; raises FhirPathSyntaxError with the position."""
    return _Parser(expression).parse()
