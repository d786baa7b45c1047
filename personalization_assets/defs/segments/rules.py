"""Segment rule language: parser, validator and DuckDB SQL compiler.

Marketers declare segments in ``config/segments.yaml``::

    segments:
      - name: Engaged Browsers
        description: Viewed one product category more than 3 times in the last day
        rule: events(product_view, 24h, per=category) > 3
      - name: Dormant
        description: No email opened for a month, or never opened one
        rule: days_since_last_open > 30 or days_since_last_open is null
        exclusive_group: lifecycle
        priority: 1

Each ``rule`` is a true/false condition written in the language below. Rules are
checked against the customer feature columns before any run, then compiled to a
single set-based DuckDB query.

Values
------
* Numbers: ``5``, ``0.5``, ``.5``, ``-3`` (no exponent notation).
* Strings: ``'urban'`` or ``"urban"``. Write a quote inside a string by doubling
  it (``'O''Brien'``) or with a backslash (``'O\\'Brien'``); ``\\\\`` is a
  backslash. Strings are compared case-sensitively.
* ``true``, ``false``, ``null``. Keywords are case-insensitive (``AND`` works).
* Feature fields: a bare name such as ``open_rate_90d``, ``purchases_per_month``
  or ``city_tier`` (letters, digits, ``_``; case-sensitive; must be a column of
  the customer feature table). Each field is a ``number``, ``string``,
  ``boolean``, ``date`` or ``timestamp``.
* Dates and timestamps are compared with ISO strings:
  ``signup_date >= '2024-01-31'``, ``last_seen_at < '2024-01-31 08:00'``.

Operators (loosest binding first)
---------------------------------
1. ``or``
2. ``and``
3. ``not``
4. comparisons (cannot be chained; ``a < b < c`` is an error):

   * ``=`` (same as ``==``), ``!=`` (same as ``<>``), ``<``, ``<=``, ``>``, ``>=``
   * ``x in [1, 2, 3]``, ``x not in ['a', 'b']`` (lists may not contain null)
   * ``x between 1 and 5``, ``x not between 1 and 5`` (both ends included)
   * ``x is null``, ``x is not null``
   * ``x contains 'abc'``, ``x startswith 'abc'`` (and ``not contains`` /
     ``not startswith``), strings only
5. ``+`` and ``-``
6. ``*`` and ``/``
7. unary ``-``

Parentheses group as usual. Arithmetic works on numbers only. Dividing by zero
gives null (so any comparison using it is false) rather than an error.
Booleans may only be compared with ``=`` / ``!=``; a boolean field may also be
used on its own (``is_vip and open_rate_90d > 0.2``).

Event counts
------------
``events(<event_type>, <window>)`` is the number of the customer's events of that
type whose timestamp lies in ``(as_of - window, as_of]``: an event exactly
``window`` before ``as_of`` is *not* counted, one exactly at ``as_of`` is.

``events(<event_type>, <window>, per=category)`` is the largest such count
within any single category (events without a category are ignored);
``per=product_id`` does the same per product. Example -- "viewed one product
category more than 3 times in 24 hours": ``events(product_view, 24h, per=category) > 3``.

* event types: page_view, product_view, add_to_cart, checkout, purchase,
  email_send, email_open, email_click, unsubscribe
* windows: a positive whole number followed by ``m`` (minutes), ``h`` (hours),
  ``d`` (days) or ``w`` (weeks): ``90m``, ``24h``, ``7d``, ``2w``. Durations are
  only allowed as the window of ``events(...)``.

Missing values (NULL)
---------------------
A comparison that involves a missing (null) feature value is **false**; this
includes ``!=``, ``not in``, ``not between`` and ``not contains``. Test for
missing values explicitly with ``is null`` / ``is not null``. A missing boolean
field counts as false. ``not`` is plain negation of the (already true/false)
condition, so ``not (x > 5)`` is true when ``x`` is null, while ``x <= 5`` is
not. For example, ``Dormant`` above deliberately includes customers who never
opened an email (``days_since_last_open is null``).

Exclusive groups
----------------
Segments sharing an ``exclusive_group`` are mutually exclusive: a customer who
matches several of them is placed only in the one with the lowest ``priority``
number (segments without a priority come last; ties go to the segment listed
first in the file). Segments without a group never affect each other.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, StrictInt, StringConstraints, ValidationError

from personalization_assets.contract import EVENT_TYPES

__all__ = [
    "EVENT_TYPES",
    "PER_VALUES",
    "Arith",
    "Between",
    "BoolOp",
    "Compare",
    "Const",
    "Events",
    "Expr",
    "FeatureSchema",
    "FieldRef",
    "FieldType",
    "InList",
    "IsNull",
    "Neg",
    "Not",
    "RuleError",
    "RuleSyntaxError",
    "SegmentConfigError",
    "SegmentDefinition",
    "SegmentsConfig",
    "StringMatch",
    "check_rule",
    "collect_segment_errors",
    "compile_rule",
    "feature_schema_from_duckdb",
    "load_segments_config",
    "parse_rule",
    "parse_segments_yaml",
    "quote_relation",
    "segment_membership_sql",
    "validate_rule",
    "validate_segments",
]

FieldType = Literal["number", "string", "boolean", "date", "timestamp"]
FeatureSchema = Mapping[str, FieldType]
FIELD_TYPES: frozenset[str] = frozenset(get_args(FieldType))

PER_VALUES: tuple[str, ...] = ("category", "product_id")
WINDOW_UNIT_MINUTES: dict[str, int] = {"m": 1, "h": 60, "d": 1440, "w": 10080}
MAX_NESTING = 64

_KEYWORDS = frozenset(
    {"and", "or", "not", "in", "between", "is", "null", "true", "false", "contains", "startswith"}
)
_COMPARE_OPS = {
    "=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
}  # fmt: skip
_ORDERING_OPS = frozenset({"<", "<=", ">", ">="})
_NULL = "null"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RuleError:
    """One problem with a segment rule or definition.

    ``offset`` is the 0-based character offset in ``rule`` where the problem is;
    ``line``/``column`` give the same position 1-based for humans.
    """

    message: str
    segment: str | None = None
    rule: str | None = None
    field: str | None = None
    offset: int | None = None

    @property
    def line(self) -> int | None:
        """1-based line of the problem within the rule text."""
        if self.offset is None or self.rule is None:
            return None
        return self.rule.count("\n", 0, self.offset) + 1

    @property
    def column(self) -> int | None:
        """1-based column of the problem within its line of the rule text."""
        if self.offset is None:
            return None
        if self.rule is None:
            return self.offset + 1
        return self.offset - (self.rule.rfind("\n", 0, self.offset) + 1) + 1

    def __str__(self) -> str:
        """Render as ``segment 'X', column N: message`` plus the rule with a caret."""
        where = [f"segment '{self.segment}'"] if self.segment is not None else []
        if self.field is not None and f"'{self.field}'" not in self.message:
            where.append(f"field '{self.field}'")
        if self.column is not None:
            multi = self.rule is not None and "\n" in self.rule
            where.append(
                f"line {self.line}, column {self.column}" if multi else f"column {self.column}"
            )
        head = f"{', '.join(where)}: {self.message}" if where else self.message
        return head + self._excerpt()

    def _excerpt(self) -> str:
        """The offending rule line and a caret under the position, if known."""
        if self.rule is None:
            return ""
        if self.offset is None:
            return f"\n    rule: {self.rule}"
        line_text = self.rule.split("\n")[(self.line or 1) - 1]
        caret = " " * (self.column - 1) + "^"
        return f"\n    rule: {line_text}\n          {caret}"


class RuleSyntaxError(ValueError):
    """A rule text could not be parsed; ``error`` holds the details."""

    def __init__(self, error: RuleError) -> None:
        super().__init__(str(error))
        self.error = error


class SegmentConfigError(ValueError):
    """The segment configuration is invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[RuleError]) -> None:
        self.errors: tuple[RuleError, ...] = tuple(errors)
        lines = [f"{len(self.errors)} problem(s) in the segment configuration:"]
        lines += ["- " + str(err).replace("\n", "\n  ") for err in self.errors]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- AST


