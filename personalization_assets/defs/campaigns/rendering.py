"""Email rendering: (campaign template, per-recipient context) -> a ready-to-send email.

Pure logic (Jinja2 + css_inline, no Dagster). The pipeline builds one context per recipient and
calls :meth:`EmailRenderer.render_many`; every recipient gets a :class:`RenderedEmail` or a
:class:`TemplateRenderError` *value*, so one bad recipient (or one broken template) never stops
the rest of a run.

API
---
::

    config = RendererConfig("templates", brand={...}, base_url="https://shop.example")
    renderer = EmailRenderer(config)
    renderer.validate_template("newsletter")        # compile check; raises TemplateRenderError
    email = renderer.render("newsletter", context)  # RenderedEmail; raises TemplateRenderError
    results = renderer.render_many("newsletter", contexts)  # [RenderedEmail | TemplateRenderError]

``RenderedEmail`` has ``subject``, ``preheader`` (plain one-line strings), ``html`` (CSS inlined
into ``style=""`` attributes), ``text`` (plain-text alternative, links kept as URLs),
``headers`` (``List-Unsubscribe`` / ``List-Unsubscribe-Post``) and ``warnings`` (e.g. line breaks
removed from the subject). Template names are paths under ``templates_dir``
(``campaigns/newsletter.html.j2``); a bare name such as ``newsletter`` means
``campaigns/newsletter.html.j2``.

Context
-------
A plain dict (any mapping with string keys). Keys the shipped templates use:

``recipient``        ``{customer_id, first_name, email}``. ``first_name`` may be missing or empty:
                     templates write ``recipient.first_name | default("there", true)``.
``campaign``         ``{campaign_id, name, variant, rule}``; ``variant`` (e.g. ``"A"``/``"B"``) may
                     switch subject lines or blocks.
``recommendations``  list of ``{product_id, name, price, currency, image_url, url, category}``;
                     an empty list shows the fallback block (never an empty table).
``recent_purchase``  optional ``{product_id, name, url?, image_url?, purchased_at?}``; the
                     block that mentions it is shown only when present (default ``None``).
``lifecycle``        optional lifecycle predictions of the recipient (``models.customer_lifecycle``):
                     ``{p_alive, predicted_clv, historic_clv, total_clv, expected_next_order_date,
                     expected_days_to_next_order, average_days_between_orders,
                     churn_probability, churn_risk_band}`` (default ``None``).
``offer``            optional ``{title, description, code?, expires_at?, url?, cta_label?}``
                     (default ``None``).
``links``            ``{unsubscribe_url, preferences_url, view_in_browser_url}`` and optionally
                     ``unsubscribe_mailto``. ``unsubscribe_url`` is required (it also feeds the
                     ``List-Unsubscribe`` header); relative URLs are joined to ``base_url``.
``behavioral_allowed`` bool, default ``False``: content derived from tracking (browsing-based
                     wording, cart reminders) is shown only when true.
``brand``            ``{name, address, logo_url, website_url?}``; defaults to
                     ``RendererConfig.brand``; keys given in the context override it key by key.

Anything else in the context is available to templates as well. Templates may also read
``base_url`` (the config value). Missing variables are errors (``StrictUndefined``) unless the
template declares a default explicitly: ``{{ first_name | default('there') }}``. The error names
the template file, the line and the variable, e.g.
``campaigns/newsletter.html.j2, line 12: undefined variable 'recipient.first_name' ...``.

Filters available to templates: ``money(currency)`` (``89.5 | money("EUR")`` -> ``€89.50``),
``abs_url`` (joins relative URLs to ``base_url``; URLs with schemes other than http, https,
mailto and tel become ``#``), plus the Jinja built-ins.

Templates
---------
See ``templates/README.md``. A campaign template extends ``layouts/base.html.j2`` and defines
``{% block subject %}`` and ``{% block preheader %}`` (both required, rendered as plain text,
whitespace-collapsed to one line) and overrides layout blocks. An optional ``{% block text %}``
replaces the plain-text part, which is otherwise derived from the HTML.

How a template is compiled (once per template, cached)
-----------------------------------------------------
1. Every file is read through a loader that normalises typographic quotes, non-breaking and
   zero-width spaces *inside* Jinja tags (``{{ “name” }}`` -> ``{{ "name" }}``), then parsed on
   its own so syntax errors point at the real file and line.
2. The inheritance chain is flattened at source level: ``{% extends %}``/``{% block %}``
   (including ``{{ super() }}``) and literal ``{% include %}`` are resolved into one HTML
   document. Top-level ``{% set %}`` (also inside a top-level ``{% if %}``), ``{% import %}``,
   ``{% from %}`` and ``{% macro %}`` of child templates are hoisted in front, as Jinja runs
   them before the layout.
3. CSS inlining is done on that *template source*, once: every Jinja tag is swapped for a
   placeholder (an HTML comment ``<!--\\ue000N\\ue001-->`` between elements, so the HTML5 parser
   cannot foster-parent ``{% for %}`` out of a ``<table>``; a bare private-use marker inside
   attribute values and raw-text elements), ``css_inline`` parses the document, moves the
   ``<style>`` rules into ``style=""`` attributes (``@media`` rules stay in a ``<style>`` for
   clients that support them), and the placeholders are put back. The order of all tags is
   checked afterwards, so a template whose HTML the parser would rearrange fails loudly.
4. The plain-text part is derived from the same flattened source (stdlib ``html.parser``):
   block elements become line breaks, ``<a href=U>label</a>`` becomes ``label (U)``, images,
   ``<head>`` and elements marked ``data-text="skip"`` are left out. Jinja tags are kept, so the
   text is a Jinja template too and renders from the same context; every ``{{ value }}`` in it
   goes through a filter that strips HTML tags from values.
5. Subject, preheader and HTML become ``{% set %}`` captures of ONE compiled template, so each
   recipient costs a single Jinja render. The text part is written in the same pass: its
   static pieces and values go to a second buffer between the same two statements as in the
   HTML, so each ``if``/``for`` runs once for both parts (templates whose text cannot be
   interleaved that way, e.g. with macros, block sets or a ``{% block text %}``, get the text
   as a second capture instead). A source map sends errors back to the original file/line.
6. Jinja's generated Python is rewritten before it is compiled (``_FastPaths``): the common
   case of each per-value helper runs inline (``product.name`` on a plain dict is an item
   lookup, escaping a ``str`` calls ``markupsafe``'s C helper, ``abs_url`` of an absolute
   URL and ``default`` of a missing key need no call), everything else calls the original
   helper; ``{% autoescape %}`` bookkeeping that nothing reads at runtime is dropped. Output,
   errors and line numbers are unchanged (a test renders every shipped template both ways).
   Before that, a value used more than once within one output statement and the text
   statement split from it (``product.name`` as ``alt`` text, link text and text part) is
   looked up, and escaped, once (``_SharedValues``). Non-ASCII values escaped to character
   references are memoised (prices in €: the same few strings for every recipient).

Rendering therefore costs about what the values cost: no per-recipient HTML parsing, CSS
work or HTML-to-text conversion, and little of Jinja's per-call overhead. Autoescaping stays
on for the HTML; the sandbox is ``ImmutableSandboxedEnvironment`` (``obj.key`` on a plain dict
reads the item first: the stock sandbox raises and catches an AttributeError for every
``product.name``; dict items are data, so nothing new is exposed). Values are escaped to
ASCII in the HTML: characters outside ASCII become numeric character references (``€`` ->
``&#8364;``, shown the same by every client) so a price does not make Python store the whole
page with two bytes per character. Throughput: ``bench/render_bench.py`` (bench/README.md).

Compiled-template cache
-----------------------
Compiling a template (flattening, CSS inlining, code generation) takes 0.1-0.3 s; every
process that renders (each Dagster run worker, each benchmark process) would pay it again.
With ``RendererConfig(cache_dir=...)`` the compiled code, its source map and file list are
kept in ``<cache_dir>/<slot>.<python tag>.code`` (``marshal``); another process loads them in a
few milliseconds. An entry is tagged with a SHA-256 over this module's source, the jinja2 /
css_inline / markupsafe versions, the interpreter, the compile options and the path and bytes
of every file under ``templates_dir``: editing any template, partial or layout (or upgrading
anything that shapes the code) makes the entry stale, and the next process recompiles and
replaces it (one file per template and options, never a pile of versions). Entries are
written to a temporary file and renamed into place, so concurrent processes never read half
an entry; unreadable entries are misses; an unwritable folder only costs the compile.
Templates that fail to compile are not cached. ``EmailRenderer.disk_cache_stats`` counts
hits, misses and writes. The folder is trusted like the code: an entry is executed.

Template restrictions that follow from compiling this way (each is reported as an error with the
file and line, except the last two):

* no Jinja tags inside an HTML tag outside an attribute value (write
  ``class="{{ 'a' if x else 'b' }}"``, not ``<td {% if x %}class="a"{% endif %}>``);
* no Jinja inside ``<style>`` (CSS is inlined at compile time, so it must be static);
* ``{% include %}``/``{% extends %}`` take a string literal;
* every branch of a conditional should be well-formed HTML on its own, and tables should spell
  out ``<tbody>`` (the HTML parser would otherwise insert one where it sees fit);
* markup produced by imported macros is not CSS-inlined (put styled markup in includes).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import marshal
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from html.parser import HTMLParser
from pathlib import Path
from types import CodeType
from typing import Any
from urllib.parse import urljoin, urlsplit

import css_inline
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    pass_context,
)
from jinja2.exceptions import UndefinedError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined, markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

try:  # the C helper behind markupsafe.escape (same escaping, without the Markup wrapper)
    from markupsafe._speedups import _escape_inner
except ImportError:  # pragma: no cover - pure-Python markupsafe
    from markupsafe._native import _escape_inner

__all__ = [
    "DEFAULT_TEMPLATES_DIR",
    "EmailRenderer",
    "RenderedEmail",
    "RendererConfig",
    "TemplateRenderError",
    "normalize_template_source",
]

DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "templates"

_META_BLOCKS = ("subject", "preheader", "text")
_HOISTABLE = frozenset({"set", "import", "from", "macro", "if"})
_BODY_TAGS = frozenset({"set", "macro", "if", "for", "with", "filter", "call"})
_MAX_INCLUDE_DEPTH = 32


# --------------------------------------------------------------------------------------------
# Results and errors
# --------------------------------------------------------------------------------------------


class TemplateRenderError(Exception):
    """A template could not be compiled, or could not be rendered for one recipient.

    ``str(error)`` reads ``<template>, line <n>: <reason> (recipient <id>)``; the parts are
    also available as attributes (``template``, ``lineno``, ``variable``, ``customer_id``).
    """

    def __init__(
        self,
        reason: str,
        *,
        template: str | None = None,
        lineno: int | None = None,
        variable: str | None = None,
        customer_id: Any = None,
    ) -> None:
        self.reason = reason
        self.template = template
        self.lineno = lineno
        self.variable = variable
        self.customer_id = customer_id
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.template or "<template>"
        if self.lineno:
            where += f", line {self.lineno}"
        message = f"{where}: {self.reason}"
        if self.customer_id is not None:
            message += f" (recipient {self.customer_id})"
        return message

    def __reduce__(self) -> tuple[Any, ...]:
        state = {
            "template": self.template,
            "lineno": self.lineno,
            "variable": self.variable,
            "customer_id": self.customer_id,
        }
        return (_rebuild_error, (self.reason, state))


def _rebuild_error(reason: str, state: dict[str, Any]) -> TemplateRenderError:
    return TemplateRenderError(reason, **state)


@dataclass(slots=True)
class RenderedEmail:
    """One recipient's email, ready to hand to a sender."""

    subject: str
    preheader: str
    html: str
    text: str
    headers: dict[str, str]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RendererConfig:
    """Where templates live and the defaults every email gets.

    ``brand`` is the default ``brand`` context entry; ``base_url`` is joined to relative URLs
    (``abs_url`` filter, ``List-Unsubscribe``) and exposed to templates as ``base_url``;
    ``unsubscribe_mailto`` (an address or ``mailto:`` URL) is added to ``List-Unsubscribe`` when
    the context's ``links`` has no ``unsubscribe_mailto``. ``keep_media_queries`` keeps
    ``@media`` rules in a ``<style>`` element (everything else is inlined). ``auto_reload``
    recompiles a template when one of its files changed (for previews; costs a ``stat`` per
    file and render call). ``cache_dir`` keeps compiled templates on disk so other processes
    (run workers, benchmarks) load them instead of compiling again (see "Compiled-template
    cache" in the module docs); ``None`` keeps them in memory only.
    """

    templates_dir: Path | str = DEFAULT_TEMPLATES_DIR
    brand: Mapping[str, Any] = field(default_factory=dict)
    base_url: str = ""
    unsubscribe_mailto: str | None = None
    keep_media_queries: bool = True
    auto_reload: bool = False
    cache_dir: Path | str | None = None


