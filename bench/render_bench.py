"""Throughput of the email renderer on one core, with raw Jinja2 beside it.

    .venv/bin/python bench/render_bench.py [--template newsletter|all] [--products 5] [--core 0]

Contexts are built the way the pipeline builds them: rows shaped like
``payloads.load_send_rows`` output (5 recommended products, a recent purchase, signed links)
turned into template contexts by ``payloads.build_context``. Rows (payloads per second on one
core; a payload is one recipient's subject + preheader + CSS-inlined HTML + plain text +
List-Unsubscribe headers):

* ``jinja2 ImmutableSandboxedEnvironment``: the campaign template rendered by plain sandboxed
  Jinja2 straight from the template files (extends/includes resolved at render time, CSS left
  in ``<style>``), HTML only, autoescape + StrictUndefined: the baseline.
* ``reference: minimal 5-product snippet``: a bare sandboxed loop over the 5 products (name,
  price, link, image) with no layout, to relate this table to quick "raw Jinja2" figures.
* ``EmailRenderer.render_many``: the call ``payloads.render_payloads`` makes, results kept
  (as the pipeline keeps them until they are written).
* ``EmailRenderer.render``: one call per payload, each result dropped after the call.
* ``... (offer, relative URLs)``: ``render_many`` with an offer block and relative URLs (more
  values per email than the pipeline's contexts, which carry no offer).

Every variant's output is checked once before timing (no errors, subject/preheader present,
every product's name and link in the HTML and text, the unsubscribe link and header).

Timing: ``--rounds`` rounds of ``--batch`` payloads, variants interleaved round-robin; the
process is pinned to one core (``--core``). ``cpu`` columns are the thread's CPU time
(``time.thread_time``), which a busy shared machine disturbs far less than wall-clock time;
``wall`` is ``time.perf_counter``. The best round counts; medians are shown beside it. Python
pays for first-touching new memory when results are kept, so ``render_many`` (results kept) is
slower than ``render`` (results dropped) on the same work. The script is not a test; it prints a
table.

Allocator: kept results need memory, and by default glibc hands freed heap memory back to the
kernel at once (trim threshold 128 KiB), so every batch touches new pages: about two page
faults per payload, several microseconds each on this VM. The payloads asset renders, stores
and frees ``rendering.batch_size`` payloads at a time and first raises the trim threshold
(``personalization_assets/heap.py``, ``rendering.retain_heap_mb`` in ``config/pipeline.yaml``),
so each batch reuses the pages of the one before. The summary runs ``render_many`` both ways,
the other one in a child process (``--retain-heap MB`` sets what the asset sets).

Compiled-template cache: the summary also times the first render of the template in fresh
processes (``--first-render``, imports not counted) with an empty cache folder (a compile) and
with the folder a previous process filled (a load), see ``RendererConfig.cache_dir``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jinja2 import Environment, FileSystemLoader, StrictUndefined  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from personalization_assets.defs.campaigns.payloads import build_context  # noqa: E402
from personalization_assets.defs.campaigns.rendering import (  # noqa: E402
    EmailRenderer,
    RenderedEmail,
    RendererConfig,
)
from personalization_assets.heap import retain_freed_heap  # noqa: E402
from personalization_assets.settings import load_pipeline_settings  # noqa: E402

BASE_URL = "https://northwind.example"
BRAND = {
    "name": "Northwind Outdoor",
    "address": "12 Fjord Street, 5003 Bergen, Norway",
    "logo_url": "https://cdn.northwind.example/logo.png",
    "website_url": BASE_URL,
}
CATEGORIES = ["Footwear", "Jackets", "Backpacks", "Tents", "Accessories"]
CAMPAIGN_NAMES = {"weekly-2024-06": "Weekly newsletter"}


def send_row(i: int, products: int, template: str = "newsletter") -> dict:
    """One row as ``payloads.load_send_rows`` returns it."""
    customer_id = f"C{i:06d}"
    return {
        "idempotency_key": f"{i:08x}c0ffee{i:016x}",
        "campaign_id": "weekly-2024-06",
        "customer_id": customer_id,
        "variant": "A" if i % 2 else "B",
        "rule": "days_since_last_open <= 30",
        "template": template,
        "email": f"{customer_id.lower()}@x.example",
        "first_name": "" if i % 7 == 0 else "Ingrid",
        "behavioral_allowed": bool(i % 3),
        "recommendations": [
            {
                "product_id": f"P{(i * 7 + k * 131) % 997:04d}",
                "name": f"Trailblazer {(i + k) % 50} waterproof hiking boot",
                "price": 129.0 + ((i + k) % 40) * 10.5,
                "currency": "EUR",
                "category": CATEGORIES[(i + k) % len(CATEGORIES)],
            }
            for k in range(products)
        ],
        "cart_product": None,
        "recent_purchase": {"product_id": "P0042", "name": "Fjord rain jacket"},
    }


def pipeline_context(i: int, products: int, template: str = "newsletter") -> dict:
    return build_context(
        send_row(i, products, template), base_url=BASE_URL, campaign_names=CAMPAIGN_NAMES
    )


def hand_made_context(i: int, products: int) -> dict:
    """A richer context: an offer block and URLs relative to ``base_url``."""
    context = pipeline_context(i, products)
    for product in context["recommendations"]:
        product["url"] = product["url"].removeprefix(BASE_URL)
        product["image_url"] = product["image_url"].removeprefix(BASE_URL)
    context["offer"] = {
        "title": "15% off all footwear",
        "description": "Our summer sale starts now.",
        "code": "SUMMER15",
        "expires_at": "30 June",
        "url": "/sale",
    }
    return context


def check(email: object, context: dict) -> None:
    """The payload is complete: fail loudly rather than time a broken render."""
    assert isinstance(email, RenderedEmail), email
    assert email.subject and email.preheader and email.headers["List-Unsubscribe"]
    assert email.html.startswith("<!DOCTYPE html>") and email.html.rstrip().endswith("</html>")
    unsubscribe = context["links"]["unsubscribe_url"]
    assert unsubscribe.replace("&", "&amp;") in email.html and unsubscribe in email.text
    for product in context["recommendations"]:
        url = product["url"]
        assert product["name"] in email.html and product["name"] in email.text, product
        assert url in email.html and url in email.text, url


def raw_jinja(env_class: type[Environment], renderer: EmailRenderer, name: str) -> Callable:
    env = env_class(
        loader=FileSystemLoader(str(renderer.templates_dir)),
        autoescape=True,
        undefined=StrictUndefined,
    )
    env.filters.update(renderer.environment.filters)
    env.globals.update(renderer.environment.globals)
    template = env.get_template(renderer.resolve_name(name))

    def render(ctx: dict) -> str:
        # The layout prints `subject`/`preheader`, which the renderer computes first.
        return template.render(ctx, subject="Your week at Northwind", preheader="5 products")

    return render


MINIMAL_SNIPPET = (
    "<h1>Hi {{ recipient.first_name }}</h1><table>{% for p in recommendations %}<tr><td>"
    '<a href="{{ p.url }}"><img src="{{ p.image_url }}" alt="{{ p.name }}"></a></td>'
    "<td>{{ p.name }}<br>{{ p.price }} {{ p.currency }}</td></tr>{% endfor %}</table>"
    '<a href="{{ links.unsubscribe_url }}">Unsubscribe</a>'
)


def loop(fn: Callable, ctxs: list[dict]) -> Callable[[], None]:
    def run() -> None:
        for ctx in ctxs:
            fn(ctx)

    return run


def measure(variants: dict[str, Callable[[], object]], rounds: int, batch: int) -> dict:
    for fn in variants.values():  # warm up
        fn()
    cpu: dict[str, list[float]] = {label: [] for label in variants}
    wall: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, fn in variants.items():
            gc.collect()
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            fn()
            cpu[label].append((time.thread_time() - start_cpu) / batch)
            wall[label].append((time.perf_counter() - start_wall) / batch)
    return {label: (cpu[label], wall[label]) for label in variants}


TARGET_PER_SECOND = 25_000  # issue #5: payloads/s/core for a 5-product template
MANY = "EmailRenderer.render_many (all parts, kept)"
SINGLE = "EmailRenderer.render (all parts, dropped)"


def first_render(cache_dir: str, template: str, products: int) -> dict:
    """In this (fresh) process: seconds from a new renderer to its first email."""
    start = time.perf_counter()
    renderer = EmailRenderer(RendererConfig(brand=BRAND, base_url=BASE_URL, cache_dir=cache_dir))
    check(renderer.render(template, context := pipeline_context(0, products, template)), context)
    return {"seconds": time.perf_counter() - start, "stats": renderer.disk_cache_stats}


def child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def cache_latency(template: str, products: int, repeats: int = 3) -> tuple[float, float]:
    """(cold, warm): best first-render seconds in fresh processes, empty vs filled cache."""
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="render-cache-") as folder:
            args = ("--first-render", folder, "--template", template, "--products", str(products))
            first = child(*args)
            assert first["stats"]["misses"] == 1 and first["stats"]["writes"] == 1, first
            cold.append(first["seconds"])
            second = child(*args)
            assert second["stats"]["hits"] == 1, second  # loaded, not compiled
            warm.append(second["seconds"])
    return min(cold), min(warm)


def print_summary(rows: list[tuple[str, str, str, str]]) -> None:
    header = f"{'summary':<58} {'value':>10} {'target':>12} {'met':>4}"
    print(header)
    print("-" * len(header))
    for label, value, target, met in rows:
        print(f"{label:<58} {value:>10} {target:>12} {met:>4}")


def rate_row(label: str, seconds_per_payload: float) -> tuple[str, str, str, str]:
    rate = 1 / seconds_per_payload
    met = "yes" if rate >= TARGET_PER_SECOND else "no"
    return label, f"{rate:,.0f}", f">= {TARGET_PER_SECOND:,}", met


def print_table(results: dict, baseline_label: str | None) -> None:
    header = (
        f"{'variant':<52} {'cpu /s':>8} {'us/payload':>10} {'median /s':>9} {'wall /s':>8} "
        f"{'vs sandbox':>10}"
    )
    print(header)
    print("-" * len(header))
    baseline = min(results[baseline_label][0]) if baseline_label else None
    for label, (cpu, wall) in results.items():
        best = min(cpu)
        ratio = f"{baseline / best:>9.2f}x" if baseline else ""
        print(
            f"{label:<52} {1 / best:>8,.0f} {best * 1e6:>10.1f} "
            f"{1 / statistics.median(cpu):>9,.0f} {1 / min(wall):>8,.0f} {ratio:>10}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", default="newsletter", help="a campaign template or 'all'")
    parser.add_argument("--products", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--batch", type=int, default=2000, help="payloads per round (the asset's batch_size)"
    )
    parser.add_argument("--core", type=int, default=None, help="CPU to pin to (default: first)")
    parser.add_argument(
        "--retain-heap",
        type=int,
        default=0,
        metavar="MB",
        help="keep freed heap memory as the payloads asset does (heap.retain_freed_heap)",
    )
    parser.add_argument("--no-summary", action="store_true", help="skip the child processes")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-render", metavar="CACHE_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_render:
        print(json.dumps(first_render(args.first_render, args.template, args.products)))
        return
    if args.retain_heap and not retain_freed_heap(args.retain_heap):
        print("note: this allocator has no mallopt; --retain-heap has no effect", file=sys.stderr)

    if hasattr(os, "sched_setaffinity"):
        core = args.core if args.core is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    else:  # pragma: no cover
        core = None

    renderer = EmailRenderer(RendererConfig(brand=BRAND, base_url=BASE_URL))
    name = "newsletter" if args.template == "all" else args.template
    renderer.validate_template(name)
    contexts = [pipeline_context(i, args.products, name) for i in range(args.batch)]
    richer = [hand_made_context(i, args.products) for i in range(args.batch)]
    for ctx in contexts[:50]:
        check(renderer.render(name, ctx), ctx)
    for ctx in richer[:50]:
        check(renderer.render(name, ctx), ctx)

    sandboxed = raw_jinja(ImmutableSandboxedEnvironment, renderer, name)
    snippet_env = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
    snippet = snippet_env.from_string(MINIMAL_SNIPPET)
    variants: dict[str, Callable[[], object]] = {
        "jinja2 ImmutableSandboxedEnvironment (HTML only)": loop(sandboxed, contexts),
        "reference: minimal 5-product snippet (sandboxed)": loop(snippet.render, contexts),
        MANY: lambda: renderer.render_many(name, contexts),
        SINGLE: loop(lambda c: renderer.render(name, c), contexts),
        "EmailRenderer.render_many (offer, relative URLs)": lambda: renderer.render_many(
            name, richer
        ),
    }
    if args.json:  # a child run for the summary: the renderer's own rows only
        results = measure({k: variants[k] for k in (MANY, SINGLE)}, args.rounds, args.batch)
        print(json.dumps({label: min(cpu) for label, (cpu, _) in results.items()}))
        return
    sample = renderer.render(name, contexts[0])
    print(
        f"template={renderer.resolve_name(name)} products={args.products} core={core} "
        f"batch={args.batch} rounds={args.rounds} python={sys.version.split()[0]}"
    )
    print(
        f"output: html={len(sample.html):,} B  text={len(sample.text):,} B  "
        f"subject={sample.subject!r}"
    )
    print()
    results = measure(variants, args.rounds, args.batch)
    print_table(results, "jinja2 ImmutableSandboxedEnvironment (HTML only)")

    if not args.no_summary:
        heap = "heap retained" if args.retain_heap else "default allocator"
        other = "default allocator" if args.retain_heap else "heap retained, as the asset"
        flags = ["--template", name, "--products", str(args.products), "--core", str(core)]
        flags += ["--rounds", str(args.rounds), "--batch", str(args.batch), "--json"]
        retain = load_pipeline_settings(ROOT / "config").rendering.retain_heap_mb
        child_results = child(*flags, *([] if args.retain_heap else ["--retain-heap", str(retain)]))
        cold, warm = cache_latency(name, args.products)
        print()
        print_summary(
            [
                rate_row(f"render, result dropped ({heap})", min(results[SINGLE][0])),
                rate_row(f"render_many, results kept ({heap})", min(results[MANY][0])),
                rate_row(f"render_many, results kept ({other}; child)", child_results[MANY]),
                ("first render, fresh process, empty cache: compile (s)", f"{cold:.3f}", "", ""),
                (
                    "first render, fresh process, filled cache: load (s)",
                    f"{warm:.4f}",
                    f"< {cold:.3f}",
                    "yes" if warm < cold else "no",
                ),
            ]
        )

    if args.template == "all":
        print()
        per_template: dict[str, Callable[[], object]] = {}
        for template in renderer.campaign_templates():
            ctxs = [pipeline_context(i, args.products, template) for i in range(args.batch)]
            for ctx in ctxs[:20]:
                check(renderer.render(template, ctx), ctx)
            per_template[f"render_many {template}"] = lambda t=template, c=ctxs: (
                renderer.render_many(t, c)
            )
        print_table(measure(per_template, max(3, args.rounds // 3), args.batch), None)


if __name__ == "__main__":
    main()