def _pos() -> Any:
    """Position field: 0-based offset of the node's first character, ignored by ``==``."""
    return dc_field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Const:
    """A literal number, string, boolean or ``null`` (value ``None``)."""

    value: bool | int | float | str | None
    pos: int = _pos()


@dataclass(frozen=True)
class FieldRef:
    """A reference to a customer feature column."""

    name: str
    pos: int = _pos()


@dataclass(frozen=True)
class Events:
    """``events(event_type, window[, per=...])``; ``window`` is the raw text, e.g. ``24h``."""

    event_type: str
    window: str
    per: str | None = None
    pos: int = _pos()
    type_pos: int = _pos()
    window_pos: int = _pos()
    per_pos: int = _pos()


@dataclass(frozen=True)
class Neg:
    """Unary minus."""

    operand: Expr
    pos: int = _pos()


@dataclass(frozen=True)
class Arith:
    """``left op right`` with op one of ``+ - * /``."""

    op: str
    left: Expr
    right: Expr
    pos: int = _pos()


@dataclass(frozen=True)
class Compare:
    """``left op right`` with op one of ``= != < <= > >=`` (``==``/``<>`` normalised)."""

    op: str
    left: Expr
    right: Expr
    pos: int = _pos()


@dataclass(frozen=True)
class InList:
    """``operand [not] in [items...]``."""

    operand: Expr
    items: tuple[Expr, ...]
    negated: bool = False
    pos: int = _pos()


@dataclass(frozen=True)
class Between:
    """``operand [not] between low and high`` (inclusive)."""

    operand: Expr
    low: Expr
    high: Expr
    negated: bool = False
    pos: int = _pos()


@dataclass(frozen=True)
class IsNull:
    """``operand is [not] null``."""

    operand: Expr
    negated: bool = False
    pos: int = _pos()


@dataclass(frozen=True)
class StringMatch:
    """``operand [not] contains|startswith pattern``."""

    op: Literal["contains", "startswith"]
    operand: Expr
    pattern: Expr
    negated: bool = False
    pos: int = _pos()


@dataclass(frozen=True)
class Not:
    """Boolean negation."""

    operand: Expr
    pos: int = _pos()


@dataclass(frozen=True)
class BoolOp:
    """``left and|or right``."""

    op: Literal["and", "or"]
    left: Expr
    right: Expr
    pos: int = _pos()


Expr = (
    Const
    | FieldRef
    | Events
    | Neg
    | Arith
    | Compare
    | InList
    | Between
    | IsNull
    | StringMatch
    | Not
    | BoolOp
)


# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class _Token:
    kind: str  # num | str | dur | ident | kw | op | eof
    text: str
    value: Any
    pos: int