# --------------------------------------------------------------------------------------------
# Scanning Jinja source
# --------------------------------------------------------------------------------------------

_SMART_DOUBLE = "\u201c\u201d\u201e\u201f\uff02"
_SMART_SINGLE = "\u2018\u2019\u201a\u201b\uff07"
_ODD_SPACES = "\u00a0\u2007\u202f\u3000"
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_EDITOR_ARTEFACTS_RE = re.compile(f"[{_SMART_DOUBLE}{_SMART_SINGLE}{_ODD_SPACES}{_ZERO_WIDTH}]")
_OPEN_RE = re.compile(r"\{[{%#]")
_STMT_RE = re.compile(r"\{%[-+]?\s*([A-Za-z_]\w*)?\s*(.*?)\s*[-+]?%\}\Z", re.S)
_ENDRAW_RE = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
_EXPR_RE = re.compile(r"\{\{([-+]?)(.*?)([-+]?)\}\}\Z", re.S)
_SUPER_CALL_RE = re.compile(r"(?<![\w.])super\s*\(")
_SUPER_RE = re.compile(r"\{\{[-+]?\s*super\(\s*\)\s*[-+]?\}\}\Z")
_LITERAL_ARG_RE = re.compile(
    r"""(?P<q>["'])(?P<name>[^"']+)(?P=q)"""
    r"""(?:\s+ignore\s+missing)?(?:\s+(?:with|without)\s+context)?\Z"""
)
_BLOCK_SET_RE = re.compile(r"[\w\s.,()]+=(?!=)")


@dataclass(slots=True)
class _Piece:
    """A run of template text or one Jinja construct, with where it came from."""

    kind: str  # "text", "expr", "stmt", "comment", "raw"
    src: str
    template: str
    line: int
    tag: str = ""
    arg: str = ""


def _is_apostrophe(text: str, pos: int) -> bool:
    """A typographic single quote followed by a letter is an apostrophe (It’s), not a closer."""
    return text[pos] in _SMART_SINGLE and pos + 1 < len(text) and text[pos + 1].isalnum()


def _find_tag_end(source: str, pos: int, closer: str) -> int:
    """Index just past ``closer``, skipping string literals (ASCII or typographic quotes)."""
    n = len(source)
    quote_closers = ""
    while pos < n:
        c = source[pos]
        if quote_closers:
            if c == "\\":
                pos += 2
                continue
            if c in quote_closers and not _is_apostrophe(source, pos):
                quote_closers = ""
        elif c == '"' or c == "'":
            quote_closers = c
        elif c in _SMART_DOUBLE:
            quote_closers = _SMART_DOUBLE + '"'
        elif c in _SMART_SINGLE:
            quote_closers = _SMART_SINGLE + "'"
        elif source.startswith(closer, pos):
            return pos + len(closer)
        pos += 1
    return -1


def _scan(source: str, template: str, *, lenient: bool = False) -> list[_Piece]:
    """Split Jinja source into text pieces and constructs, each with its line number."""
    pieces: list[_Piece] = []
    i, n, line = 0, len(source), 1
    while i < n:
        m = _OPEN_RE.search(source, i)
        if m is None:
            pieces.append(_Piece("text", source[i:], template, line))
            break
        j = m.start()
        if j > i:
            text = source[i:j]
            pieces.append(_Piece("text", text, template, line))
            line += text.count("\n")
        opener = source[j + 1]
        if opener == "#":
            end = source.find("#}", j + 2)
            end = end + 2 if end >= 0 else -1
            kind = "comment"
        else:
            end = _find_tag_end(source, j + 2, "}}" if opener == "{" else "%}")
            kind = "expr" if opener == "{" else "stmt"
        if end < 0:
            if lenient:
                pieces.append(_Piece("text", source[j:], template, line))
                break
            raise TemplateRenderError("unterminated Jinja tag", template=template, lineno=line)
        src = source[j:end]
        tag = arg = ""
        if kind == "stmt":
            sm = _STMT_RE.match(src)
            if sm:
                tag, arg = sm.group(1) or "", sm.group(2)
            if tag == "raw":
                endraw = _ENDRAW_RE.search(source, end)
                if endraw is None:
                    if lenient:
                        pieces.append(_Piece("text", source[j:], template, line))
                        break
                    raise TemplateRenderError(
                        "{% raw %} without {% endraw %}", template=template, lineno=line
                    )
                end = endraw.end()
                src = source[j:end]
                kind = "raw"
        pieces.append(_Piece(kind, src, template, line, tag, arg))
        line += src.count("\n")
        i = end
    return pieces


def _normalise_tag(src: str) -> str:
    out: list[str] = []
    quote = ""
    closers = ""
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if closers:
            if c == "\\" and i + 1 < n:
                out.append(src[i : i + 2])
                i += 2
                continue
            if c in closers and not _is_apostrophe(src, i):
                out.append(quote)
                closers = ""
            else:
                out.append(c)
        elif c == '"' or c == "'":
            quote = closers = c
            out.append(c)
        elif c in _SMART_DOUBLE:  # closed by any double quote, typographic or not (“x" too)
            quote, closers = '"', _SMART_DOUBLE + '"'
            out.append('"')
        elif c in _SMART_SINGLE:
            quote, closers = "'", _SMART_SINGLE + "'"
            out.append("'")
        elif c in _ODD_SPACES:
            out.append(" ")
        elif c not in _ZERO_WIDTH:
            out.append(c)
        i += 1
    return "".join(out)


def normalize_template_source(source: str) -> str:
    """Replace editor artefacts inside Jinja tags; text outside the tags is left alone.

    Typographic quotes used as string delimiters become ASCII quotes (``{{ “name” }}`` ->
    ``{{ "name" }}``, ``default(‘there’)`` -> ``default('there')``); typographic quotes *inside*
    an ASCII-quoted string are content and stay. Non-breaking spaces become spaces and
    zero-width characters are removed outside string literals. Line numbers do not change.
    """
    if not _EDITOR_ARTEFACTS_RE.search(source):
        return source
    return "".join(
        _normalise_tag(p.src) if p.kind in ("expr", "stmt") else p.src
        for p in _scan(source, "", lenient=True)
    )


class _NormalisingLoader(FileSystemLoader):
    def get_source(self, environment: Any, template: str) -> tuple[str, str, Any]:
        source, filename, uptodate = super().get_source(environment, template)
        return normalize_template_source(source), filename, uptodate


# --------------------------------------------------------------------------------------------
# Flattening extends / block / include
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    name: str
    body: list[Any]
    start: _Piece


@dataclass(slots=True)
class _Flat:
    body: list[_Piece]
    prelude: list[_Piece]
    defs: dict[str, list[_Block]]
    files: dict[str, str]


def _tree(pieces: list[_Piece]) -> list[Any]:
    root: list[Any] = []
    stack: list[list[Any]] = [root]
    for p in pieces:
        if p.kind == "stmt" and p.tag == "block":
            block = _Block(p.arg.split()[0] if p.arg.split() else "", [], p)
            stack[-1].append(block)
            stack.append(block.body)
        elif p.kind == "stmt" and p.tag == "endblock":
            if len(stack) > 1:
                stack.pop()
        else:
            stack[-1].append(p)
    return root


def _collect_blocks(nodes: list[Any], defs: dict[str, list[_Block]]) -> None:
    for node in nodes:
        if isinstance(node, _Block):
            defs.setdefault(node.name, []).append(node)
            _collect_blocks(node.body, defs)


def _literal_target(piece: _Piece) -> str:
    m = _LITERAL_ARG_RE.match(piece.arg.strip())
    if m is None:
        raise TemplateRenderError(
            f"{{% {piece.tag} %}} needs a quoted template name, got {piece.arg.strip()!r}",
            template=piece.template,
            lineno=piece.line,
        )
    return m.group("name")


class _Flattener:
    def __init__(self, env: ImmutableSandboxedEnvironment) -> None:
        self.env = env
        self.files: dict[str, str] = {}

    def load(self, name: str, origin: _Piece | None) -> list[_Piece]:
        try:
            source, filename, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
        except TemplateNotFound:
            where = {"template": origin.template, "lineno": origin.line} if origin else {}
            raise TemplateRenderError(f"template not found: {name!r}", **where) from None
        self.files[name] = filename
        try:
            self.env.parse(source, name, filename)
        except TemplateSyntaxError as exc:
            raise TemplateRenderError(
                f"syntax error: {exc.message}", template=name, lineno=exc.lineno
            ) from None
        pieces = _scan(source, name)
        for p in pieces:
            if p.kind == "text" and ("\ue000" in p.src or "\ue001" in p.src):
                raise TemplateRenderError(
                    "the characters U+E000/U+E001 are reserved", template=name, lineno=p.line
                )
        return pieces

    def flatten(self, name: str, stack: tuple[str, ...], origin: _Piece | None = None) -> _Flat:
        if len(stack) > _MAX_INCLUDE_DEPTH:
            raise TemplateRenderError(
                f"templates nested too deeply: {' -> '.join(stack)}", template=name
            )
        chain: list[tuple[str, list[Any]]] = []
        current, seen, via = name, set(stack[:-1]), origin
        while True:
            if current in seen:
                raise TemplateRenderError(
                    f"circular extends/include of {current!r}",
                    template=via.template if via else name,
                    lineno=via.line if via else None,
                )
            seen.add(current)
            tree = _tree(self.load(current, via))
            chain.append((current, tree))
            parent = next((n for n in tree if isinstance(n, _Piece) and n.tag == "extends"), None)
            if parent is None:
                break
            via, current = parent, _literal_target(parent)
        defs: dict[str, list[_Block]] = {}
        for _, tree in chain:
            _collect_blocks(tree, defs)
        prelude: list[_Piece] = []
        for tmpl_name, tree in chain[:-1]:
            prelude.extend(self._hoist(tmpl_name, tree))
        body: list[_Piece] = []
        self._expand(chain[-1][1], defs, stack, body)
        return _Flat(body, prelude, defs, self.files)

    def _hoist(self, name: str, tree: list[Any]) -> list[_Piece]:
        """Top-level statements of a child template, which Jinja runs before the layout."""
        out: list[_Piece] = []
        opened: list[str] = []  # statement tags whose body is being copied
        for node in tree:
            if isinstance(node, _Block):
                if opened:
                    raise TemplateRenderError(
                        f"{{% block {node.name} %}} inside a top-level {{% {opened[0]} %}} is "
                        "not supported",
                        template=name,
                        lineno=node.start.line,
                    )
                continue
            if opened:
                out.append(node)
                if node.kind == "stmt":
                    if node.tag in _BODY_TAGS and not (
                        node.tag == "set" and _BLOCK_SET_RE.match(node.arg)
                    ):
                        opened.append(node.tag)
                    elif node.tag == "end" + opened[-1]:
                        opened.pop()
                continue
            if node.kind in ("text", "comment") or node.tag == "extends":
                continue
            if node.kind == "stmt" and node.tag in _HOISTABLE:
                out.append(node)
                if node.tag in _BODY_TAGS and not (
                    node.tag == "set" and _BLOCK_SET_RE.match(node.arg)
                ):
                    opened.append(node.tag)
                continue
            raise TemplateRenderError(
                "a template that extends another may only contain blocks and "
                "{% set %}/{% if %}/{% import %}/{% from %}/{% macro %} at its top level",
                template=name,
                lineno=node.line,
            )
        return out

    def _expand(
        self, nodes: list[Any], defs: dict[str, list[_Block]], stack: tuple[str, ...], out: list
    ) -> None:
        for node in nodes:
            if isinstance(node, _Block):
                if node.name not in _META_BLOCKS:
                    self.expand_block(node.name, 0, defs, stack, out)
            elif node.kind == "stmt" and node.tag == "include":
                target = _literal_target(node)
                if "ignore missing" in " ".join(node.arg.split()):
                    try:
                        self.env.loader.get_source(self.env, target)  # type: ignore[union-attr]
                    except TemplateNotFound:
                        continue
                flat = self.flatten(target, (*stack, target), node)
                out.extend(flat.prelude)
                out.extend(flat.body)
            elif node.kind == "stmt" and node.tag == "extends" or node.kind == "comment":
                continue
            else:
                out.append(node)

    def expand_block(
        self,
        name: str,
        level: int,
        defs: dict[str, list[_Block]],
        stack: tuple[str, ...],
        out: list,
    ) -> None:
        chain = defs[name]
        for node in chain[level].body:
            if isinstance(node, _Piece) and node.kind == "expr" and _SUPER_CALL_RE.search(node.src):
                if not _SUPER_RE.match(node.src):
                    raise TemplateRenderError(
                        "super() is supported only on its own: {{ super() }}",
                        template=node.template,
                        lineno=node.line,
                    )
                if level + 1 >= len(chain):
                    raise TemplateRenderError(
                        f"super() in block {name!r}, which no parent template defines",
                        template=node.template,
                        lineno=node.line,
                    )
                self.expand_block(name, level + 1, defs, stack, out)
            else:
                self._expand([node], defs, stack, out)


