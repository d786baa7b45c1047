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

from personalization_assets.defs.campaigns.payloads import build_context  # noqa: E402
from personalization_assets.defs.campaigns.rendering import (  # noqa: E402
    EmailRenderer,
    RenderedEmail,
    RendererConfig,
)

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
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--core", type=int, default=None, help="CPU to pin to (default: first)")
    args = parser.parse_args()

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
        "EmailRenderer.render_many (all parts, kept)": lambda: renderer.render_many(name, contexts),
        "EmailRenderer.render (all parts, dropped)": loop(
            lambda c: renderer.render(name, c), contexts
        ),
        "EmailRenderer.render_many (offer, relative URLs)": lambda: renderer.render_many(
            name, richer
        ),
    }
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
    print_table(
        measure(variants, args.rounds, args.batch),
        "jinja2 ImmutableSandboxedEnvironment (HTML only)",
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