_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
      | (?P<dur>\d+(?:\.\d+)?[A-Za-z_][A-Za-z0-9_]*)
      | (?P<num>\d+(?:\.\d+)?|\.\d+)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<>|<=|>=|[=<>+\-*/()\[\],])""",
    re.VERBOSE,
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"'}


def _syntax_error(message: str, pos: int) -> RuleSyntaxError:
    """Build a syntax error at a 0-based offset (rule text is filled in by the caller)."""
    return RuleSyntaxError(RuleError(f"syntax error: {message}", offset=pos))


def _scan_string(text: str, start: int) -> tuple[str, int]:
    """Scan a quoted string starting at ``start``; return (value, end offset)."""
    quote, out, i = text[start], [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                raise _syntax_error("unknown escape in string; use \\', \\\" or \\\\", i)
            out.append(_ESCAPES[nxt])
            i += 2
        elif ch == quote and text[i + 1 : i + 2] == quote:
            out.append(quote)
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        elif ch == "\x00":
            raise _syntax_error("NUL characters are not allowed in strings", i)
        else:
            out.append(ch)
            i += 1
    raise _syntax_error("string is never closed", start)


def _tokenize(text: str) -> list[_Token]:
    """Split rule text into tokens, ending with an ``eof`` token."""
    tokens, i = [], 0
    while i < len(text):
        if text[i] in "'\"":
            value, end = _scan_string(text, i)
            tokens.append(_Token("str", text[i:end], value, i))
            i = end
            continue
        m = _TOKEN_RE.match(text, i)
        if m is None:
            raise _syntax_error(f"unexpected character {text[i]!r}", i)
        kind, tok_text = m.lastgroup or "", m.group()
        if kind != "ws":
            tokens.append(_make_token(kind, tok_text, i))
        i = m.end()
    tokens.append(_Token("eof", "", None, len(text)))
    return tokens


def _make_token(kind: str, text: str, pos: int) -> _Token:
    """Classify a regex match as a token with a decoded value."""
    if kind == "num":
        return _Token(kind, text, float(text) if "." in text else int(text), pos)
    if kind == "ident" and text.lower() in _KEYWORDS:
        return _Token("kw", text, text.lower(), pos)
    return _Token(kind, text, text, pos)


def _describe(tok: _Token) -> str:
    """Human description of a token for error messages."""
    return "end of rule" if tok.kind == "eof" else f"'{tok.text}'"


# --------------------------------------------------------------------------- parser


class _Parser:
    """Recursive-descent parser; one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    # -- token helpers
    def peek(self, ahead: int = 0) -> _Token:
        """Look at a token without consuming it."""
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        """Consume and return the current token."""
        tok = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def at_kw(self, *words: str, ahead: int = 0) -> bool:
        """True if the token is one of the given keywords."""
        tok = self.peek(ahead)
        return tok.kind == "kw" and tok.value in words

    def at_op(self, *ops: str) -> bool:
        """True if the current token is one of the given operators."""
        tok = self.peek()
        return tok.kind == "op" and tok.value in ops

    def expect_op(self, op: str, context: str) -> _Token:
        """Consume ``op`` or raise a syntax error mentioning ``context``."""
        if not self.at_op(op):
            tok = self.peek()
            raise _syntax_error(f"expected '{op}' {context}, found {_describe(tok)}", tok.pos)
        return self.advance()

    def nest(self, pos: int) -> None:
        """Guard against absurdly deep nesting (stack exhaustion)."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _syntax_error(f"rule is nested more than {MAX_NESTING} levels deep", pos)

    # -- grammar
    def parse(self) -> Expr:
        """rule := or_expr EOF"""
        expr = self.or_expr()
        tok = self.peek()
        if tok.kind != "eof":
            hint = ""
            if tok.kind == "op" and tok.value in _COMPARE_OPS:
                hint = "; comparisons cannot be chained, combine them with 'and'"
            elif tok.kind in ("ident", "num", "str", "dur", "kw"):
                hint = "; did you forget 'and' / 'or'?"
            raise _syntax_error(f"unexpected {_describe(tok)}{hint}", tok.pos)
        return expr

    def or_expr(self) -> Expr:
        """or_expr := and_expr ('or' and_expr)*"""
        left = self.and_expr()
        while self.at_kw("or"):
            self.advance()
            left = BoolOp("or", left, self.and_expr(), pos=left.pos)
        return left

    def and_expr(self) -> Expr:
        """and_expr := not_expr ('and' not_expr)*"""
        left = self.not_expr()
        while self.at_kw("and"):
            self.advance()
            left = BoolOp("and", left, self.not_expr(), pos=left.pos)
        return left

    def not_expr(self) -> Expr:
        """not_expr := 'not' not_expr | predicate"""
        if not self.at_kw("not"):
            return self.predicate()
        tok = self.advance()
        self.nest(tok.pos)
        operand = self.not_expr()
        self.depth -= 1
        return Not(operand, pos=tok.pos)

    def predicate(self) -> Expr:
        """predicate := additive [comparison-suffix]"""
        left = self.additive()
        tok = self.peek()
        if tok.kind == "op" and tok.value in _COMPARE_OPS:
            self.advance()
            return Compare(_COMPARE_OPS[tok.value], left, self.additive(), pos=left.pos)
        if self.at_kw("is"):
            return self.is_null(left)
        negated = self.at_kw("not")
        if negated:
            if not self.at_kw("in", "between", "contains", "startswith", ahead=1):
                nxt = self.peek(1)
                msg = "expected 'in', 'between', 'contains' or 'startswith' after 'not', "
                msg += f"found {_describe(nxt)}"
                raise _syntax_error(msg, nxt.pos)
            self.advance()
        return self.keyword_predicate(left, negated)

    def keyword_predicate(self, left: Expr, negated: bool) -> Expr:
        """``in`` / ``between`` / ``contains`` / ``startswith`` suffixes (or none)."""
        if self.at_kw("in"):
            self.advance()
            return InList(left, self.list_literal(), negated, pos=left.pos)
        if self.at_kw("between"):
            self.advance()
            low = self.additive()
            if not self.at_kw("and"):
                tok = self.peek()
                msg = f"expected 'and' in 'between ... and ...', found {_describe(tok)}"
                raise _syntax_error(msg, tok.pos)
            self.advance()
            return Between(left, low, self.additive(), negated, pos=left.pos)
        if self.at_kw("contains", "startswith"):
            op = self.advance().value
            return StringMatch(op, left, self.additive(), negated, pos=left.pos)
        return left

    def is_null(self, left: Expr) -> Expr:
        """``is null`` / ``is not null``."""
        self.advance()
        negated = self.at_kw("not")
        if negated:
            self.advance()
        if not self.at_kw("null"):
            tok = self.peek()
            msg = f"expected 'null' after 'is{' not' if negated else ''}', found {_describe(tok)}"
            raise _syntax_error(msg, tok.pos)
        self.advance()
        return IsNull(left, negated, pos=left.pos)

    def list_literal(self) -> tuple[Expr, ...]:
        """list := '[' additive (',' additive)* ']'"""
        start = self.expect_op("[", "to start the list after 'in'")
        if self.at_op("]"):
            raise _syntax_error("a list needs at least one value", start.pos)
        items = [self.additive()]
        while self.at_op(","):
            self.advance()
            items.append(self.additive())
        self.expect_op("]", f"to close the list opened at column {start.pos + 1}")
        return tuple(items)

    def additive(self) -> Expr:
        """additive := term (('+' | '-') term)*"""
        left = self.term()
        while self.at_op("+", "-"):
            op = self.advance().value
            left = Arith(op, left, self.term(), pos=left.pos)
        return left

    def term(self) -> Expr:
        """term := unary (('*' | '/') unary)*"""
        left = self.unary()
        while self.at_op("*", "/"):
            op = self.advance().value
            left = Arith(op, left, self.unary(), pos=left.pos)
        return left

    def unary(self) -> Expr:
        """unary := '-' unary | primary  (a minus before a number literal is folded in)"""
        if not self.at_op("-"):
            return self.primary()
        tok = self.advance()
        self.nest(tok.pos)
        operand = self.unary()
        self.depth -= 1
        if isinstance(operand, Const) and type(operand.value) in (int, float):
            return Const(-operand.value, pos=tok.pos)
        return Neg(operand, pos=tok.pos)

    def primary(self) -> Expr:
        """primary := literal | field | events(...) | '(' or_expr ')'"""
        tok = self.peek()
        if tok.kind in ("num", "str"):
            self.advance()
            return Const(tok.value, pos=tok.pos)
        if self.at_kw("true", "false", "null"):
            self.advance()
            return Const({"true": True, "false": False, "null": None}[tok.value], pos=tok.pos)
        if tok.kind == "ident":
            nxt = self.peek(1)
            return self.call() if nxt.kind == "op" and nxt.value == "(" else self.field_ref()
        if self.at_op("("):
            return self.parenthesized()
        raise _syntax_error(self.not_a_value(tok), tok.pos)

    def not_a_value(self, tok: _Token) -> str:
        """Error message for a token where a value was expected."""
        if tok.kind == "dur":
            return f"durations like '{tok.text}' are only allowed as the window of events(...)"
        if self.at_op("["):
            return "lists are only allowed after 'in' / 'not in'"
        return f"expected a value, field or '(', found {_describe(tok)}"

    def field_ref(self) -> Expr:
        """A bare feature name."""
        tok = self.advance()
        return FieldRef(tok.text, pos=tok.pos)

    def parenthesized(self) -> Expr:
        """'(' or_expr ')'"""
        tok = self.advance()
        self.nest(tok.pos)
        expr = self.or_expr()
        self.expect_op(")", f"to close the '(' at column {tok.pos + 1}")
        self.depth -= 1
        return expr

    def call(self) -> Expr:
        """Function call; only ``events(...)`` exists."""
        name = self.advance()
        if name.text.lower() != "events":
            msg = f"unknown function '{name.text}'; only events(...) is supported"
            raise _syntax_error(msg, name.pos)
        self.advance()
        etype = self.event_arg("an event type such as product_view")
        if not self.at_op(","):
            tok = self.peek()
            msg = "events() needs an event type and a window, e.g. events(product_view, 24h); "
            msg += f"found {_describe(tok)}"
            raise _syntax_error(msg, tok.pos)
        self.advance()
        window = self.event_arg("a window such as 24h or 7d")
        per = self.per_arg()
        self.expect_op(")", "to close events(...)")
        return Events(
            _arg_text(etype), _arg_text(window), per and _arg_text(per),
            pos=name.pos, type_pos=etype.pos, window_pos=window.pos, per_pos=per.pos if per else 0,
        )  # fmt: skip

    def event_arg(self, what: str) -> _Token:
        """One positional argument of ``events()`` (kept as raw text, checked by the validator)."""
        tok = self.peek()
        if tok.kind not in ("ident", "str", "dur", "num"):
            raise _syntax_error(f"expected {what}, found {_describe(tok)}", tok.pos)
        return self.advance()

    def per_arg(self) -> _Token | None:
        """Optional ``, per=<column>`` argument of ``events()``."""
        if not self.at_op(","):
            return None
        self.advance()
        key = self.peek()
        if key.kind != "ident" or key.text.lower() != "per":
            msg = f"unknown events() argument {_describe(key)}; only per=category or per=product_id"
            raise _syntax_error(msg, key.pos)
        self.advance()
        self.expect_op("=", "after 'per'")
        return self.event_arg("category or product_id after 'per='")


def _arg_text(tok: _Token) -> str:
    """An events() argument as text: a string's value, otherwise the token as written."""
    return tok.value if tok.kind == "str" else tok.text