# --------------------------------------------------------------------------------------------
# Placeholders, CSS inlining and the combined template source
# --------------------------------------------------------------------------------------------

_PH_OPEN, _PH_CLOSE = "\ue000", "\ue001"
_PH_ANY_RE = re.compile("<!--\ue000(\\d+)\ue001-->|\ue000(\\d+)\ue001")
_PH_BARE_RE = re.compile("\ue000(\\d+)\ue001")
_TAGNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9:-]*")
_RAWTEXT_TAGS = frozenset({"style", "script", "title", "textarea", "xmp"})
_DATA_TEXT_ATTR_RE = re.compile(r"""\s+data-text\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+)""")


class _HtmlContext:
    """Tracks where in the HTML the next Jinja construct sits (just enough of HTML5)."""

    def __init__(self) -> None:
        self.mode = "data"
        self.tag = ""
        self.closing = False
        self.raw_end: re.Pattern[str] | None = None

    def feed(self, s: str) -> None:
        i, n = 0, len(s)
        while i < n:
            mode = self.mode
            if mode == "data":
                j = s.find("<", i)
                if j < 0:
                    return
                if s.startswith("<!--", j):
                    self.mode, i = "comment", j + 4
                    continue
                k = j + 1
                closing = k < n and s[k] == "/"
                if closing:
                    k += 1
                m = _TAGNAME_RE.match(s, k)
                if m:
                    self.tag, self.closing, self.mode = m.group(0).lower(), closing, "tag"
                    i = m.end()
                elif k < n and s[k] in "!?":
                    self.mode, i = "bogus", k
                else:
                    i = j + 1
            elif mode == "comment":
                j = s.find("-->", i)
                if j < 0:
                    return
                self.mode, i = "data", j + 3
            elif mode == "bogus":
                j = s.find(">", i)
                if j < 0:
                    return
                self.mode, i = "data", j + 1
            elif mode == "rawtext":
                assert self.raw_end is not None
                m = self.raw_end.search(s, i)
                if m is None:
                    return
                self.mode, self.closing, i = "tag", True, m.end()
            elif mode == "dq" or mode == "sq":
                j = s.find('"' if mode == "dq" else "'", i)
                if j < 0:
                    return
                self.mode, i = "tag", j + 1
            elif mode == "unq":
                c = s[i]
                if c in " \t\n\r\f":
                    self.mode = "tag"
                elif c == ">":
                    self.mode = "tag"
                    continue
                i += 1
            else:  # "tag" or "before_value"
                c = s[i]
                if c == ">":
                    if not self.closing and self.tag in _RAWTEXT_TAGS:
                        self.mode = "rawtext"
                        self.raw_end = re.compile("</" + self.tag, re.I)
                    else:
                        self.mode = "data"
                elif mode == "tag":
                    if c == "=":
                        self.mode = "before_value"
                elif c == '"':
                    self.mode = "dq"
                elif c == "'":
                    self.mode = "sq"
                elif c not in " \t\n\r\f":
                    self.mode = "unq"
                i += 1


def _jinja_literal(text: str) -> str:
    """Static text made safe to splice into Jinja source."""
    if "{{" in text or "{%" in text or "{#" in text or text.endswith("{"):
        return "{% raw %}" + text + "{% endraw %}"
    return text


def _wrap_expr(src: str, filter_name: str) -> str:
    m = _EXPR_RE.match(src)
    assert m is not None, src
    return "{{ (" + m.group(2) + ")|" + filter_name + " }}"


def _strip_ws_control(src: str) -> str:
    if src[2:3] in ("-", "+"):
        src = src[:2] + src[3:]
    if src[-3:-2] in ("-", "+"):
        src = src[:-3] + src[-2:]
    return src


