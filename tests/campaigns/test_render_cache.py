"""The on-disk cache of compiled templates (``RendererConfig.cache_dir``)."""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from personalization_assets.defs.campaigns.rendering import (
    DEFAULT_TEMPLATES_DIR,
    EmailRenderer,
    RenderedEmail,
    RendererConfig,
    TemplateRenderError,
)

BRAND = {
    "name": "Northwind Outdoor",
    "address": "12 Fjord Street, Bergen",
    "logo_url": "https://cdn.northwind.example/logo.png",
    "website_url": "https://northwind.example",
}


def context(i: int = 1) -> dict:
    return {
        "recipient": {"customer_id": f"C{i}", "first_name": "Ingrid", "email": "i@x.example"},
        "campaign": {"campaign_id": "weekly", "name": "Weekly", "variant": "AB"[i % 2]},
        "recommendations": [
            {
                "product_id": f"P{k}",
                "name": f"Trail boot {k} <b>",
                "price": 120 + k + i,
                "currency": "EUR",
                "image_url": f"/img/{k}.jpg",
                "url": f"https://northwind.example/p/{k}",
                "category": "Footwear",
            }
            for k in range(5)
        ],
        "links": {
            "unsubscribe_url": f"https://northwind.example/u/{i}",
            "preferences_url": f"https://northwind.example/prefs/{i}",
            "view_in_browser_url": f"https://northwind.example/v/{i}",
        },
        "behavioral_allowed": bool(i % 3),
    }


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A private copy of the shipped templates, free to edit."""
    return Path(shutil.copytree(DEFAULT_TEMPLATES_DIR, tmp_path / "templates"))


def make_renderer(templates: Path, cache_dir: Path, **config: object) -> EmailRenderer:
    return EmailRenderer(
        RendererConfig(
            templates,
            brand=BRAND,
            base_url="https://northwind.example",
            cache_dir=cache_dir,
            **config,  # type: ignore[arg-type]
        )
    )


def no_compiling(renderer: EmailRenderer) -> EmailRenderer:
    """The renderer fails the test if it compiles anything instead of loading it."""

    def fail(name: str) -> None:
        raise AssertionError(f"{name} was compiled, not loaded from the cache")

    renderer._generate = fail  # type: ignore[method-assign]
    return renderer


def assert_same_emails(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert isinstance(x, RenderedEmail) and isinstance(y, RenderedEmail)
        assert (x.subject, x.preheader, x.html, x.text, x.headers, x.warnings) == (
            y.subject,
            y.preheader,
            y.html,
            y.text,
            y.headers,
            y.warnings,
        )


def test_second_renderer_loads_compiled_templates_instead_of_compiling(
    templates: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = make_renderer(templates, cache)
    names = first.campaign_templates()
    for name in names:
        first.validate_template(name)
    assert first.disk_cache_stats == {
        "hits": 0,
        "misses": len(names),
        "writes": len(names),
        "write_errors": 0,
    }
    assert len(list(cache.glob("*.code"))) == len(names)

    second = no_compiling(make_renderer(templates, cache))
    uncached = EmailRenderer(RendererConfig(templates, brand=BRAND, base_url=first.config.base_url))
    contexts = [context(i) for i in range(6)]
    for name in names:
        assert_same_emails(second.render_many(name, contexts), uncached.render_many(name, contexts))
    assert second.disk_cache_stats["hits"] == len(names)  # type: ignore[index]


def test_errors_from_a_cached_template_still_name_file_line_and_variable(
    templates: Path, tmp_path: Path
) -> None:
    make_renderer(templates, tmp_path / "cache").validate_template("newsletter")
    cached = no_compiling(make_renderer(templates, tmp_path / "cache"))
    broken = context()
    del broken["links"]["preferences_url"]
    with pytest.raises(TemplateRenderError) as info:
        cached.render("newsletter", broken)
    err = info.value
    assert (err.template, err.variable, err.customer_id) == (
        "components/footer.html.j2",
        "links.preferences_url",
        "C1",
    )
    footer = (templates / "components/footer.html.j2").read_text().splitlines()
    assert "links.preferences_url" in footer[err.lineno - 1]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("edit", "old", "new"),
    [
        ("components/footer.html.j2", "View in browser", "View online"),
        ("layouts/base.html.j2", "color: #047857", "color: #0a0b0c"),  # inlined CSS
        ("campaigns/newsletter.html.j2", "We hope you love it.", "Enjoy it."),
    ],
)
def test_editing_any_template_file_invalidates_the_entry(
    templates: Path, tmp_path: Path, edit: str, old: str, new: str
) -> None:
    cache = tmp_path / "cache"
    ctx = {**context(), "recent_purchase": {"name": "Jacket"}}
    assert old in make_renderer(templates, cache).render("newsletter", ctx).html
    entry = next(cache.glob("*.code"))
    path = templates / edit
    path.write_text(path.read_text().replace(old, new))

    fresh = make_renderer(templates, cache)
    html = fresh.render("newsletter", ctx).html
    assert new in html and old not in html
    assert fresh.disk_cache_stats == {"hits": 0, "misses": 1, "writes": 1, "write_errors": 0}
    assert list(cache.glob("*.code")) == [entry]  # replaced in place, not one file per version
    assert no_compiling(make_renderer(templates, cache)).render("newsletter", ctx).html == html


def test_compile_options_get_their_own_entry(templates: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with_media = make_renderer(templates, cache)
    without_media = make_renderer(templates, cache, keep_media_queries=False)
    html_with = with_media.render("newsletter", context()).html
    html_without = without_media.render("newsletter", context()).html
    assert "@media" in html_with and "@media" not in html_without
    assert len(list(cache.glob("*.code"))) == 2
    assert (
        no_compiling(make_renderer(templates, cache)).render("newsletter", context()).html
        == html_with
    )
    reloaded = no_compiling(make_renderer(templates, cache, keep_media_queries=False))
    assert reloaded.render("newsletter", context()).html == html_without


@pytest.mark.parametrize("damage", [b"", b"not marshal data", b"\xe3" + b"\x00" * 40])
def test_damaged_entry_is_recompiled_and_replaced(
    templates: Path, tmp_path: Path, damage: bytes
) -> None:
    cache = tmp_path / "cache"
    expected = make_renderer(templates, cache).render("newsletter", context()).html
    entry = next(cache.glob("*.code"))
    entry.write_bytes(damage)
    fresh = make_renderer(templates, cache)
    assert fresh.render("newsletter", context()).html == expected
    assert fresh.disk_cache_stats == {"hits": 0, "misses": 1, "writes": 1, "write_errors": 0}
    assert no_compiling(make_renderer(templates, cache)).render("newsletter", context()).html == (
        expected
    )


def test_unwritable_cache_dir_still_renders(templates: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file where the cache folder should be")
    renderer = make_renderer(templates, not_a_dir)
    assert isinstance(renderer.render("newsletter", context()), RenderedEmail)
    assert renderer.disk_cache_stats == {"hits": 0, "misses": 1, "writes": 0, "write_errors": 1}


def test_templates_that_fail_to_compile_are_not_cached(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    (templates / "campaigns").mkdir(parents=True)
    (templates / "campaigns/bad.html.j2").write_text(
        "{% block subject %}Hi{% endblock %}{% block preheader %}P{% endblock %}\n<p>{{ x </p>"
    )
    cache = tmp_path / "cache"
    for _ in range(2):
        with pytest.raises(TemplateRenderError, match="campaigns/bad.html.j2"):
            make_renderer(templates, cache).validate_template("bad")
    assert not cache.exists() or not list(cache.iterdir())


def _render_in_worker(args: tuple[str, str]) -> tuple[str, dict]:
    templates, cache = args
    renderer = make_renderer(Path(templates), Path(cache))
    html = "".join(renderer.render(name, context()).html for name in ("newsletter", "win_back"))
    return html, renderer.disk_cache_stats  # type: ignore[return-value]


def test_concurrent_processes_share_one_cache(templates: Path, tmp_path: Path) -> None:
    """Processes that start together all compile, write and rename; none reads a torn file."""
    cache = tmp_path / "cache"
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=spawn) as pool:
        results = list(pool.map(_render_in_worker, [(str(templates), str(cache))] * 8))
    expected = _render_in_worker((str(templates), str(tmp_path / "other-cache")))[0]
    assert all(html == expected for html, _ in results)
    assert all(stats["write_errors"] == 0 for _, stats in results)
    assert sum(stats["hits"] + stats["misses"] for _, stats in results) == 16
    assert len(list(cache.glob("*.code"))) == 2  # one entry per template
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temp files
    late = no_compiling(make_renderer(templates, cache))
    assert "".join(late.render(n, context()).html for n in ("newsletter", "win_back")) == expected