def parse_rule(text: str) -> Expr:
    """Parse rule text into an AST; raise :class:`RuleSyntaxError` (with position) if invalid."""
    try:
        if not text.strip():
            raise _syntax_error("rule is empty", 0)
        return _Parser(text).parse()
    except RuleSyntaxError as exc:
        raise RuleSyntaxError(replace(exc.error, rule=text)) from None


# --------------------------------------------------------------------------- validator


def _first_field(node: Expr) -> str | None:
    """Name of the first feature field referenced inside ``node`` (for error reports)."""
    if isinstance(node, FieldRef):
        return node.name
    for child in _children(node):
        name = _first_field(child)
        if name is not None:
            return name
    return None


def _children(node: Expr) -> tuple[Expr, ...]:
    """Direct sub-expressions of a node."""
    if isinstance(node, (Neg, Not, IsNull)):
        return (node.operand,)
    if isinstance(node, (Arith, Compare, BoolOp)):
        return (node.left, node.right)
    if isinstance(node, InList):
        return (node.operand, *node.items)
    if isinstance(node, Between):
        return (node.operand, node.low, node.high)
    if isinstance(node, StringMatch):
        return (node.operand, node.pattern)
    return ()


def _what(node: Expr, typ: str) -> str:
    """``field 'city' is a string`` style description of an operand and its type."""
    if isinstance(node, Const):
        if node.value is None:
            return "null has no type"
        shown = _show_const(node.value)
        return f"{shown} is a {typ}"
    if isinstance(node, FieldRef):
        return f"field '{node.name}' is a {typ}"
    if isinstance(node, Events):
        return f"events({node.event_type}, ...) is a {typ}"
    return f"the expression at column {node.pos + 1} is a {typ}"