class _SourceBuilder:
    """Concatenates the combined template and remembers where each construct came from."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.line = 1
        self.spans: list[tuple[int, int, _Piece]] = []

    def text(self, s: str) -> None:
        if s:
            self.parts.append(s)
            self.line += s.count("\n")

    def construct(self, src: str, piece: _Piece) -> None:
        start = self.line
        self.parts.append(src)
        self.line += src.count("\n")
        self.spans.append((start, self.line, piece))

    def source(self) -> str:
        return "".join(self.parts)


_TAG_STRIP_RE = re.compile(r"<[/!?A-Za-z][^>]*(?:>|\Z)")


def _html_document(body: list[_Piece]) -> tuple[str, list[_Piece]]:
    """The flattened body with every construct replaced by a placeholder, for css_inline."""
    ctx = _HtmlContext()
    out: list[str] = []
    constructs: list[_Piece] = []
    for p in body:
        if p.kind == "text":
            out.append(p.src)
            ctx.feed(p.src)
            continue
        if p.kind == "comment":
            continue
        idx = len(constructs)
        constructs.append(p)
        mode = ctx.mode
        if mode == "data":
            out.append(f"<!--{_PH_OPEN}{idx}{_PH_CLOSE}-->")
            continue
        if mode == "tag":
            raise TemplateRenderError(
                "Jinja tags inside an HTML tag are only supported inside attribute values "
                "(write class=\"{{ 'a' if x else 'b' }}\")",
                template=p.template,
                lineno=p.line,
            )
        if mode == "rawtext" and ctx.tag == "style":
            raise TemplateRenderError(
                "Jinja tags inside <style> are not supported: the CSS is inlined once at "
                "compile time, so it must be static",
                template=p.template,
                lineno=p.line,
            )
        if mode == "before_value":
            ctx.mode = "unq"
        out.append(f"{_PH_OPEN}{idx}{_PH_CLOSE}")
    return _DATA_TEXT_ATTR_RE.sub("", "".join(out)), constructs


def _emit_html(
    builder: _SourceBuilder, inlined: str, constructs: list[_Piece], template: str
) -> None:
    segments, order = _html_segments(inlined, constructs, template)
    for segment, idx in zip(segments, order, strict=False):
        builder.text(_jinja_literal(segment))
        builder.construct(constructs[idx].src, constructs[idx])
    builder.text(_jinja_literal(segments[-1]))


# --------------------------------------------------------------------------------------------
# HTML and text in one pass
# --------------------------------------------------------------------------------------------
#
# The derived text part is a sequence of static pieces and values with the same statements as
# the HTML, in the same order (text items are derived from the same constructs). When that
# holds, every text item can be written between the same two statements of the HTML pass:
# as a marker ``{{ N|_email_ts }}`` (static piece N) or ``{{ (expr)|_email_tv }}`` (a value),
# which ``_move_text_markers`` then moves from the HTML buffer into a text buffer in the
# compiled code. Markers sit right before the next statement, after every HTML construct of
# their interval, so an error is raised by the same construct as in two passes. Templates with
# other statements (block sets, macros, ``with``, ...), raw blocks, a ``{% block text %}`` or a
# different statement order in the text (a statement inside a link's ``href``) use two passes.

SINGLE_PASS_TEXT = True
_SINGLE_PASS_TAGS = frozenset({"if", "elif", "else", "endif", "for", "endfor", "set"})


class _SinglePassUnavailable(Exception):
    """The compiled code does not have the shape the single-pass rewrite expects."""


def _single_pass_plan(
    items: list[tuple[str, Any]], constructs: list[_Piece]
) -> list[list[tuple[str, Any]]] | None:
    """Text items grouped by the statement they follow, or None when one pass cannot do."""
    statements = []
    for i, p in enumerate(constructs):
        if p.kind == "raw":
            return None
        if p.kind == "stmt":
            if p.tag not in _SINGLE_PASS_TAGS:
                return None
            if p.tag == "set" and not _BLOCK_SET_RE.match(p.arg):
                return None
            statements.append(i)
    intervals: list[list[tuple[str, Any]]] = [[]]
    seen = []
    for kind, value in items:
        if kind == "c" and constructs[value].kind == "stmt":
            seen.append(value)
            intervals.append([])
        elif kind == "c" and constructs[value].kind != "expr":
            return None
        else:
            intervals[-1].append((kind, value))
    return intervals if seen == statements else None


def _html_segments(
    inlined: str, constructs: list[_Piece], template: str
) -> tuple[list[str], list[int]]:
    """The static HTML between placeholders, and the construct order (checked)."""
    segments: list[str] = []
    seen: list[int] = []
    pos = 0
    for m in _PH_ANY_RE.finditer(inlined):
        segments.append(inlined[pos : m.start()])
        seen.append(int(m.group(1) or m.group(2)))
        pos = m.end()
    segments.append(inlined[pos:])
    if seen != list(range(len(constructs))):
        first_bad = next((i for i, idx in enumerate(seen) if idx != i), len(seen))
        bad = constructs[min(first_bad, len(constructs) - 1)]
        raise TemplateRenderError(
            "the HTML parser rearranged the markup around this Jinja tag (check that tables "
            "spell out <tbody>, that rows sit in tables and that each branch of a condition "
            "is well-formed HTML)",
            template=bad.template or template,
            lineno=bad.line,
        )
    return segments, seen


def _emit_text_markers(
    builder: _SourceBuilder,
    items: list[tuple[str, Any]],
    constructs: list[_Piece],
    statics: list[str],
) -> None:
    pending: list[str] = []
    for kind, value in [*items, ("end", None)]:
        if kind == "s":
            pending.append(value)
            continue
        if pending:
            statics.append("".join(pending))
            builder.text(f"{{{{ {len(statics) - 1}|_email_ts }}}}")
            pending = []
        if kind == "c":
            piece = constructs[value]
            builder.construct(_wrap_expr(piece.src, "_email_tv"), piece)


def _emit_html_and_text(
    builder: _SourceBuilder,
    inlined: str,
    constructs: list[_Piece],
    template: str,
    intervals: list[list[tuple[str, Any]]],
    statics: list[str],
) -> None:
    segments, order = _html_segments(inlined, constructs, template)
    # Whitespace control ({%- / -%}) is applied here, as markers now sit between tags and text.
    for i, idx in enumerate(order):
        src = constructs[idx].src
        if src[2:3] == "-":
            segments[i] = segments[i].rstrip()
        if src[-3:-2] == "-":
            segments[i + 1] = segments[i + 1].lstrip()
    interval = 0
    for i, idx in enumerate(order):
        builder.text(_jinja_literal(segments[i]))
        piece = constructs[idx]
        if piece.kind == "stmt":
            _emit_text_markers(builder, intervals[interval], constructs, statics)
            interval += 1
        builder.construct(_strip_ws_control(piece.src), piece)
    builder.text(_jinja_literal(segments[-1]))
    _emit_text_markers(builder, intervals[interval], constructs, statics)


def _text_structure_clean(intervals: list[list[tuple[str, Any]]]) -> bool:
    """Whether the single-pass text can only need clean-up when a *value* needs it.

    The renderer trims spaces around line breaks and collapses 3+ line breaks in the text part
    (four scans of the text per email). Text items put separators right before content, so
    with values that are non-empty single lines without outer whitespace (checked per value at
    runtime), bad sequences can only come from the static pieces themselves or from an
    interval between two statements that ends in whitespace (which a skipped branch or an
    empty loop could put next to another separator). Neither occurs here: the scans are
    skipped unless a value was not clean.
    """
    for items in intervals:
        pieces: list[str | None] = []
        for kind, value in items:
            if kind == "s" and pieces and pieces[-1] is not None:
                pieces[-1] += value
            else:
                pieces.append(value if kind == "s" else None)
        for piece in pieces:
            if piece is None:
                continue
            if " \n" in piece or "\n " in piece or "\n\n\n" in piece:
                return False
            if not piece.replace("\n", "").isprintable():
                return False
        if pieces and pieces[-1] is not None and pieces[-1][-1:].isspace():
            return False
    return True


# --------------------------------------------------------------------------------------------
# HTML -> text template
# --------------------------------------------------------------------------------------------

_BLOCK_BREAK_2 = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr", "blockquote", "tr"}
)
_BLOCK_BREAK_1 = frozenset(
    {"div", "td", "th", "li", "section", "article", "header", "footer", "center", "dd", "dt"}
)
_SKIP_TAGS = frozenset({"head", "style", "script", "title", "template", "noscript"})
_VOID_TAGS = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }
)


class _TextConverter(HTMLParser):
    """Turns the placeholder document into text items: ("s", static) or ("c", construct)."""

    def __init__(self, constructs: list[_Piece]) -> None:
        super().__init__(convert_charrefs=True)
        self.constructs = constructs
        self.items: list[tuple[str, Any]] = []
        self.pending_nl = 0
        self.pending_space = False
        self.line_has_content = False
        self.content_count = 0
        self.skip_tag: str | None = None
        self.skip_depth = 0
        self.links: list[tuple[str | None, int, int]] = []
        self.loops: list[tuple[int, int]] = []  # open loops: (body start, break pending before)

    # -- helpers
    def _hidden(self, value: str | None) -> None:
        """Keep the statements of text that is not shown (Jinja structure must stay balanced)."""
        if not value or _PH_OPEN not in value:
            return
        for m in _PH_BARE_RE.finditer(value):
            idx = int(m.group(1))
            if self.constructs[idx].kind == "stmt":
                self.items.append(("c", idx))

    def _flush(self) -> None:
        # Leading newlines are kept: inside a loop body they separate the iterations (the
        # renderer strips the text's ends at runtime).
        if self.pending_nl:
            self.items.append(("s", "\n" * self.pending_nl))
            self.line_has_content = False
        elif self.pending_space and self.line_has_content:
            self.items.append(("s", " "))
        self.pending_nl = 0
        self.pending_space = False

    def _content(self, item: tuple[str, Any]) -> None:
        self._flush()
        self.items.append(item)
        self.line_has_content = True
        self.content_count += 1

    def _end_loop_body(self) -> None:
        """Make the iterations of a loop come out separated.

        The code of a loop body is emitted once but runs per item. A separator pending at the
        end of the body is normally emitted by the next content (after the loop, or at the top
        of the next iteration when the body starts with a block element); if the body does not
        start with a line break, the separator has to go inside the loop instead.
        """
        start, outer_nl = self.loops.pop() if self.loops else (len(self.items), 0)
        first = next((v for k, v in self.items[start:] if k == "s"), "")
        body_nl = len(first) - len(first.lstrip("\n"))
        if outer_nl > body_nl:  # the break before the loop, less what each iteration starts with
            self.items.insert(start - 1, ("s", "\n" * (outer_nl - body_nl)))
        if (self.pending_nl and not body_nl) or (
            self.pending_space and not self.pending_nl and not first.startswith((" ", "\n"))
        ):
            self._flush()

    def _block(self, n: int) -> None:
        self.pending_nl = max(self.pending_nl, n)

    def _inline(self, value: str) -> None:
        pos = 0
        for m in _PH_BARE_RE.finditer(value):
            self._static(value[pos : m.start()])
            idx = int(m.group(1))
            piece = self.constructs[idx]
            if piece.kind != "stmt":
                self._content(("c", idx))
            else:
                if piece.tag == "endfor":
                    self._end_loop_body()
                self.items.append(("c", idx))
                if piece.tag == "for":  # the break pending before the loop is not the body's
                    self.loops.append((len(self.items), self.pending_nl))
                    self.pending_nl = 0
            pos = m.end()
        self._static(value[pos:])

    def _static(self, text: str) -> None:
        if not text:
            return
        text = text.replace("\xa0", " ")
        if text[0].isspace():
            self.pending_space = True
        words = text.split()
        if words:
            self._content(("s", " ".join(words)))
            if text[-1].isspace():
                self.pending_space = True

    # -- HTMLParser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth += 1
            for _, value in attrs:
                self._hidden(value)
            return
        if tag in _SKIP_TAGS or attr.get("data-text") == "skip":
            for _, value in attrs:
                self._hidden(value)
            if tag not in _VOID_TAGS:
                self.skip_tag, self.skip_depth = tag, 1
            return
        for name, value in attrs:
            if not (tag == "a" and name == "href"):
                self._hidden(value)
        if tag in _BLOCK_BREAK_2:
            self._block(2)
        elif tag in _BLOCK_BREAK_1:
            self._block(1)
        elif tag == "br":
            self.pending_nl = min(self.pending_nl + 1, 2)
        if tag == "li":
            self._content(("s", "- "))
            self.pending_space = False
            self.line_has_content = False
        elif tag == "a":
            self.links.append((attr.get("href"), len(self.items), self.content_count))

    def handle_endtag(self, tag: str) -> None:
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag == "a" and self.links:
            self._close_link(*self.links.pop())
        elif tag in _BLOCK_BREAK_2:
            self._block(2)
        elif tag in _BLOCK_BREAK_1:
            self._block(1)

    def handle_data(self, data: str) -> None:
        if self.skip_tag is not None:
            self._hidden(data)
        else:
            self._inline(data)

    def handle_comment(self, data: str) -> None:
        self._hidden(data)

    def close(self) -> None:
        super().close()
        while self.links:
            href, _, _ = self.links.pop()
            self._hidden(href)

    def _close_link(self, href: str | None, start: int, count_before: int) -> None:
        url = (href or "").strip()
        if not url or url.startswith("#") or url.lower().startswith("javascript:"):
            self._hidden(href)
            return
        label = self.items[start:]
        has_label = self.content_count > count_before
        if has_label:
            static_label = "".join(v for k, v in label if k == "s").strip()
            label_srcs = [self.constructs[v].src for k, v in label if k == "c"]
            url_srcs = [self.constructs[int(m.group(1))].src for m in _PH_BARE_RE.finditer(url)]
            if label_srcs == url_srcs and static_label == _PH_BARE_RE.sub("", url).strip():
                return  # the label is the URL itself
            self.items.append(("s", " ("))
            self._inline(url)
            self.items.append(("s", ")"))
        else:
            self._inline(url)


def _text_items(body: list[_Piece]) -> tuple[list[tuple[str, Any]], list[_Piece]]:
    constructs: list[_Piece] = []
    doc: list[str] = []
    for p in body:
        if p.kind == "text":
            doc.append(p.src)
        elif p.kind != "comment":
            doc.append(f"{_PH_OPEN}{len(constructs)}{_PH_CLOSE}")
            constructs.append(p)
    conv = _TextConverter(constructs)
    conv.feed("".join(doc))
    conv.close()
    return conv.items, constructs


def _emit_text_piece(builder: _SourceBuilder, p: _Piece) -> None:
    """A construct of the text part (or of a {% block text %})."""
    if p.kind == "expr":
        builder.construct(_wrap_expr(p.src, "_email_text"), p)
    elif p.kind == "stmt":
        builder.construct(_strip_ws_control(p.src), p)
    elif p.kind == "raw":
        inner = _ENDRAW_RE.sub("", p.src[p.src.index("%}") + 2 :])
        builder.text(_jinja_literal(_TAG_STRIP_RE.sub("", inner)))


def _emit_one_line(builder: _SourceBuilder, pieces: list[_Piece]) -> None:
    """Subject / preheader: plain text on one line; values go through ``_email_raw``."""
    for p in pieces:
        if p.kind == "text":
            builder.text(re.sub(r"\s*\n\s*", " ", p.src))
        elif p.kind == "expr":
            builder.construct(_wrap_expr(p.src, "_email_raw"), p)
        elif p.kind != "comment":
            builder.construct(p.src, p)


# --------------------------------------------------------------------------------------------
# Runtime helpers (filters, sanitising, headers)
# --------------------------------------------------------------------------------------------

_CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "INR": "₹"}
_LINE_BREAKS_RE = re.compile("[\r\n\x0b\x0c\x85\u2028\u2029]+")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_HTTP_PREFIXES = ("https://", "http://")
_BAD_HEADER_URL_RE = re.compile(r"[\s<>\"]")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")
_LINE_END_SPACE_RE = re.compile(r"[ \t]*\n[ \t]*")


def _money(value: Any, currency: Any = None) -> str:
    """``129.5 | money("EUR")`` -> ``€129.50``; unknown codes go after: ``129.50 CHF``."""
    try:
        return _MONEY_CACHE[(value, currency)]
    except (KeyError, TypeError):
        pass
    text = _format_money(value, currency)
    if len(_MONEY_CACHE) < 65536:
        with contextlib.suppress(TypeError):  # unhashable value: just not cached
            _MONEY_CACHE[(value, currency)] = text
    return text


_MONEY_CACHE: dict[tuple[Any, Any], str] = {}


def _format_money(value: Any, currency: Any) -> str:
    amount = float(value)
    code = str(currency).upper() if currency else ""
    symbol = _CURRENCY_SYMBOLS.get(code)
    if symbol:
        return f"-{symbol}{-amount:,.2f}" if amount < 0 else f"{symbol}{amount:,.2f}"
    return f"{amount:,.2f} {code}".rstrip()


def _make_abs_url(base_url: str) -> Any:
    base = urlsplit(base_url) if base_url else None
    origin = f"{base.scheme}://{base.netloc}" if base and base.scheme and base.netloc else ""
    join = lru_cache(maxsize=4096)(partial(urljoin, base_url))

    def abs_url(value: Any) -> str:
        url = value if type(value) is str else str(value)
        if url.startswith(("https://", "http://")):
            return url
        url = url.strip()
        if origin and url[:1] == "/" and url[1:2] != "/" and "/." not in url:
            return origin + url  # what urljoin returns for an absolute path, 20x faster
        m = _SCHEME_RE.match(url)
        if m:
            return url if m.group(1).lower() in _SAFE_SCHEMES else "#"
        return join(url) if base_url and url else url

    return abs_url


def _text_value(value: Any) -> str:
    """Output filter of the text part: the value as plain text, HTML tags removed."""
    if isinstance(value, Markup):
        return value.striptags()
    s = value if type(value) is str else str(value)
    if "<" in s:
        s = _TAG_STRIP_RE.sub("", s)
    return s


def _text_checked(value: Any, dirty: list[bool]) -> str:
    """A value of the single-pass text part; notes in ``dirty`` when it needs the clean-up."""
    # _text_value inlined for a plain str: this runs for every value not seen before
    s = value if type(value) is str and "<" not in value else str(_text_value(value))
    if not (s and s.isprintable() and s == s.strip()):
        dirty.append(True)
    elif type(value) is str and s is value and len(s) <= 256:
        # A clean str is its own text; the compiled code checks this set first (one hash
        # lookup instead of four string scans), and product names, prices and the brand's
        # strings come back for every recipient.
        if len(_CLEAN_TEXT) >= 16384:
            _CLEAN_TEXT.clear()
        _CLEAN_TEXT.add(s)
    return s


_CLEAN_TEXT: set[str] = set()


def _raw_value(value: Any) -> str:
    """Output filter of subject/preheader: the value as plain text (Markup is unescaped)."""
    if type(value) is str:
        return value
    if isinstance(value, Markup):
        return value.unescape()
    return str(value)


def _fast_escape(value: Any) -> Any:
    """Output escaping of the compiled HTML: ``markupsafe.escape``, ASCII-only.

    Jinja wraps every ``{{ value }}`` in ``escape()``, which builds a ``Markup`` object only for
    it to be joined into the output. Returning the escaped ``str`` skips that allocation; the
    value is only ever concatenated into the page, never treated as markup again.

    Characters outside ASCII in values become numeric character references (``€`` ->
    ``&#8364;``; browsers and mail clients show the same text). One ``€`` in a price would
    otherwise make Python store the whole 10 KB page with two bytes per character, which
    doubles the cost of joining and keeping it.
    """
    if type(value) is str:
        cached = _ESCAPED.get(value)
        if cached is not None:
            return cached
        s = _escape_inner(value)
    elif hasattr(value, "__html__"):
        return value.__html__()
    else:
        s = _escape_inner(str(value))
    if s.isascii():
        return s
    escaped = s.encode("ascii", "xmlcharrefreplace").decode("ascii")
    if type(value) is str and len(value) <= 256:
        # Compiled templates escape ASCII strs inline: what gets here is mostly the same few
        # non-ASCII values over and over (prices in €, names with accents), ~0.5 us each.
        if len(_ESCAPED) >= 8192:
            _ESCAPED.clear()
        _ESCAPED[value] = escaped
    return escaped


_ESCAPED: dict[str, str] = {}


@pass_context
def _text_marker(context: Any, value: Any) -> str:
    """``_email_ts``/``_email_tv``: rewritten away at compile time (see _move_text_markers)."""
    raise RuntimeError("a single-pass text marker was left in the compiled template")


def _one_line(value: Any) -> str:
    """``subject``/``preheader`` as seen by the HTML: one line, plain ``str`` (so escaped)."""
    s = value if type(value) is str else str(value)
    if s.isprintable():  # no line breaks (they are all non-printable): skip the regex
        return s.strip()
    return _LINE_BREAKS_RE.sub(" ", s).strip()


def _header_text(raw: Any, what: str, warnings: list[str]) -> str:
    s = (raw if type(raw) is str else str(raw)).strip()
    if not s.isprintable() and _LINE_BREAKS_RE.search(s):
        count = sum(len(m) for m in _LINE_BREAKS_RE.findall(s))
        s = " ".join(_LINE_BREAKS_RE.sub(" ", s).split())
        warnings.append(
            f"{what}: removed {count} line-break character(s) that came from the data "
            "(CR/LF would allow header injection)"
        )
    return s


class _EmailSandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox with a fast path for ``obj.key`` on plain dicts.

    The stock sandbox tries ``getattr(dict, key)`` first, which raises and catches an
    AttributeError for every ``product.name``; the context is plain dicts, so look the key up
    first. A missing key that names a dict attribute falls back to the normal (safe) lookup,
    so ``d.items()`` still works; any other missing key is undefined at once (the stock lookup
    gets there after two exceptions, ~2 us per ``offer.cta_label | default(...)``).
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            if attribute in obj:
                return obj[attribute]
            if attribute not in _DICT_ATTRIBUTES:  # what the stock lookup ends with
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


_DICT_ATTRIBUTES = frozenset(dir(dict))


# --------------------------------------------------------------------------------------------
# Fast paths in the compiled template code
# --------------------------------------------------------------------------------------------
#
# Jinja compiles a template to Python source; most of a render is spent calling small helpers
# for every value (``environment.getattr``, ``escape``, filters). ``_FastPaths`` rewrites that
# source before it is compiled so the common case runs inline and everything else still calls
# the original helper with the same arguments: same results, same errors, same line numbers.
#
# * ``environment.getattr(o, "k")`` -> ``o["k"]`` when ``o`` is a plain dict holding ``"k"``
#   (what ``_EmailSandbox.getattr`` returns first anyway);
# * ``escape(v)`` -> ``_escape_inner(v)`` for an ASCII ``str`` (what ``_fast_escape`` does);
# * ``abs_url(v)`` -> ``v`` for a ``str`` starting with ``https://``/``http://`` (its first
#   branch); ``str(_email_text(v))`` -> ``v`` for a ``str`` without ``<``;
# * ``default(v, d[, b])`` with a constant or plain-variable ``d`` and a constant ``b`` ->
#   ``d if isinstance(v, Undefined) [or not v] else v`` (``do_default`` itself);
# * ``markup_join((...))`` (the ``~`` operator) -> ``"".join`` when every part is a ``str``;
# * ``resolve("name")`` -> the two dict lookups of ``Context.resolve_or_missing``;
# * ``context.exported_vars.add(...)`` is dropped: the email template is never imported;
#   so are ``{% autoescape %}`` switches and ``_loop_vars`` records nothing reads (below);
# * the four ``_email_*`` captures keep the joined ``str`` instead of copying it into a
#   ``Markup`` that is only ever turned back into a ``str``.
#
# Walrus temporaries (``_email_g`` ...) are each assigned and read within one conditional
# expression, so nesting them is safe; comprehensions and lambdas are left alone.

_CAPTURE_RE = re.compile(r"l_\d+__email_(?:subject|preheader|html|text)\Z")


def _load(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


def _call(func: ast.expr, *args: ast.expr) -> ast.Call:
    return ast.Call(func=func, args=list(args), keywords=[])


def _is_type(value: ast.expr, type_name: str) -> ast.Compare:
    return ast.Compare(
        left=_call(_load("_email_type"), value), ops=[ast.Is()], comparators=[_load(type_name)]
    )


def _once(node: ast.expr, temp: str) -> tuple[ast.expr, ast.expr]:
    """(first use, later uses) of ``node``, evaluated once: a walrus unless it is a name."""
    if isinstance(node, ast.Name):
        return node, node
    return ast.NamedExpr(target=ast.Name(id=temp, ctx=ast.Store()), value=node), _load(temp)


def _side_effect_free(node: ast.expr) -> bool:
    """A constant, a name, or Jinja's ``(undefined(name=...) if l_x is missing else l_x)``."""
    if isinstance(node, ast.Constant | ast.Name):
        return True
    return (
        isinstance(node, ast.IfExp)
        and isinstance(node.body, ast.Call)
        and isinstance(node.body.func, ast.Name)
        and node.body.func.id == "undefined"
        and isinstance(node.orelse, ast.Name)
        and isinstance(node.test, ast.Compare)
    )


def _is_resolve_def(node: ast.stmt) -> bool:
    """Jinja's ``resolve = context.resolve_or_missing`` at the top of a render function."""
    return (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == "resolve"
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "resolve_or_missing"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "context"
    )


def _vars_keys(tree: ast.Module) -> frozenset[str] | None:
    """The names the code stores in ``context.vars``; ``None`` when the context is used in
    any other way that could add to them (passed to a function, ``context.call``, ...).

    A render starts with empty ``vars``, so ``resolve("x")`` of a name never stored there
    only needs to look in ``parent``.
    """
    parents = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    keys: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == "context"):
            continue
        parent = parents.get(id(node))
        if not isinstance(parent, ast.Attribute) or parent.attr not in _READ_ONLY_CONTEXT_ATTRS:
            return None
        if parent.attr != "vars":
            continue
        store = parents.get(id(parent))
        if not (
            isinstance(store, ast.Subscript)
            and isinstance(store.ctx, ast.Store)
            and isinstance(store.slice, ast.Constant)
            and isinstance(store.slice.value, str)
        ):
            return None
        keys.add(store.slice.value)
    return frozenset(keys)


