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
5. Subject, preheader, HTML and text become four ``{% set %}`` captures of ONE compiled
   template, so each recipient costs a single Jinja render. A source map sends errors of the
   combined template back to the original file and line.

Rendering therefore runs at raw Jinja2 speed: no per-recipient HTML parsing, CSS work or
HTML-to-text conversion. Autoescaping stays on for the HTML; the sandbox is
``ImmutableSandboxedEnvironment``. Two small speed-ups on top of stock Jinja: ``obj.key`` on a
plain dict reads the item first (the stock sandbox raises and catches an AttributeError for
every ``product.name``; dict items are data, so nothing new is exposed), and the compiled
template's output escaping returns the escaped ``str`` instead of wrapping every value in a
``Markup`` object that is only ever joined into the page (same escaping, ``markupsafe``'s C
helper).

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

import contextlib
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import css_inline
from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, TemplateSyntaxError
from jinja2.exceptions import UndefinedError
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
    file and render call).
    """

    templates_dir: Path | str = DEFAULT_TEMPLATES_DIR
    brand: Mapping[str, Any] = field(default_factory=dict)
    base_url: str = ""
    unsubscribe_mailto: str | None = None
    keep_media_queries: bool = True
    auto_reload: bool = False


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
    pos = 0
    seen: list[int] = []
    for m in _PH_ANY_RE.finditer(inlined):
        builder.text(_jinja_literal(inlined[pos : m.start()]))
        idx = int(m.group(1) or m.group(2))
        seen.append(idx)
        builder.construct(constructs[idx].src, constructs[idx])
        pos = m.end()
    builder.text(_jinja_literal(inlined[pos:]))
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


def _raw_value(value: Any) -> str:
    """Output filter of subject/preheader: the value as plain text (Markup is unescaped)."""
    if type(value) is str:
        return value
    if isinstance(value, Markup):
        return value.unescape()
    return str(value)


def _fast_escape(value: Any) -> Any:
    """Output escaping of the compiled HTML (same result as ``markupsafe.escape``).

    Jinja wraps every ``{{ value }}`` in ``escape()``, which builds a ``Markup`` object only for
    it to be joined into the output. Returning the escaped ``str`` skips that allocation; the
    value is only ever concatenated into the page, never treated as markup again.
    """
    if type(value) is str:
        return _escape_inner(value)
    if hasattr(value, "__html__"):
        return value.__html__()
    return _escape_inner(str(value))


def _one_line(value: Any) -> str:
    """``subject``/``preheader`` as seen by the HTML: one line, plain ``str`` (so escaped)."""
    return _LINE_BREAKS_RE.sub(" ", str(value)).strip()


def _header_text(raw: Any, what: str, warnings: list[str]) -> str:
    s = str(raw).strip()
    if _LINE_BREAKS_RE.search(s):
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
    first. A missing key falls back to the normal (safe) lookup, so ``d.items()`` still works.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


# --------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------

_UNDEFINED_PATTERNS = (
    re.compile(r"'([^']+)' is undefined"),
    re.compile(r"has no attribute '([^']+)'"),
    re.compile(r"has no element '?([^']+?)'?$"),
)


@dataclass(slots=True)
class _Compiled:
    name: str
    template: Any
    spans: list[tuple[int, int, _Piece]]
    mtimes: dict[str, float]

    def origin(self, lineno: int) -> list[tuple[_Piece, int]]:
        return [
            (p, p.line + (lineno - start)) for start, end, p in self.spans if start <= lineno <= end
        ]


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
        )
        self._brand: dict[str, Any] = dict(self.config.brand)
        env.globals.update(
            base_url=base_url,
            brand=self._brand,
            behavioral_allowed=False,
            recent_purchase=None,
            offer=None,
        )
        self.environment = env
        self._abs_url = env.filters["abs_url"]
        mailto = self.config.unsubscribe_mailto
        if mailto and not mailto.lower().startswith("mailto:"):
            mailto = "mailto:" + mailto
        self._default_mailto = mailto
        self._inliner = css_inline.CSSInliner(
            keep_at_rules=self.config.keep_media_queries,
            load_remote_stylesheets=False,
        )
        self._cache: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            self._cache.clear()

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
        flattener = _Flattener(self.environment)
        flat = flattener.flatten(name, (name,))
        for meta in ("subject", "preheader"):
            if meta not in flat.defs:
                raise TemplateRenderError(
                    f"the template defines no {{% block {meta} %}}", template=name
                )

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
        doc, constructs = _html_document(flat.body)
        try:
            inlined = self._inliner.inline(doc)
        except Exception as exc:  # css_inline.InlineError and parser errors
            raise TemplateRenderError(f"CSS inlining failed: {exc}", template=name) from None
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
            code = env.compile(source, name, filename)
        except TemplateSyntaxError as exc:
            where = _Compiled(name, None, builder.spans, {}).origin(exc.lineno or 0)
            piece, line = where[0] if where else (None, None)
            raise TemplateRenderError(
                f"syntax error after flattening: {exc.message}",
                template=piece.template if piece else name,
                lineno=line,
            ) from None
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
        template.root_render_func.__globals__["escape"] = _fast_escape
        mtimes = {}
        for filename_ in flat.files.values():
            with contextlib.suppress(OSError):
                mtimes[filename_] = Path(filename_).stat().st_mtime
        return _Compiled(name, template, builder.spans, mtimes)

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
            ctx = template.new_context(context)
            for _ in template.root_render_func(ctx):
                pass
        except Exception as exc:
            raise self._runtime_error(compiled, exc, context) from exc
        values = ctx.vars
        warnings: list[str] = []
        subject = _header_text(values["_email_subject"], "subject", warnings)
        preheader = _header_text(values["_email_preheader"], "preheader", warnings)
        if not subject or not preheader:
            raise TemplateRenderError(
                f"the {'subject' if not subject else 'preheader'} is empty after rendering",
                template=compiled.name,
                customer_id=_customer_id(context),
            )
        text = str(values["_email_text"]).strip()
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
        url = links.get("unsubscribe_url") if isinstance(links, Mapping) else None
        if not url:
            raise TemplateRenderError(
                "links.unsubscribe_url is required (List-Unsubscribe header)",
                template=compiled.name,
                variable="links.unsubscribe_url",
                customer_id=_customer_id(context),
            )
        url = self._abs_url(url)
        mailto = links.get("unsubscribe_mailto") or self._default_mailto  # type: ignore[union-attr]
        if mailto and not str(mailto).lower().startswith("mailto:"):
            mailto = "mailto:" + str(mailto)
        for value in (url, mailto):
            if value and (_BAD_HEADER_URL_RE.search(value) or value == "#"):
                raise TemplateRenderError(
                    f"unusable List-Unsubscribe URL {value!r}",
                    template=compiled.name,
                    variable="links.unsubscribe_url",
                    customer_id=_customer_id(context),
                )
        header = f"<{url.replace(',', '%2C')}>"
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
