"""Throughput of the email renderer on one core, with raw Jinja2 beside it.

    .venv/bin/python bench/render_bench.py [--template newsletter] [--products 5] [--core 0]

Rows (payloads per second, best round; a payload is one recipient's email):

* ``jinja2 Environment``: the campaign template rendered by plain Jinja2 straight from the
  template files (extends/includes resolved at render time, CSS left in ``<style>``), HTML
  only, autoescape + StrictUndefined.
* ``jinja2 ImmutableSandboxedEnvironment``: the same with the sandbox: the baseline.
* ``EmailRenderer.render``: subject + preheader + CSS-inlined HTML + plain text + headers.
* ``EmailRenderer.render_many``: the same through the batch API.
* ``... (relative URLs)``: product and link URLs relative to ``base_url`` (joined per payload).
* ``reference: minimal 5-product snippet``: a bare sandboxed loop over the 5 products (name,
  price, link, image) with no layout, to relate this table to quick "raw Jinja2" figures
  measured on small snippets.

Variants run interleaved (round-robin, ``--rounds`` rounds of ``--batch`` payloads each) and
the best round counts, so a busy machine penalises all rows alike. The process is pinned to
one core (``--core``). The script is not a test; it prints a table.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jinja2 import Environment, FileSystemLoader, StrictUndefined  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from personalization_assets.defs.campaigns.rendering import (  # noqa: E402
    EmailRenderer,
    RendererConfig,
)

BRAND = {
    "name": "Northwind Outdoor",
    "address": "12 Fjord Street, 5003 Bergen, Norway",
    "logo_url": "https://cdn.northwind.example/logo.png",
    "website_url": "https://northwind.example",
}
CATEGORIES = ["Footwear", "Jackets", "Backpacks", "Tents", "Accessories"]


def make_context(i: int, products: int, relative: bool = False) -> dict:
    prefix = "" if relative else "https://northwind.example"
    token = f"{i:08x}c0ffee"
    return {
        "recipient": {"customer_id": f"C{i:06d}", "first_name": "Ingrid", "email": "i@x.example"},
        "campaign": {
            "campaign_id": "weekly-2024-06",
            "name": "Weekly newsletter",
            "variant": "A" if i % 2 else "B",
            "rule": "days_since_last_open <= 30",
        },
        "recommendations": [
            {
                "product_id": f"P{(i + k) % 997:04d}",
                "name": f"Trailblazer {k} waterproof hiking boot",
                "price": 129.0 + k * 10.5,
                "currency": "EUR",
                "image_url": f"{prefix}/img/products/P{(i + k) % 997:04d}.jpg",
                "url": f"{prefix}/p/P{(i + k) % 997:04d}?utm_source=email&utm_campaign=weekly",
                "category": CATEGORIES[k % len(CATEGORIES)],
            }
            for k in range(products)
        ],
        "recent_purchase": {"product_id": "P0042", "name": "Fjord rain jacket"},
        "offer": {
            "title": "15% off all footwear",
            "description": "Our summer sale starts now.",
            "code": "SUMMER15",
            "expires_at": "30 June",
            "url": f"{prefix}/sale",
        },
        "links": {
            "unsubscribe_url": f"https://northwind.example/u/{token}",
            "preferences_url": f"{prefix}/prefs/{token}",
            "view_in_browser_url": f"{prefix}/v/{token}",
        },
        "behavioral_allowed": bool(i % 3),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", default="newsletter")
    parser.add_argument("--products", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--core", type=int, default=None, help="CPU to pin to (default: first)")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        core = args.core if args.core is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    else:  # pragma: no cover
        core = None

    renderer = EmailRenderer(RendererConfig(brand=BRAND, base_url="https://northwind.example"))
    renderer.validate_template(args.template)
    contexts = [make_context(i, args.products) for i in range(args.batch)]
    relative = [make_context(i, args.products, relative=True) for i in range(args.batch)]
    plain = raw_jinja(Environment, renderer, args.template)
    sandboxed = raw_jinja(ImmutableSandboxedEnvironment, renderer, args.template)
    name = args.template
    snippet_env = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
    snippet = snippet_env.from_string(MINIMAL_SNIPPET)

    def loop(fn: Callable, ctxs: list[dict]) -> Callable[[], None]:
        def run() -> None:
            for ctx in ctxs:
                fn(ctx)

        return run

    variants: dict[str, Callable[[], object]] = {
        "jinja2 Environment (HTML only)": loop(plain, contexts),
        "jinja2 ImmutableSandboxedEnvironment (HTML only)": loop(sandboxed, contexts),
        "EmailRenderer.render (all parts)": loop(lambda c: renderer.render(name, c), contexts),
        "EmailRenderer.render_many (all parts)": lambda: renderer.render_many(name, contexts),
        "EmailRenderer.render (relative URLs)": loop(lambda c: renderer.render(name, c), relative),
        "reference: minimal 5-product snippet (sandboxed)": loop(snippet.render, contexts),
    }
    sample = renderer.render(name, contexts[0])
    for fn in variants.values():  # warm up
        fn()

    timings: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(args.rounds):
        for label, fn in variants.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            timings[label].append((time.perf_counter() - start) / args.batch)

    baseline = min(timings["jinja2 ImmutableSandboxedEnvironment (HTML only)"])
    print(
        f"template={renderer.resolve_name(name)} products={args.products} core={core} "
        f"batch={args.batch} rounds={args.rounds} python={sys.version.split()[0]}"
    )
    print(
        f"output: html={len(sample.html):,} B  text={len(sample.text):,} B  "
        f"subject={sample.subject!r}"
    )
    print()
    header = (
        f"{'variant':<50} {'payloads/s':>11} {'us/payload':>11} {'median/s':>10} {'vs sandbox':>10}"
    )
    print(header)
    print("-" * len(header))
    for label, values in timings.items():
        best = min(values)
        median = statistics.median(values)
        print(
            f"{label:<50} {1 / best:>11,.0f} {best * 1e6:>11.1f} {1 / median:>10,.0f} "
            f"{baseline / best:>9.2f}x"
        )


if __name__ == "__main__":
    main()