_READ_ONLY_CONTEXT_ATTRS = frozenset(
    {"vars", "parent", "exported_vars", "resolve_or_missing", "eval_ctx"}
)


class _FastPaths(ast.NodeTransformer):
    def __init__(self, filters: dict[str, str], vars_keys: frozenset[str] | None = None) -> None:
        self.filters = filters  # Jinja's t_N -> filter name
        self.vars_keys = vars_keys  # see _vars_keys
        self.resolving: list[bool] = []  # per enclosing function: does it define `resolve`?
        self.abs_urls: set[int] = set()  # ids of the abs_url fast paths built below

    @staticmethod
    def _escape_str(value: ast.expr) -> ast.expr:
        """``escape(s)`` of a value known to be a ``str`` (see ``_fast_escape``): ASCII is
        escaped inline, anything else is looked up among the values escaped before."""
        return ast.IfExp(
            test=_call(ast.Attribute(value=value, attr="isascii", ctx=ast.Load())),
            body=_call(_load("_email_escape_inner"), value),
            orelse=ast.BoolOp(
                op=ast.Or(),
                values=[_call(_load("_email_escaped"), value), _call(_load("escape"), value)],
            ),
        )

    def _escape(self, func: ast.expr, arg: ast.expr) -> ast.expr:
        first, value = _once(arg, "_email_e")
        return ast.IfExp(
            test=_is_type(first, "_email_str"),
            body=self._escape_str(value),
            orelse=_call(func, value),
        )

    def visit_Lambda(self, node: ast.AST) -> ast.AST:
        return node

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_Lambda

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        at = next((i for i, st in enumerate(node.body) if _is_resolve_def(st)), None)
        self.resolving.append(at is not None)
        self.generic_visit(node)
        self.resolving.pop()
        if at is not None:  # Context.resolve_or_missing, inlined below: its two dicts
            local = ast.parse("_email_cv = context.vars\n_email_cp = context.parent").body
            for st in local:
                ast.copy_location(st, node.body[at])
            node.body[at + 1 : at + 1] = local
            ast.fix_missing_locations(node)
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        call = node.value
        if (  # context.exported_vars.add(name): only `{% import %}` of a template reads it
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "add"
            and isinstance(call.func.value, ast.Attribute)
            and call.func.value.attr == "exported_vars"
        ):
            return ast.copy_location(ast.Pass(), node)
        self.generic_visit(node)
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        self.generic_visit(node)
        value = node.value
        if (
            len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and _CAPTURE_RE.match(node.targets[0].id)
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.IfExp)
            and len(value.args) == 1
            and isinstance(value.args[0], ast.Call)
            and isinstance(value.args[0].func, ast.Name)
            and value.args[0].func.id == "concat"
        ):
            node.value = value.args[0]
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        special = self._default_of_key(node)
        if special is not None:
            return special
        self.generic_visit(node)
        if node.keywords:
            return node
        func, args = node.func, node.args
        name = func.id if isinstance(func, ast.Name) else None
        new: ast.expr | None = None
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "getattr"
            and isinstance(func.value, ast.Name)
            and func.value.id == "environment"
            and len(args) == 2
            and isinstance(args[1], ast.Constant)
            and isinstance(args[1].value, str)
        ):
            first, obj = _once(args[0], "_email_g")
            key = args[1]
            new = ast.IfExp(
                test=ast.BoolOp(
                    op=ast.And(),
                    values=[
                        _is_type(first, "_email_dict"),
                        ast.Compare(left=key, ops=[ast.In()], comparators=[obj]),
                    ],
                ),
                body=ast.Subscript(value=obj, slice=key, ctx=ast.Load()),
                orelse=_call(func, obj, key),
            )
        elif name == "escape" and len(args) == 1 and id(args[0]) in self.abs_urls:
            # escape(abs_url(v)): the fast branch of abs_url already knows it has a str
            inner: ast.IfExp = args[0]  # type: ignore[assignment]
            inner.body = self._escape_str(inner.body)
            inner.orelse = self._escape(func, inner.orelse)
            new = inner
        elif name == "escape" and len(args) == 1:
            new = self._escape(func, args[0])
        elif (
            name == "resolve"
            and self.resolving
            and self.resolving[-1]
            and len(args) == 1
            and isinstance(args[0], ast.Constant)
        ):
            key = args[0]
            new = ast.IfExp(
                test=ast.Compare(left=key, ops=[ast.In()], comparators=[_load("_email_cp")]),
                body=ast.Subscript(value=_load("_email_cp"), slice=key, ctx=ast.Load()),
                orelse=_load("missing"),
            )
            if self.vars_keys is None or key.value in self.vars_keys:
                new = ast.IfExp(
                    test=ast.Compare(left=key, ops=[ast.In()], comparators=[_load("_email_cv")]),
                    body=ast.Subscript(value=_load("_email_cv"), slice=key, ctx=ast.Load()),
                    orelse=new,
                )
        elif name == "markup_join" and len(args) == 1:
            new = _call(_load("_email_join"), args[0])
        elif name is None:
            pass
        elif self.filters.get(name) == "abs_url" and len(args) == 1:
            first, value = _once(args[0], "_email_u")
            new = ast.IfExp(
                test=ast.BoolOp(
                    op=ast.And(),
                    values=[
                        _is_type(first, "_email_str"),
                        _call(
                            ast.Attribute(value=value, attr="startswith", ctx=ast.Load()),
                            _load("_email_http"),
                        ),
                    ],
                ),
                body=value,
                orelse=_call(func, value),
            )
            self.abs_urls.add(id(new))
        elif self._is_simple_default(node):
            first, value = _once(args[0], "_email_d")
            test: ast.expr = _call(_load("_email_isinstance"), first, _load("_email_Undefined"))
            if len(args) == 3 and args[2].value:  # type: ignore[attr-defined]
                test = ast.BoolOp(op=ast.Or(), values=[test, ast.UnaryOp(ast.Not(), value)])
            new = ast.IfExp(
                test=test, body=args[1] if len(args) > 1 else ast.Constant(""), orelse=value
            )
        elif (
            name == "str"
            and len(args) == 1
            and isinstance(args[0], ast.Call)
            and isinstance(args[0].func, ast.Name)
            and self.filters.get(args[0].func.id) == "_email_raw"
            and len(args[0].args) == 1
            and not args[0].keywords
        ):  # subject/preheader values: a str is its own plain text
            first, value = _once(args[0].args[0], "_email_r")
            new = ast.IfExp(
                test=_is_type(first, "_email_str"),
                body=value,
                orelse=_call(func, _call(args[0].func, value)),
            )
        elif (
            name == "str"
            and len(args) == 1
            and isinstance(args[0], ast.Call)
            and isinstance(args[0].func, ast.Name)
            and (
                self.filters.get(args[0].func.id) == "_email_text"
                or args[0].func.id == "_email_text_value"
            )
            and len(args[0].args) == 1
            and not args[0].keywords
        ):
            first, value = _once(args[0].args[0], "_email_t")
            new = ast.IfExp(
                test=ast.BoolOp(
                    op=ast.And(),
                    values=[
                        _is_type(first, "_email_str"),
                        ast.Compare(left=ast.Constant("<"), ops=[ast.NotIn()], comparators=[value]),
                    ],
                ),
                body=value,
                orelse=_call(func, _call(args[0].func, value)),
            )
        if new is None:
            return node
        return ast.fix_missing_locations(ast.copy_location(new, node))

    def _is_simple_default(self, node: ast.Call) -> bool:
        """``default(v[, d[, b]])`` with a side-effect-free ``d`` and a constant ``b``."""
        args = node.args
        return (
            isinstance(node.func, ast.Name)
            and self.filters.get(node.func.id) == "default"
            and not node.keywords
            and 1 <= len(args) <= 3
            and all(_side_effect_free(a) for a in args[1:])
            and (len(args) < 3 or isinstance(args[2], ast.Constant))
        )

    def _default_of_key(self, node: ast.Call) -> ast.expr | None:
        """``o.k | default(d)`` on a dict without ``k``: ``d``, without an Undefined object."""
        if not self._is_simple_default(node):
            return None
        inner = node.args[0]
        if not (
            isinstance(inner, ast.Call)
            and isinstance(inner.func, ast.Attribute)
            and inner.func.attr == "getattr"
            and isinstance(inner.func.value, ast.Name)
            and inner.func.value.id == "environment"
            and len(inner.args) == 2
            and not inner.keywords
            and isinstance(inner.args[1], ast.Constant)
            and isinstance(inner.args[1].value, str)
            and inner.args[1].value not in _DICT_ATTRIBUTES
        ):
            return None
        first, obj = _once(self.visit(inner.args[0]), "_email_g")
        key = inner.args[1]
        lookup = ast.IfExp(
            test=ast.BoolOp(
                op=ast.And(),
                values=[
                    _is_type(first, "_email_dict"),
                    ast.Compare(left=key, ops=[ast.In()], comparators=[obj]),
                ],
            ),
            body=ast.Subscript(value=obj, slice=key, ctx=ast.Load()),
            orelse=ast.IfExp(
                test=_is_type(obj, "_email_dict"),
                body=_load("_email_missing"),
                orelse=_call(inner.func, obj, key),
            ),
        )
        value = _load("_email_d")
        tests: list[ast.expr] = [
            ast.Compare(
                left=ast.NamedExpr(target=ast.Name(id="_email_d", ctx=ast.Store()), value=lookup),
                ops=[ast.Is()],
                comparators=[_load("_email_missing")],
            ),
            _call(_load("_email_isinstance"), value, _load("_email_Undefined")),
        ]
        if len(node.args) == 3 and node.args[2].value:  # type: ignore[attr-defined]
            tests.append(ast.UnaryOp(ast.Not(), value))
        new = ast.IfExp(
            test=ast.BoolOp(op=ast.Or(), values=tests),
            body=node.args[1] if len(node.args) > 1 else ast.Constant(""),
            orelse=value,
        )
        return ast.fix_missing_locations(ast.copy_location(new, node))