def _show_const(value: object) -> str:
    """Render a literal roughly as it was written."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _window_minutes(window: str) -> int | None:
    """Window text such as ``24h`` in minutes, or None if it is not a valid window."""
    m = re.fullmatch(r"(\d+)([A-Za-z]+)", window.strip())
    if m is None or m.group(2).lower() not in WINDOW_UNIT_MINUTES:
        return None
    minutes = int(m.group(1)) * WINDOW_UNIT_MINUTES[m.group(2).lower()]
    return minutes or None


def _suggest(name: str, options: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest option (case-insensitive first), else ''."""
    options = list(options)
    same_case = [o for o in options if o.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_date_literal(value: str, typ: str) -> bool:
    """True if ``value`` is an ISO date (for ``date``) or date/time (for ``timestamp``)."""
    pattern = r"\d{4}-\d{2}-\d{2}"
    if typ == "timestamp":
        pattern += r"(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?"
    if not re.fullmatch(pattern, value):
        return False
    try:
        (datetime if typ == "timestamp" else date).fromisoformat(value)
    except ValueError:
        return False
    return True


class _Checker:
    """Type checker: infers each node's type and records every problem found."""

    def __init__(self, schema: FeatureSchema) -> None:
        self.schema = schema
        self.errors: list[RuleError] = []
        self.rules: dict[type, Callable[[Any], str | None]] = {
            Const: self.const, FieldRef: self.field_ref, Events: self.events, Neg: self.neg,
            Arith: self.arith, Compare: self.compare, InList: self.in_list,
            Between: self.between, IsNull: self.is_null, StringMatch: self.string_match,
            Not: self.not_, BoolOp: self.bool_op,
        }  # fmt: skip

    def fail(self, message: str, node: Expr, pos: int | None = None, field: str | None = None):
        """Record one error located at ``node`` (or ``pos``)."""
        field = field or _first_field(node)
        self.errors.append(RuleError(message, field=field, offset=node.pos if pos is None else pos))

    def infer(self, node: Expr) -> str | None:
        """Type of ``node``: a FieldType, 'null', or None if it is already in error."""
        return self.rules[type(node)](node)

    def expect(self, node: Expr, want: str, context: str, parent: Expr) -> None:
        """Infer ``node`` and complain unless it has type ``want`` (field taken from ``parent``)."""
        typ = self.infer(node)
        if typ is not None and typ != want:
            wanted = "boolean (true/false condition)" if want == "boolean" else want
            msg = f"type mismatch: {context} needs a {wanted}, but {_what(node, typ)}"
            self.fail(msg, node, field=_first_field(node) or _first_field(parent))

    # -- leaves
    def const(self, node: Const) -> str:
        """Literal types."""
        value = node.value
        if value is None:
            return _NULL
        if isinstance(value, bool):
            return "boolean"
        return "string" if isinstance(value, str) else "number"

    def field_ref(self, node: FieldRef) -> str | None:
        """Look the field up in the schema, suggesting a close name if unknown."""
        typ = self.schema.get(node.name)
        if typ is None:
            msg = f"unknown field '{node.name}'{_suggest(node.name, self.schema)}"
            self.fail(msg, node, field=node.name)
        return typ

    def events(self, node: Events) -> str:
        """Check event type, window and ``per`` of an ``events()`` call."""
        if node.event_type not in EVENT_TYPES:
            hint = _suggest(node.event_type, EVENT_TYPES)
            msg = f"unknown event type '{node.event_type}' in events(){hint}"
            msg += f" (allowed: {', '.join(EVENT_TYPES)})"
            self.fail(msg, node, pos=node.type_pos)
        if _window_minutes(node.window) is None:
            msg = f"bad window '{node.window}' in events(): use a positive whole number "
            msg += "followed by m, h, d or w (e.g. 90m, 24h, 7d)"
            self.fail(msg, node, pos=node.window_pos)
        if node.per is not None and node.per not in PER_VALUES:
            msg = f"bad per '{node.per}' in events(): use per=category or per=product_id"
            self.fail(msg, node, pos=node.per_pos)
        return "number"

    # -- arithmetic
    def neg(self, node: Neg) -> str:
        """Unary minus needs a number."""
        self.expect(node.operand, "number", "'-'", node)
        return "number"

    def arith(self, node: Arith) -> str:
        """``+ - * /`` need numbers on both sides."""
        self.expect(node.left, "number", f"'{node.op}'", node)
        self.expect(node.right, "number", f"'{node.op}'", node)
        return "number"

    # -- comparisons
    def compare(self, node: Compare) -> str:
        """Both sides must have compatible types; booleans only with = / !=."""
        left_t, right_t = self.infer(node.left), self.infer(node.right)
        ok = self.compatible(node.left, left_t, node.right, right_t, f"'{node.op}'")
        if ok and node.op in _ORDERING_OPS and left_t == "boolean":
            self.fail(f"'{node.op}' cannot compare booleans; use = or !=", node)
        return "boolean"

    def compatible(self, a: Expr, a_t: str | None, b: Expr, b_t: str | None, ctx: str) -> bool:
        """Check two operands can be compared; report and return False otherwise."""
        if a_t is None or b_t is None:
            return False
        if _NULL in (a_t, b_t):
            msg = f"comparing with null in {ctx} is never true; use 'is null' or 'is not null'"
            self.fail(msg, a, field=_first_field(a) or _first_field(b))
            return False
        if a_t == b_t or {a_t, b_t} == {"date", "timestamp"}:
            return True
        for x, x_t, y, y_t in ((a, a_t, b, b_t), (b, b_t, a, a_t)):
            if x_t in ("date", "timestamp") and y_t == "string" and isinstance(y, Const):
                return self.date_literal(y, x_t, x)
        msg = f"type mismatch in {ctx}: {_what(a, a_t)}, but {_what(b, b_t)}"
        self.fail(msg, a, field=_first_field(a) or _first_field(b))
        return False

    def date_literal(self, lit: Const, typ: str, other: Expr) -> bool:
        """A string compared with a date/timestamp must be an ISO date/timestamp."""
        if _check_date_literal(str(lit.value), typ):
            return True
        fmt = "YYYY-MM-DD" if typ == "date" else "YYYY-MM-DD or 'YYYY-MM-DD HH:MM[:SS]'"
        msg = f"{lit.value!r} is not a valid {typ} for field '{_first_field(other)}' (use {fmt})"
        self.fail(msg, lit, field=_first_field(other))
        return False

    def in_list(self, node: InList) -> str:
        """Every list item must be comparable with the operand; no nulls."""
        typ = self.infer(node.operand)
        for item in node.items:
            if isinstance(item, Const) and item.value is None:
                msg = "null is not allowed in a list; use 'is null' / 'is not null'"
                self.fail(msg, item, field=_first_field(node.operand))
                continue
            self.compatible(node.operand, typ, item, self.infer(item), "'in'")
        return "boolean"

    def between(self, node: Between) -> str:
        """Bounds must be comparable with the operand; literal bounds must be ordered."""
        typ = self.infer(node.operand)
        if typ == "boolean":
            self.fail(f"'between' cannot be used with booleans; {_what(node.operand, typ)}", node)
            return "boolean"
        for bound in (node.low, node.high):
            self.compatible(node.operand, typ, bound, self.infer(bound), "'between'")
        lo, hi = node.low, node.high
        if _both_numbers(lo, hi) and lo.value > hi.value:  # type: ignore[union-attr,operator]
            msg = f"empty range: 'between {lo.value} and {hi.value}' matches nothing"
            self.fail(msg, lo, field=_first_field(node))
        return "boolean"

    def is_null(self, node: IsNull) -> str:
        """``is [not] null`` accepts any operand."""
        self.infer(node.operand)
        return "boolean"

    def string_match(self, node: StringMatch) -> str:
        """``contains`` / ``startswith`` need strings on both sides."""
        self.expect(node.operand, "string", f"'{node.op}'", node)
        self.expect(node.pattern, "string", f"'{node.op}'", node)
        return "boolean"

    # -- boolean logic
    def not_(self, node: Not) -> str:
        """``not`` needs a true/false condition."""
        self.expect(node.operand, "boolean", "'not'", node)
        return "boolean"

    def bool_op(self, node: BoolOp) -> str:
        """``and`` / ``or`` need true/false conditions on both sides."""
        self.expect(node.left, "boolean", f"'{node.op}'", node)
        self.expect(node.right, "boolean", f"'{node.op}'", node)
        return "boolean"


def _both_numbers(*nodes: Expr) -> bool:
    """True if all nodes are (non-boolean) number literals."""
    return all(
        isinstance(n, Const) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)
        for n in nodes
    )