class _TextMarkers(ast.NodeTransformer):
    """Moves ``_email_ts``/``_email_tv`` outputs from the HTML buffer to ``_email_tb``."""

    def __init__(
        self, static_slot: str, value_slot: str, statics: list[str], check_values: bool
    ) -> None:
        self.static_slot, self.value_slot, self.statics = static_slot, value_slot, statics
        self.check_values = check_values

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                body: list[ast.stmt] = []
                for statement in value:
                    body.extend(self._split(self.visit(statement)))  # type: ignore[arg-type]
                setattr(node, name, body)
            elif isinstance(value, ast.AST):
                self.visit(value)
        return node

    def _text(self, element: ast.expr) -> ast.expr | None:
        inner = element
        if (
            isinstance(element, ast.Call)
            and isinstance(element.func, ast.Name)
            and element.func.id == "escape"
            and len(element.args) == 1
        ):
            inner = element.args[0]
        if not (
            isinstance(inner, ast.Call)
            and isinstance(inner.func, ast.Name)
            and inner.func.id in (self.static_slot, self.value_slot)
            and len(inner.args) == 2
        ):
            return None
        arg = inner.args[1]
        if inner.func.id == self.static_slot:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, int)):
                raise _SinglePassUnavailable("static marker without a constant index")
            return ast.Constant(self.statics[arg.value])
        if not self.check_values:
            return _call(_load("str"), _call(_load("_email_text_value"), arg))
        # v if v is a str already seen to be a clean one-line text (no tags, no outer
        # whitespace) else _text_checked(v, _email_dirty), which remembers clean ones
        value = _load("_email_x")
        first = ast.NamedExpr(target=ast.Name(id="_email_x", ctx=ast.Store()), value=arg)
        return ast.IfExp(
            test=ast.BoolOp(
                op=ast.And(),
                values=[
                    _is_type(first, "_email_str"),
                    ast.Compare(left=value, ops=[ast.In()], comparators=[_load("_email_clean")]),
                ],
            ),
            body=value,
            orelse=_call(_load("_email_text_checked"), value, _load("_email_dirty")),
        )

    def _split(self, statement: ast.stmt) -> list[ast.stmt]:
        call = statement.value if isinstance(statement, ast.Expr) else None
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr in ("append", "extend")
            and isinstance(call.func.value, ast.Name)
            and len(call.args) == 1
        ):
            return [statement]
        if call.func.attr == "append":
            elements = [call.args[0]]
        elif isinstance(call.args[0], ast.Tuple):
            elements = call.args[0].elts
        else:
            return [statement]
        html: list[ast.expr] = []
        text: list[ast.expr] = []
        for element in elements:
            moved = self._text(element)
            if moved is None:
                html.append(element)
            else:
                text.append(moved)
        if not text:
            return [statement]
        out: list[ast.stmt] = []
        for target, parts in ((call.func.value.id, html), ("_email_tb", text)):
            if parts:
                extend = ast.Attribute(value=_load(target), attr="extend", ctx=ast.Load())
                out.append(ast.Expr(value=_call(extend, ast.Tuple(elts=parts, ctx=ast.Load()))))
        for new in out:
            ast.copy_location(new, statement)
        return out


def _move_text_markers(
    tree: ast.Module, slots: dict[str, str], statics: list[str], clean_text: bool = False
) -> ast.Module:
    """Single-pass text: markers to ``_email_tb``, which becomes the ``_email_text`` value.

    With ``clean_text`` every value is checked to be a non-empty single line without outer
    whitespace as it is written; ``_email_text_clean`` tells the renderer that all were.
    """
    by_filter = {f: slot for slot, f in slots.items()}
    static_slot, value_slot = by_filter.get("_email_ts", "-"), by_filter.get("_email_tv", "-")
    root = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "root"), None)
    nested = [
        n
        for n in ast.walk(root or tree)
        if isinstance(n, ast.FunctionDef) and n is not root and n.name not in slots
    ]
    if root is None or nested:  # macros, call blocks, recursive loops: their own buffers
        raise _SinglePassUnavailable("template code with nested functions")
    tree = _TextMarkers(static_slot, value_slot, statics, clean_text).visit(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in (static_slot, value_slot)
        ):
            raise _SinglePassUnavailable("a text marker outside an output statement")
    at = next((i for i, st in enumerate(root.body) if _is_resolve_def(st)), None)
    if at is None:
        raise _SinglePassUnavailable("no resolve = context.resolve_or_missing in root()")
    start = ast.parse("_email_tb = []\n_email_dirty = []").body
    end = ast.parse("context.vars['_email_text'] = concat(_email_tb)").body
    if clean_text:
        end += ast.parse("context.vars['_email_text_clean'] = not _email_dirty").body
    for st in start:
        ast.copy_location(st, root.body[at])
    for st in end:
        ast.copy_location(st, root.body[-1])
    root.body[at + 1 : at + 1] = start
    root.body.extend(end)
    return ast.fix_missing_locations(tree)


class _SharedValues:
    """Each value looked up (and escaped) once per output statement, not once per use.

    ``{{ product.name }}`` twice in a row (``alt=""`` and the link text) and once more in the
    text part costs three lookups and two escapes; within a run of adjacent output statements
    (an HTML ``extend`` and the text ``extend`` split from it) the first use keeps the value in
    a walrus temporary and later uses read it. Only pure lookups are shared (a local, an
    attribute/item of one with a constant key, ``abs_url`` of one): nothing between the uses
    can change them, and the first use still raises where an undefined value raised before.
    """

    def __init__(self, filters: dict[str, str]) -> None:
        self.filters = filters
        self.count = 0

    def _pure(self, node: ast.expr) -> bool:
        if _side_effect_free(node) and not isinstance(node, ast.Constant):
            return True
        if not isinstance(node, ast.Call) or node.keywords:
            return False
        func, args = node.func, node.args
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "getattr"
            and isinstance(func.value, ast.Name)
            and func.value.id == "environment"
            and len(args) == 2
            and isinstance(args[1], ast.Constant)
            and isinstance(args[1].value, str)
        ):
            return self._pure(args[0])
        return (
            isinstance(func, ast.Name)
            and self.filters.get(func.id) == "abs_url"
            and len(args) == 1
            and self._pure(args[0])
        )

    @staticmethod
    def _escaped(element: ast.expr) -> ast.expr | None:
        if (
            isinstance(element, ast.Call)
            and isinstance(element.func, ast.Name)
            and element.func.id == "escape"
            and len(element.args) == 1
            and not element.keywords
        ):
            return element.args[0]
        return None

    @staticmethod
    def _text_walrus(element: ast.expr) -> ast.NamedExpr | None:
        """The ``(_email_x := value)`` of a single-pass text value (see _TextMarkers)."""
        if not (isinstance(element, ast.IfExp) and isinstance(element.test, ast.BoolOp)):
            return None
        first = element.test.values[0]
        if (
            isinstance(first, ast.Compare)
            and isinstance(first.left, ast.Call)
            and first.left.args
            and isinstance(first.left.args[0], ast.NamedExpr)
            and first.left.args[0].target.id == "_email_x"
        ):
            return first.left.args[0]
        return None

    def _uses(self, elements: list[ast.expr]) -> tuple[dict[str, int], dict[str, int]]:
        values: dict[str, int] = {}
        escapes: dict[str, int] = {}
        for element in elements:
            inner = self._escaped(element)
            if inner is not None and self._pure(inner):
                key = ast.dump(inner)
                escapes[key] = escapes.get(key, 0) + 1
                values[key] = values.get(key, 0) + 1
                continue
            walrus = self._text_walrus(element)
            if walrus is not None and self._pure(walrus.value):
                key = ast.dump(walrus.value)
                values[key] = values.get(key, 0) + 1
        return values, escapes

    def _temp(self, value: ast.expr) -> tuple[ast.NamedExpr, str]:
        self.count += 1
        name = f"_email_s{self.count}"
        return ast.NamedExpr(target=ast.Name(id=name, ctx=ast.Store()), value=value), name

    def share(self, statements: list[ast.stmt]) -> None:
        """Rewrite the tuples of a run of adjacent ``buffer.extend((...))`` statements."""
        tuples = [st.value.args[0] for st in statements]  # type: ignore[attr-defined]
        value_uses, escape_uses = self._uses([e for t in tuples for e in t.elts])
        values: dict[str, str] = {}
        escapes: dict[str, str] = {}

        def value(node: ast.expr) -> ast.expr:
            key = ast.dump(node)
            if key in values:
                return _load(values[key])
            if value_uses.get(key, 0) > 1 and not isinstance(node, ast.Name):
                new, values[key] = self._temp(node)
                return new
            return node

        for tup in tuples:
            for i, element in enumerate(tup.elts):
                inner = self._escaped(element)
                if inner is not None and self._pure(inner):
                    key = ast.dump(inner)
                    if key in escapes:
                        tup.elts[i] = _load(escapes[key])
                        continue
                    element.args[0] = value(inner)  # type: ignore[attr-defined]
                    if escape_uses[key] > 1:
                        tup.elts[i], escapes[key] = self._temp(element)
                    continue
                walrus = self._text_walrus(element)
                if walrus is not None and self._pure(walrus.value):
                    walrus.value = value(walrus.value)

    def visit(self, node: ast.AST) -> None:
        """Every statement list under ``node`` (function, ``if`` and ``for`` bodies)."""
        for _, body in ast.iter_fields(node):
            if not (isinstance(body, list) and body and isinstance(body[0], ast.stmt)):
                continue
            run: list[ast.stmt] = []
            for statement in body:
                if self._is_extend(statement):
                    run.append(statement)
                    continue
                if run:
                    self.share(run)
                    run = []
                self.visit(statement)
            if run:
                self.share(run)

    @staticmethod
    def _is_extend(statement: ast.stmt) -> bool:
        call = statement.value if isinstance(statement, ast.Expr) else None
        return (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "extend"
            and isinstance(call.func.value, ast.Name)
            and len(call.args) == 1
            and isinstance(call.args[0], ast.Tuple)
        )


def _filter_slots(tree: ast.Module) -> dict[str, str]:
    """``t_3 = environment.filters['abs_url']`` in Jinja's code -> ``{"t_3": "abs_url"}``."""
    slots: dict[str, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Subscript)
            and isinstance(node.value.value, ast.Attribute)
            and node.value.value.attr == "filters"
            and isinstance(node.value.slice, ast.Constant)
        ):
            slots[node.targets[0].id] = node.value.slice.value
    return slots


def _eval_ctx_switch(node: ast.AST) -> bool:
    """``t = context.eval_ctx.save()``, ``context.eval_ctx.autoescape = c``, ``...revert(t)``."""

    def is_eval_ctx(n: ast.AST) -> bool:
        return (
            isinstance(n, ast.Attribute)
            and n.attr == "eval_ctx"
            and isinstance(n.value, ast.Name)
            and n.value.id == "context"
        )

    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Attribute) and target.attr == "autoescape":
            return is_eval_ctx(target.value) and isinstance(value, ast.Constant)
        return (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr == "save"
            and is_eval_ctx(value.func.value)
        )
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr == "revert"
        and is_eval_ctx(node.value.func.value)
    )


_PLAIN_CONTEXT_ATTRS = frozenset({"vars", "parent", "exported_vars", "resolve_or_missing"})


def _drop_eval_ctx_switches(tree: ast.Module) -> ast.Module:
    """Remove ``{% autoescape %}``'s runtime bookkeeping when nothing reads it.

    The generated code saves, sets and restores ``context.eval_ctx`` around the plain-text
    captures (~2 us per render), but only code that reads ``eval_ctx`` at runtime cares:
    ``pass_eval_context``/``pass_context`` filters and functions, or ``Markup``-or-not captures.
    Whether the code has any is visible in it: every use of ``context`` other than the
    switches themselves must be a plain ``vars``, ``parent``, ``exported_vars`` or
    ``resolve_or_missing``.
    """
    switches = {id(n) for n in ast.walk(tree) if _eval_ctx_switch(n)}
    if not switches:
        return tree
    inside = {id(c) for n in ast.walk(tree) if id(n) in switches for c in ast.walk(n)}
    parents = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "context" and id(node) not in inside:
            parent = parents.get(id(node))
            if not (isinstance(parent, ast.Attribute) and parent.attr in _PLAIN_CONTEXT_ATTRS):
                return tree
    return _DropStatements(_eval_ctx_switch).visit(tree)


def _loop_vars_write(node: ast.AST) -> bool:
    """``_loop_vars = {}``, ``_loop_vars[name] = value`` or ``_loop_vars.update({...})``."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        if isinstance(target, ast.Name):
            return target.id == "_loop_vars"
        return (
            isinstance(target, ast.Subscript)
            and isinstance(target.value, ast.Name)
            and target.value.id == "_loop_vars"
        )
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr == "update"
        and isinstance(node.value.func.value, ast.Name)
        and node.value.func.value.id == "_loop_vars"
    )


class _DropStatements(ast.NodeTransformer):
    def __init__(self, drop: Any) -> None:
        self.drop = drop

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                kept = [self.visit(n) for n in value if not self.drop(n)]
                setattr(node, name, kept or [ast.Pass()])
            elif isinstance(value, ast.AST):
                self.visit(value)
        return node


def _drop_unread_loop_vars(tree: ast.Module) -> ast.Module:
    """Jinja records loop-body ``{% set %}`` values in ``_loop_vars`` for calls made inside the
    loop (``environment.call(..., _loop_vars=_loop_vars)``); without such calls nothing reads
    it, and the dict and its stores cost ~0.2 us per iteration."""
    written = {id(c) for n in ast.walk(tree) if _loop_vars_write(n) for c in ast.walk(n)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "_loop_vars" and id(node) not in written:
            return tree
    return _DropStatements(_loop_vars_write).visit(tree)


def _fast_code(
    source: str, filename: str, statics: list[str] | None = None, clean_text: bool = False
) -> Any:
    """Jinja's generated Python with the fast paths above, compiled.

    ``statics`` (single-pass text, see ``_emit_html_and_text``): the static text pieces the
    ``_email_ts`` markers refer to; the markers are moved into the text buffer first.
    ``clean_text``: see ``_text_structure_clean``.
    """
    tree = ast.parse(source, filename)
    slots = _filter_slots(tree)
    if statics is not None:
        tree = _move_text_markers(tree, slots, statics, clean_text)
    _SharedValues(slots).visit(tree)
    tree = _FastPaths(slots, _vars_keys(tree)).visit(tree)
    tree = _drop_eval_ctx_switches(tree)
    tree = _drop_unread_loop_vars(tree)
    return compile(ast.fix_missing_locations(tree), filename, "exec")


def _join_values(parts: tuple[Any, ...]) -> Any:
    for part in parts:
        if type(part) is not str:
            return markup_join(parts)
    return "".join(parts)


_FAST_GLOBALS = {
    "escape": _fast_escape,
    "_email_type": type,
    "_email_dict": dict,
    "_email_str": str,
    "_email_isinstance": isinstance,
    "_email_Undefined": Undefined,
    "_email_escape_inner": _escape_inner,
    "_email_escaped": _ESCAPED.get,
    "_email_clean": _CLEAN_TEXT,
    "_email_http": ("https://", "http://"),
    "_email_join": _join_values,
    "_email_missing": object(),
    "_email_text_value": _text_value,
    "_email_text_checked": _text_checked,
}


# --------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------

_UNDEFINED_PATTERNS = (
    re.compile(r"'([^']+)' is undefined"),
    re.compile(r"has no attribute '([^']+)'"),
    re.compile(r"has no element '?([^']+?)'?$"),
)


def _code_names(code: CodeType) -> set[str]:
    """Every global and attribute name the code (and the functions defined in it) uses."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _code_names(const)
    return names


class _EmailContext(Context):
    """Jinja's Context without what the email template does not use (blocks, global keys),
    sharing the renderer's EvalContext when the compiled code never reads or changes it."""

    def __init__(
        self, environment: Any, parent: dict[str, Any], name: str, eval_ctx: Any = None
    ) -> None:
        self.parent = parent
        self.vars = {}
        self.environment = environment
        self.eval_ctx = eval_ctx if eval_ctx is not None else EvalContext(environment, name)
        self.exported_vars = set()
        self.name = name
        self.globals_keys = set()
        self.blocks = {}


@dataclass(slots=True)
class _Compiled:
    name: str
    template: Any
    spans: list[tuple[int, int, _Piece]]
    mtimes: dict[str, float]
    # The environment's globals as one plain dict: Jinja's own new_context() copies them
    # out of a ChainMap on every render (~12 us).
    globals: dict[str, Any] = field(default_factory=dict)
    # One EvalContext for every render when the compiled code never touches it.
    eval_ctx: Any = None

    def origin(self, lineno: int) -> list[tuple[_Piece, int]]:
        return [
            (p, p.line + (lineno - start)) for start, end, p in self.spans if start <= lineno <= end
        ]


# --------------------------------------------------------------------------------------------
# Compiled-template cache on disk
# --------------------------------------------------------------------------------------------

_CACHE_FORMAT = 1


@lru_cache(maxsize=1)
def _renderer_fingerprint() -> bytes:
    """What the compiled code depends on besides the templates: this module's source, the
    libraries that shape it, and the interpreter (code objects are version-specific)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for package in ("jinja2", "css_inline", "markupsafe"):
        digest.update(f"{package}={importlib.metadata.version(package)}\0".encode())
    digest.update(importlib.util.MAGIC_NUMBER)
    digest.update(sys.version.encode())
    return digest.digest()


class _DiskCache:
    """Compiled templates as files in ``cache_dir``, shared by every process that renders.

    One file per (templates folder, template, compile options): ``<slot>.code``, the marshalled
    code, source map and file list, tagged with a key over everything that went into it (this
    module's source, library versions, the interpreter, the name and content of every file
    under the templates folder). An entry whose key differs is stale and gets recompiled and
    replaced, so a change to any template, partial, layout or option invalidates it, and one
    template never has more than one file. Writes go to a temporary file in the same folder
    that is then renamed over the entry: concurrent readers see the old or the new entry, never
    half of one. Unreadable entries count as misses; a cache that cannot be written is skipped.
    """

    def __init__(self, directory: Path, templates_dir: Path, keep_media_queries: bool) -> None:
        self.directory = directory
        self.templates_dir = templates_dir.resolve()
        self.options = f"media={keep_media_queries}"
        self.stats = {"hits": 0, "misses": 0, "writes": 0, "write_errors": 0}

    def _templates_digest(self) -> bytes:
        digest = hashlib.sha256()
        root = self.templates_dir
        skip = self.directory.resolve()
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_relative_to(skip):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            rel = path.relative_to(root).as_posix().encode()
            digest.update(b"%d:%s%d:" % (len(rel), rel, len(data)))
            digest.update(data)
        return digest.digest()

    def key(self, name: str) -> tuple[str, str]:
        """(slot, key): the entry's file name, and the key its content must carry."""
        slot_id = "\0".join(
            (str(self.templates_dir), name, self.options, f"single_pass={SINGLE_PASS_TEXT}")
        )
        slot = hashlib.sha256(slot_id.encode()).hexdigest()[:32]
        digest = hashlib.sha256(_renderer_fingerprint())
        digest.update(self._templates_digest())
        digest.update(slot_id.encode())
        return slot, digest.hexdigest()

    def _path(self, slot: str) -> Path:
        return self.directory / f"{slot}.{sys.implementation.cache_tag}.code"

    def load(
        self, slot: str, key: str
    ) -> tuple[CodeType, list[tuple[int, int, _Piece]], list[str]] | None:
        try:
            entry = marshal.loads(self._path(slot).read_bytes())
            fmt, entry_key, code, spans, files = entry
            if fmt != _CACHE_FORMAT or entry_key != key or not isinstance(code, CodeType):
                raise ValueError("stale entry")
            pieces = [(start, end, _Piece(*piece)) for start, end, piece in spans]
            files = [str(f) for f in files]
        except (OSError, EOFError, ValueError, TypeError):
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return code, pieces, files

    def store(
        self,
        slot: str,
        key: str,
        code: CodeType,
        spans: list[tuple[int, int, _Piece]],
        files: list[str],
    ) -> None:
        pieces = [
            (start, end, (p.kind, p.src, p.template, p.line, p.tag, p.arg))
            for start, end, p in spans
        ]
        data = marshal.dumps((_CACHE_FORMAT, key, code, pieces, list(files)))
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{slot}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, self._path(slot))
            tmp = None
            self.stats["writes"] += 1
        except OSError:
            self.stats["write_errors"] += 1
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