def _check_schema(schema: FeatureSchema) -> None:
    """Reject schemas with unknown type names (a programming error, not a user one)."""
    bad = {name: typ for name, typ in schema.items() if typ not in FIELD_TYPES}
    if bad:
        raise ValueError(f"invalid feature types {bad}; allowed: {sorted(FIELD_TYPES)}")


def validate_rule(expr: Expr, schema: FeatureSchema) -> list[RuleError]:
    """Type-check a parsed rule against the feature schema; return all problems (empty if OK)."""
    _check_schema(schema)
    checker = _Checker(schema)
    typ = checker.infer(expr)
    if typ is not None and typ != "boolean":
        msg = f"a rule must be a true/false condition, but {_what(expr, typ)}"
        checker.fail(msg, expr)
    return checker.errors


def check_rule(text: str, schema: FeatureSchema, *, segment: str | None = None) -> list[RuleError]:
    """Parse and validate rule text; every error carries ``segment`` and the rule text."""
    try:
        errors = validate_rule(parse_rule(text), schema)
    except RuleSyntaxError as exc:
        errors = [exc.error]
    return [replace(err, segment=segment, rule=text) for err in errors]


# --------------------------------------------------------------------------- SQL compiler

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RELATION_PART = r'(?:[A-Za-z_][A-Za-z0-9_]*|"(?:[^"\x00]|"")+")'
_RELATION_RE = re.compile(rf"{_RELATION_PART}(?:\.{_RELATION_PART}){{0,2}}")
_PARAM_RE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_ALIASES = frozenset({"_ev", "_per", "_p"})
# The column joining features and events: analytics layers are keyed by the pseudonymous
# customer_key; the campaign layer, which works on re-identified rows, passes customer_id.
DEFAULT_KEY = "customer_key"


def _quote_ident(name: str) -> str:
    """Double-quote an identifier, escaping embedded double quotes."""
    if "\x00" in name:
        raise ValueError("identifiers may not contain NUL characters")
    return '"' + name.replace('"', '""') + '"'


def _sql_string(value: str) -> str:
    """Single-quote a string literal, escaping embedded single quotes."""
    if "\x00" in value:
        raise ValueError("strings may not contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


def _sql_literal(value: bool | int | float | str | None) -> str:
    """Render a rule literal as SQL."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _sql_string(value)
    return f"({value!r})"


def quote_relation(name: str) -> str:
    """Quote a (possibly schema-qualified) relation name such as ``main.customer_features``.

    Each dot-separated part is a plain identifier or an already double-quoted one;
    anything else (spaces, semicolons, subqueries) is rejected with ``ValueError``.
    """
    if not _RELATION_RE.fullmatch(name):
        raise ValueError(f"invalid relation name {name!r}")
    parts = re.findall(_RELATION_PART, name)
    return ".".join(p if p.startswith('"') else _quote_ident(p) for p in parts)


class _Compiler:
    """Turns a validated AST into a DuckDB boolean expression."""

    def __init__(
        self, events_sql: str, alias: str, as_of_sql: str, key_column: str = DEFAULT_KEY
    ) -> None:
        self.events_sql = events_sql
        self.alias = alias
        self.as_of = as_of_sql
        self.key = _quote_ident(key_column)

    def cond(self, node: Expr) -> str:
        """SQL that is always true or false (never NULL) for a condition node."""
        if isinstance(node, BoolOp):
            return f"({self.cond(node.left)} {node.op.upper()} {self.cond(node.right)})"
        if isinstance(node, Not):
            return f"(NOT {self.cond(node.operand)})"
        if isinstance(node, IsNull):
            return f"({self.value(node.operand)} IS {'NOT ' if node.negated else ''}NULL)"
        if isinstance(node, Const) and isinstance(node.value, bool):
            return _sql_literal(node.value)
        return f"COALESCE({self.predicate(node)}, false)"

    def predicate(self, node: Expr) -> str:
        """SQL for a comparison-like node; may evaluate to NULL."""
        neg = "NOT " if getattr(node, "negated", False) else ""
        if isinstance(node, Compare):
            return f"({self.value(node.left)} {node.op} {self.value(node.right)})"
        if isinstance(node, InList):
            items = ", ".join(self.value(i) for i in node.items)
            return f"({self.value(node.operand)} {neg}IN ({items}))"
        if isinstance(node, Between):
            lo, hi = self.value(node.low), self.value(node.high)
            return f"({self.value(node.operand)} {neg}BETWEEN {lo} AND {hi})"
        if isinstance(node, StringMatch):
            fn = "contains" if node.op == "contains" else "starts_with"
            return f"({neg}{fn}({self.value(node.operand)}, {self.value(node.pattern)}))"
        return self.value(node)

    def value(self, node: Expr) -> str:
        """SQL for a value node (number, string, field, events count, arithmetic)."""
        if isinstance(node, Const):
            return _sql_literal(node.value)
        if isinstance(node, FieldRef):
            return f"{self.alias}.{_quote_ident(node.name)}"
        if isinstance(node, Events):
            return self.events(node)
        if isinstance(node, Neg):
            return f"(-({self.value(node.operand)}))"
        if isinstance(node, Arith):
            return self.arith(node)
        return self.cond(node)

    def arith(self, node: Arith) -> str:
        """Arithmetic in DOUBLE (no integer overflow); ``x / 0`` is NULL."""
        left = f"CAST({self.value(node.left)} AS DOUBLE)"
        right = f"CAST({self.value(node.right)} AS DOUBLE)"
        if node.op == "/":
            right = f"NULLIF({right}, 0)"
        return f"({left} {node.op} {right})"

    def events(self, node: Events) -> str:
        """Correlated count of the customer's events of one type in (as_of - window, as_of]."""
        minutes = _window_minutes(node.window)
        if (
            node.event_type not in EVENT_TYPES
            or minutes is None
            or node.per not in (None, *PER_VALUES)
        ):
            raise ValueError(f"invalid events() call {node}; validate the rule first")
        conds = [
            f"_ev.{self.key} = {self.alias}.{self.key}",
            f"_ev.event_type = {_sql_string(node.event_type)}",
            f"_ev.event_ts > {self.as_of} - INTERVAL {minutes} MINUTE",
            f"_ev.event_ts <= {self.as_of}",
        ]
        source = f"FROM {self.events_sql} AS _ev WHERE {' AND '.join(conds)}"
        if node.per is None:
            return f"COALESCE((SELECT count(*) {source}), 0)"
        col = f"_ev.{node.per}"
        inner = f"SELECT count(*) AS _n {source} AND {col} IS NOT NULL GROUP BY {col}"
        return f"COALESCE((SELECT max(_n) FROM ({inner}) AS _per), 0)"


def _check_alias(alias: str) -> None:
    """Features alias must be a plain identifier not used internally."""
    if not _IDENT_RE.fullmatch(alias) or alias in _RESERVED_ALIASES:
        raise ValueError(f"invalid features alias {alias!r}")


def _check_key(key_column: str) -> None:
    if not _IDENT_RE.fullmatch(key_column):
        raise ValueError(f"invalid key column {key_column!r}")


def _check_param(as_of_param: str) -> None:
    """The as-of value must be passed as a named DuckDB parameter such as ``$as_of``."""
    if not _PARAM_RE.fullmatch(as_of_param):
        raise ValueError(f"as_of_param must look like '$name', got {as_of_param!r}")


def compile_rule(
    expr: Expr,
    *,
    events_relation: str,
    features_alias: str = "f",
    as_of_param: str = "$as_of",
    key_column: str = DEFAULT_KEY,
) -> str:
    """Compile a *validated* rule to a DuckDB boolean expression (never NULL).

    Use it as ``SELECT f.customer_key FROM <features> AS f WHERE <expr>``; fields are
    referenced as ``<features_alias>."<name>"``. ``events(...)`` becomes a correlated
    subquery over ``events_relation`` (columns ``key_column``, event_type, event_ts,
    category, product_id) matched on ``key_column`` (customer_key in the pseudonymized
    analytics layers, customer_id in the campaign layer), relative to the timestamp bound to
    ``as_of_param``; the
    parameter appears in the SQL only if the rule uses ``events()``, so bind it only then
    (DuckDB rejects unused parameters). :func:`segment_membership_sql` always uses it.
    """
    _check_alias(features_alias)
    _check_param(as_of_param)
    _check_key(key_column)
    compiler = _Compiler(
        quote_relation(events_relation),
        features_alias,
        f"CAST({as_of_param} AS TIMESTAMP)",
        key_column,
    )
    return compiler.cond(expr)


# --------------------------------------------------------------------------- segment config

_NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class SegmentDefinition(BaseModel):
    """One segment: a named rule, optionally in an exclusive group with a priority."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: _NonEmpty
    description: str = ""
    rule: _NonEmpty
    priority: StrictInt | None = None
    exclusive_group: _NonEmpty | None = None


class SegmentsConfig(BaseModel):
    """The whole ``segments.yaml`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segments: list[SegmentDefinition]


def _pydantic_errors(exc: ValidationError, data: Any) -> list[RuleError]:
    """Translate pydantic errors into RuleErrors naming the segment and key."""
    errors = []
    for err in exc.errors():
        loc, segment, rule = err["loc"], None, None
        if len(loc) >= 2 and loc[0] == "segments" and isinstance(loc[1], int):
            raw = data["segments"][loc[1]]
            raw = raw if isinstance(raw, dict) else {}
            segment = str(raw.get("name") or "").strip() or f"#{loc[1] + 1}"
            rule = raw.get("rule") if isinstance(raw.get("rule"), str) else None
            loc = loc[2:]
        key = ".".join(str(part) for part in loc)
        errors.append(RuleError(f"{key}: {err['msg']}" if key else err["msg"], segment, rule))
    return errors


def parse_segments_yaml(text: str, *, source: str = "<segments>") -> SegmentsConfig:
    """Parse YAML text with a top-level ``segments:`` list (structure only, rules unchecked)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SegmentConfigError([RuleError(f"{source}: invalid YAML: {exc}")]) from None
    if not isinstance(data, dict) or "segments" not in data:
        raise SegmentConfigError([RuleError(f"{source}: expected a top-level 'segments:' list")])
    try:
        return SegmentsConfig.model_validate(data)
    except ValidationError as exc:
        raise SegmentConfigError(_pydantic_errors(exc, data)) from None


def load_segments_config(path: str | Path) -> SegmentsConfig:
    """Load ``segments.yaml`` from disk (see :func:`parse_segments_yaml`)."""
    path = Path(path)
    return parse_segments_yaml(path.read_text(encoding="utf-8"), source=str(path))


def collect_segment_errors(config: SegmentsConfig, schema: FeatureSchema) -> list[RuleError]:
    """Every problem in the config: duplicate names (case-insensitive) and bad rules."""
    errors: list[RuleError] = []
    seen: dict[str, int] = {}
    for index, seg in enumerate(config.segments, start=1):
        key = seg.name.casefold()
        if key in seen:
            msg = f"duplicate segment name '{seg.name}' (also segment #{seen[key]})"
            errors.append(RuleError(msg, segment=seg.name, rule=seg.rule))
        seen.setdefault(key, index)
        errors += check_rule(seg.rule, schema, segment=seg.name)
    return errors


def validate_segments(config: SegmentsConfig, schema: FeatureSchema) -> dict[str, Expr]:
    """Validate all segments; return ``{name: parsed rule}``, else raise SegmentConfigError."""
    errors = collect_segment_errors(config, schema)
    if errors:
        raise SegmentConfigError(errors)
    return {seg.name: parse_rule(seg.rule) for seg in config.segments}


def _segment_select(
    index: int, seg: SegmentDefinition, cond: str, features_sql: str, key: str
) -> str:
    """One UNION ALL branch: the members of one segment plus ranking columns."""
    priority = "NULL" if seg.priority is None else str(int(seg.priority))
    group = "NULL" if seg.exclusive_group is None else _sql_string(seg.exclusive_group)
    return (
        f"SELECT f.{key}, CAST({_sql_string(seg.name)} AS VARCHAR) AS segment, "
        f"{index} AS _ord, CAST({priority} AS BIGINT) AS _priority, "
        f"CAST({group} AS VARCHAR) AS _grp "
        f"FROM {features_sql} AS f CROSS JOIN _params AS _p WHERE {cond}"
    )


def segment_membership_sql(
    config: SegmentsConfig,
    schema: FeatureSchema,
    *,
    features_relation: str,
    events_relation: str,
    as_of_param: str = "$as_of",
    key_column: str = DEFAULT_KEY,
) -> str:
    """One DuckDB query returning ``(<key_column>, segment)`` for every segment.

    Validates first (raises :class:`SegmentConfigError`). The query always uses the
    ``as_of_param`` parameter exactly once, so always bind it, e.g.
    ``con.execute(sql, {"as_of": as_of})``. Within an ``exclusive_group`` a customer
    keeps only the matching segment with the lowest priority (None last, then file order).
    """
    _check_param(as_of_param)
    _check_key(key_column)
    rules = validate_segments(config, schema)
    features_sql = quote_relation(features_relation)
    key = _quote_ident(key_column)
    compiler = _Compiler(quote_relation(events_relation), "f", "_p.as_of", key_column)
    branches = [
        _segment_select(i, seg, compiler.cond(rules[seg.name]), features_sql, key)
        for i, seg in enumerate(config.segments)
    ]
    if not branches:
        empty = SegmentDefinition(name="-", rule="false")
        branches = [_segment_select(0, empty, "false", features_sql, key)]
    union = "\n  UNION ALL\n  ".join(branches)
    return (
        f"WITH _params AS (SELECT CAST({as_of_param} AS TIMESTAMP) AS as_of),\n"
        f"_matches AS (\n  {union}\n),\n"
        "_ranked AS (\n  SELECT *, row_number() OVER (\n"
        f"    PARTITION BY {key}, _grp ORDER BY _priority NULLS LAST, _ord) AS _rank\n"
        "  FROM _matches\n)\n"
        f"SELECT {key}, segment FROM _ranked WHERE _grp IS NULL OR _rank = 1"
    )


# --------------------------------------------------------------------------- schema helper

_NUMBER_TYPES = frozenset(
    {
        *("TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "FLOAT", "REAL"),
        *("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "DOUBLE", "DECIMAL"),
        *("NUMERIC", "INT1", "INT2", "INT4", "INT8", "FLOAT4", "FLOAT8", "LONG", "SHORT"),
    }
)
_TYPE_PREFIXES: tuple[tuple[str, FieldType], ...] = (
    ("TIMESTAMP", "timestamp"),
    ("DATETIME", "timestamp"),
    ("DATE", "date"),
    ("BOOL", "boolean"),
    ("VARCHAR", "string"),
    ("TEXT", "string"),
    ("STRING", "string"),
    ("ENUM", "string"),
)


def feature_schema_from_duckdb(columns: Iterable[tuple[str, str]]) -> dict[str, FieldType]:
    """Map ``(column, duckdb_type)`` pairs (e.g. from ``DESCRIBE``) to a FeatureSchema.

    Columns of other types (lists, structs, blobs, ...) are left out.
    """
    schema: dict[str, FieldType] = {}
    for name, sql_type in columns:
        base = sql_type.upper().split("(")[0].strip()
        if any(mark in base for mark in ("[", "STRUCT", "MAP", "UNION")):
            continue
        if base in _NUMBER_TYPES:
            schema[name] = "number"
            continue
        for prefix, typ in _TYPE_PREFIXES:
            if base.startswith(prefix):
                schema[name] = typ
                break
    return schema