class EmailRenderer:
    """Compiles campaign templates once and renders them per recipient (see module docs)."""

    def __init__(self, config: RendererConfig | None = None) -> None:
        self.config = config or RendererConfig()
        self.templates_dir = Path(self.config.templates_dir)
        base_url = self.config.base_url or ""
        env = _EmailSandbox(
            loader=_NormalisingLoader(str(self.templates_dir)),
            autoescape=True,
            undefined=StrictUndefined,
            auto_reload=False,
        )
        env.filters.update(
            money=_money,
            abs_url=_make_abs_url(base_url),
            _email_text=_text_value,
            _email_raw=_raw_value,
            _email_oneline=_one_line,
            _email_ts=_text_marker,
            _email_tv=_text_marker,
        )
        self._brand: dict[str, Any] = dict(self.config.brand)
        env.globals.update(
            base_url=base_url,
            brand=self._brand,
            behavioral_allowed=False,
            recent_purchase=None,
            offer=None,
            lifecycle=None,
        )
        self.environment = env
        self._abs_url = env.filters["abs_url"]
        mailto = self.config.unsubscribe_mailto
        if mailto and not mailto.lower().startswith("mailto:"):
            mailto = "mailto:" + mailto
        self._default_mailto = mailto
        self._checked_mailto = mailto if mailto and not _BAD_HEADER_URL_RE.search(mailto) else None
        self._inliner = css_inline.CSSInliner(
            keep_at_rules=self.config.keep_media_queries,
            load_remote_stylesheets=False,
        )
        self._cache: dict[str, _Compiled] = {}
        self._lock = threading.Lock()
        cache_dir = self.config.cache_dir
        self._disk_cache = (
            _DiskCache(Path(cache_dir), self.templates_dir, self.config.keep_media_queries)
            if cache_dir is not None
            else None
        )

    # -- templates
    @staticmethod
    def resolve_name(template_name: str) -> str:
        """``newsletter`` -> ``campaigns/newsletter.html.j2``; paths are returned unchanged."""
        if "/" not in template_name and not template_name.endswith(".j2"):
            return f"campaigns/{template_name}.html.j2"
        return template_name

    def campaign_templates(self) -> list[str]:
        """Names of the templates under ``campaigns/`` (``["birthday", ...]``)."""
        folder = self.templates_dir / "campaigns"
        return sorted(p.name.removesuffix(".html.j2") for p in folder.glob("*.html.j2"))

    def validate_template(self, template_name: str) -> None:
        """Compile the template (syntax, includes, CSS inlining); raise TemplateRenderError."""
        self._compiled(self.resolve_name(template_name))

    def clear_cache(self) -> None:
        """Forget the compiled templates held in memory (the disk cache is left alone)."""
        with self._lock:
            self._cache.clear()

    @property
    def disk_cache_stats(self) -> dict[str, int] | None:
        """Hits, misses and writes of the on-disk cache (``None`` without ``cache_dir``)."""
        return dict(self._disk_cache.stats) if self._disk_cache is not None else None

    def _compiled(self, name: str) -> _Compiled:
        compiled = self._cache.get(name)
        if compiled is not None and (not self.config.auto_reload or self._fresh(compiled)):
            return compiled
        with self._lock:
            compiled = self._cache.get(name)
            if compiled is None or (self.config.auto_reload and not self._fresh(compiled)):
                compiled = self._compile(name)
                self._cache[name] = compiled
            return compiled

    @staticmethod
    def _fresh(compiled: _Compiled) -> bool:
        try:
            return all(Path(f).stat().st_mtime == t for f, t in compiled.mtimes.items())
        except OSError:
            return False

    def _compile(self, name: str) -> _Compiled:
        disk = self._disk_cache
        if disk is None:
            return self._assemble(name, *self._generate(name))
        slot, key = disk.key(name)
        entry = disk.load(slot, key)
        if entry is not None:
            return self._assemble(name, *entry)
        generated = self._generate(name)
        if disk.key(name)[1] == key:  # no template file changed while compiling
            disk.store(slot, key, *generated)
        return self._assemble(name, *generated)

    def _assemble(
        self, name: str, code: CodeType, spans: list[tuple[int, int, _Piece]], files: list[str]
    ) -> _Compiled:
        """The runnable template from compiled code (freshly generated or from the disk cache)."""
        env = self.environment
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
        template.root_render_func.__globals__.update(_FAST_GLOBALS)
        mtimes = {}
        for filename in files:
            with contextlib.suppress(OSError):
                mtimes[filename] = Path(filename).stat().st_mtime
        shared = None if "eval_ctx" in _code_names(code) else EvalContext(env, name)
        return _Compiled(name, template, spans, mtimes, dict(template.globals), shared)

    def _generate(self, name: str) -> tuple[CodeType, list[tuple[int, int, _Piece]], list[str]]:
        """Flatten, inline and compile: the code, its source map and the files it was made of."""
        flattener = _Flattener(self.environment)
        flat = flattener.flatten(name, (name,))
        for meta in ("subject", "preheader"):
            if meta not in flat.defs:
                raise TemplateRenderError(
                    f"the template defines no {{% block {meta} %}}", template=name
                )
        doc, constructs = _html_document(flat.body)
        try:
            inlined = self._inliner.inline(doc)
        except Exception as exc:  # css_inline.InlineError and parser errors
            raise TemplateRenderError(f"CSS inlining failed: {exc}", template=name) from None
        intervals = None
        if SINGLE_PASS_TEXT and "text" not in flat.defs:
            intervals = _single_pass_plan(_text_items(flat.body)[0], constructs)
        if intervals is not None:
            try:
                return self._compile_source(flattener, flat, name, inlined, constructs, intervals)
            except _SinglePassUnavailable:
                pass
        return self._compile_source(flattener, flat, name, inlined, constructs, None)

    def _compile_source(
        self,
        flattener: _Flattener,
        flat: _Flat,
        name: str,
        inlined: str,
        constructs: list[_Piece],
        intervals: list[list[tuple[str, Any]]] | None,
    ) -> tuple[CodeType, list[tuple[int, int, _Piece]], list[str]]:
        """One template for subject, preheader, HTML and text (see the module docs).

        With ``intervals`` the text part is written in the same pass as the HTML (each value is
        looked up once per pass, not twice); without, it is a second capture after the HTML.
        """

        def meta_pieces(block: str) -> list[_Piece]:
            out: list[_Piece] = []
            flattener.expand_block(block, 0, flat.defs, (name,), out)
            return out

        builder = _SourceBuilder()
        for p in flat.prelude:
            if p.kind == "text":
                builder.text(p.src)
            elif p.kind != "comment":
                builder.construct(p.src, p)
        # Plain-text captures turn autoescaping off *inside* the {% set %} body: an
        # {% autoescape %} block around the {% set %} would scope the variable away.
        builder.text("{% set _email_subject %}{% autoescape false %}")
        _emit_one_line(builder, meta_pieces("subject"))
        builder.text("{% endautoescape %}{% endset %}")
        builder.text("{% set _email_preheader %}{% autoescape false %}")
        _emit_one_line(builder, meta_pieces("preheader"))
        builder.text(
            "{% endautoescape %}{% endset %}{% set subject = _email_subject|_email_oneline %}"
            "{% set preheader = _email_preheader|_email_oneline %}{% set _email_html %}"
        )
        statics: list[str] | None = None
        clean_text = False
        if intervals is not None:
            statics = []
            clean_text = _text_structure_clean(intervals)
            _emit_html_and_text(builder, inlined, constructs, name, intervals, statics)
            builder.text("{% endset %}")
        else:
            _emit_html(builder, inlined, constructs, name)
            builder.text("{% endset %}{% set _email_text %}{% autoescape false %}")
            if "text" in flat.defs:
                for p in meta_pieces("text"):
                    if p.kind == "text":
                        builder.text(p.src)
                    else:
                        _emit_text_piece(builder, p)
            else:
                items, text_constructs = _text_items(flat.body)
                for kind, value in items:
                    if kind == "s":
                        builder.text(_jinja_literal(value))
                    else:
                        _emit_text_piece(builder, text_constructs[value])
            builder.text("{% endautoescape %}{% endset %}")

        source = builder.source()
        filename = f"<email {name}>"
        env = self.environment
        try:
            code = _fast_code(
                env.compile(source, name, filename, raw=True), filename, statics, clean_text
            )
        except TemplateSyntaxError as exc:
            where = _Compiled(name, None, builder.spans, {}).origin(exc.lineno or 0)
            piece, line = where[0] if where else (None, None)
            raise TemplateRenderError(
                f"syntax error after flattening: {exc.message}",
                template=piece.template if piece else name,
                lineno=line,
            ) from None
        return code, builder.spans, list(flat.files.values())

    # -- rendering
    def render(self, template_name: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Render one email; raises TemplateRenderError."""
        return self._render(self._compiled(self.resolve_name(template_name)), context)

    def render_many(
        self, template_name: str, contexts: Iterable[Mapping[str, Any]]
    ) -> list[RenderedEmail | TemplateRenderError]:
        """Render one email per context; failures come back as TemplateRenderError values.

        If the template itself does not compile, every entry is that same error.
        """
        try:
            compiled = self._compiled(self.resolve_name(template_name))
        except TemplateRenderError as exc:
            return [exc for _ in contexts]
        render = self._render
        out: list[RenderedEmail | TemplateRenderError] = []
        append = out.append
        for context in contexts:
            try:
                append(render(compiled, context))
            except TemplateRenderError as exc:
                append(exc)
        return out

    def _render(self, compiled: _Compiled, context: Mapping[str, Any]) -> RenderedEmail:
        if type(context) is not dict:
            if not isinstance(context, Mapping):
                raise TemplateRenderError(
                    f"context must be a mapping, got {type(context).__name__}",
                    template=compiled.name,
                )
            context = dict(context)
        brand = context.get("brand")
        if brand is not None and self._brand and isinstance(brand, Mapping):
            context = {**context, "brand": {**self._brand, **brand}}
        template = compiled.template
        try:
            ctx = _EmailContext(
                self.environment, {**compiled.globals, **context}, compiled.name, compiled.eval_ctx
            )
            for _ in template.root_render_func(ctx):
                pass
        except Exception as exc:
            raise self._runtime_error(compiled, exc, context) from exc
        values = ctx.vars
        warnings: list[str] = []
        subject = values["_email_subject"]
        subject = subject.strip() if type(subject) is str else str(subject).strip()
        if not subject.isprintable():  # line breaks: see _header_text
            subject = _header_text(subject, "subject", warnings)
        preheader = values["_email_preheader"]
        preheader = preheader.strip() if type(preheader) is str else str(preheader).strip()
        if not preheader.isprintable():
            preheader = _header_text(preheader, "preheader", warnings)
        if not subject or not preheader:
            raise TemplateRenderError(
                f"the {'subject' if not subject else 'preheader'} is empty after rendering",
                template=compiled.name,
                customer_id=_customer_id(context),
            )
        text = str(values["_email_text"]).strip()
        if not values.get("_email_text_clean"):  # see _text_structure_clean
            if " \n" in text or "\n " in text or "\t\n" in text:
                text = _LINE_END_SPACE_RE.sub("\n", text)
            if "\n\n\n" in text:
                text = _MANY_NEWLINES_RE.sub("\n\n", text)
        headers = self._headers(compiled, context, warnings)
        return RenderedEmail(
            subject, preheader, str(values["_email_html"]), text, headers, warnings
        )

    def _headers(
        self, compiled: _Compiled, context: dict[str, Any], warnings: list[str]
    ) -> dict[str, str]:
        links = context.get("links")
        url = (
            links.get("unsubscribe_url")
            if type(links) is dict or isinstance(links, Mapping)
            else None
        )
        if not url:
            raise TemplateRenderError(
                "links.unsubscribe_url is required (List-Unsubscribe header)",
                template=compiled.name,
                variable="links.unsubscribe_url",
                customer_id=_customer_id(context),
            )
        if type(url) is not str or not url.startswith(_HTTP_PREFIXES):
            url = self._abs_url(url)  # (an absolute http(s) URL comes back unchanged)
        mailto = links.get("unsubscribe_mailto") or self._default_mailto  # type: ignore[union-attr]
        if (
            mailto
            and mailto is not self._default_mailto  # normalised once, in __init__
            and not str(mailto).lower().startswith("mailto:")
        ):
            mailto = "mailto:" + str(mailto)
        if url and (_BAD_HEADER_URL_RE.search(url) or url == "#"):
            raise self._bad_unsubscribe(compiled, url, context)
        if (
            mailto
            and mailto is not self._checked_mailto  # the configured one is checked once
            and (_BAD_HEADER_URL_RE.search(mailto) or mailto == "#")
        ):
            raise self._bad_unsubscribe(compiled, mailto, context)
        header = f"<{url.replace(',', '%2C') if ',' in url else url}>"
        if mailto:
            header += f", <{mailto.replace(',', '%2C')}>"
        headers = {"List-Unsubscribe": header}
        if url.startswith("https://"):
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        else:
            warnings.append(
                "List-Unsubscribe-Post left out: one-click unsubscribe (RFC 8058) needs an "
                "https:// unsubscribe_url"
            )
        return headers

    @staticmethod
    def _bad_unsubscribe(
        compiled: _Compiled, value: Any, context: Mapping[str, Any]
    ) -> TemplateRenderError:
        return TemplateRenderError(
            f"unusable List-Unsubscribe URL {value!r}",
            template=compiled.name,
            variable="links.unsubscribe_url",
            customer_id=_customer_id(context),
        )

    def _runtime_error(
        self, compiled: _Compiled, exc: Exception, context: Mapping[str, Any]
    ) -> TemplateRenderError:
        """Turn an exception from inside the template into an error naming file and line."""
        # The innermost frame of compiled template code tells the line (Jinja's debug info);
        # for the combined template the source map turns that into the original file/line.
        frame_template, py_line = None, 0
        tb = exc.__traceback__
        while tb is not None:
            t = tb.tb_frame.f_globals.get("__jinja_template__")
            if t is not None:
                frame_template, py_line = t, tb.tb_lineno
            tb = tb.tb_next
        name, lineno = compiled.name, None
        origins: list[tuple[_Piece, int]] = []
        if frame_template is compiled.template:
            origins = compiled.origin(frame_template.get_corresponding_lineno(py_line))
            if origins:
                name, lineno = origins[0][0].template, origins[0][1]
        elif frame_template is not None:  # a macro file imported at runtime
            name = frame_template.name or name
            lineno = frame_template.get_corresponding_lineno(py_line)

        message = str(exc) or type(exc).__name__
        variable = None
        if isinstance(exc, UndefinedError):
            for pattern in _UNDEFINED_PATTERNS:
                m = pattern.search(message)
                if m:
                    variable = m.group(1)
                    break
            for piece, line in origins if variable else ():
                dotted = _dotted_name(piece.src, variable)  # type: ignore[arg-type]
                if dotted:  # the construct on that line that reads it: recipient.first_name
                    name, lineno, variable = piece.template, line, dotted
                    break
            reason = (
                f"undefined variable '{variable}' ({message})"
                if variable
                else f"undefined value ({message})"
            )
        else:
            reason = f"{type(exc).__name__}: {message}"
        return TemplateRenderError(
            reason,
            template=name,
            lineno=lineno,
            variable=variable,
            customer_id=_customer_id(context),
        )


def _dotted_name(src: str, last: str) -> str | None:
    """The dotted path in ``src`` that ends in ``last`` (``recipient.first_name``)."""
    m = re.search(r"(?<![\w.'\"])((?:[A-Za-z_]\w*\.)*" + re.escape(last) + r")\b", src)
    return m.group(1) if m else None


def _customer_id(context: Mapping[str, Any]) -> Any:
    recipient = context.get("recipient") if isinstance(context, Mapping) else None
    return recipient.get("customer_id") if isinstance(recipient, Mapping) else None
