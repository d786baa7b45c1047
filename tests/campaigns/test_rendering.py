"""Tests for the email renderer (real Jinja2, real css_inline, the shipped templates)."""

from __future__ import annotations

import copy
import html as html_lib
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from personalization_assets.defs.campaigns.rendering import (
    DEFAULT_TEMPLATES_DIR,
    EmailRenderer,
    RenderedEmail,
    RendererConfig,
    TemplateRenderError,
    normalize_template_source,
)

SHIPPED = (
    "newsletter",
    "product_bundle",
    "new_arrivals",
    "general_promotion",
    "cart_abandonment",
    "birthday",
    "win_back",
    "reengagement",
)
BRAND = {
    "name": "Northwind Outdoor",
    "address": "12 Fjord Street, Bergen",
    "logo_url": "https://cdn.northwind.example/logo.png",
    "website_url": "https://northwind.example",
}
TAG_RE = re.compile(r"<[A-Za-z/!?][^>]*>")


def make_context(**overrides: object) -> dict:
    context = {
        "recipient": {"customer_id": "C001", "first_name": "Ingrid", "email": "i@x.example"},
        "campaign": {
            "campaign_id": "weekly-24",
            "name": "Weekly",
            "variant": "A",
            "rule": "days_since_last_open <= 30",
        },
        "recommendations": [
            {
                "product_id": f"P{k}",
                "name": f"Trail boot {k}",
                "price": 120 + k,
                "currency": "EUR",
                "image_url": f"https://cdn.northwind.example/p/{k}.jpg",
                "url": f"https://northwind.example/p/{k}",
                "category": "Footwear",
            }
            for k in range(5)
        ],
        "recent_purchase": {"product_id": "P9", "name": "Fjord rain jacket"},
        "offer": {
            "title": "15% off footwear",
            "description": "Summer sale.",
            "code": "SUMMER15",
            "expires_at": "30 June",
            "url": "https://northwind.example/sale",
        },
        "links": {
            "unsubscribe_url": "https://northwind.example/u/tok123",
            "preferences_url": "https://northwind.example/prefs/tok123",
            "view_in_browser_url": "https://northwind.example/v/tok123",
        },
        "behavioral_allowed": True,
    }
    context.update(overrides)
    return context


@pytest.fixture(scope="module")
def renderer() -> EmailRenderer:
    return EmailRenderer(
        RendererConfig(
            DEFAULT_TEMPLATES_DIR,
            brand=BRAND,
            base_url="https://northwind.example",
            unsubscribe_mailto="unsubscribe@northwind.example",
        )
    )


MINI_BASE = """<!DOCTYPE html>
<html><head><title>{{ subject }}</title>
<style>.box { color: #ff0000; }</style></head>
<body>
<div data-text="skip">{{ preheader }}</div>
{% block content %}{% endblock %}
<p><a href="{{ links.unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""


def mini_renderer(tmp_path: Path, files: dict[str, str], **config: object) -> EmailRenderer:
    files = {"layouts/base.html.j2": MINI_BASE, **files}
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return EmailRenderer(RendererConfig(tmp_path, **config))


def mini_campaign(content: str, subject: str = "Hello", preheader: str = "Pre") -> str:
    return (
        '{% extends "layouts/base.html.j2" %}\n'
        f"{{% block subject %}}{subject}{{% endblock %}}\n"
        f"{{% block preheader %}}{preheader}{{% endblock %}}\n"
        f"{{% block content %}}\n{content}\n{{% endblock %}}\n"
    )


MINI_CONTEXT = {
    "recipient": {"customer_id": 7},
    "links": {"unsubscribe_url": "https://x.example/u"},
}


# ------------------------------------------------------------------------------------------
# Shipped templates
# ------------------------------------------------------------------------------------------


def test_ships_all_campaign_templates(renderer: EmailRenderer) -> None:
    assert set(SHIPPED) <= set(renderer.campaign_templates())


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("variant", ["full", "minimal", "variant_b"])
def test_every_campaign_template_renders(renderer: EmailRenderer, name: str, variant: str) -> None:
    renderer.validate_template(name)
    if variant == "full":
        context = make_context()
    elif variant == "minimal":  # no consent, nothing optional, no first name
        context = make_context(
            recipient={"customer_id": "C2", "email": "a@x.example"},
            recommendations=[],
            behavioral_allowed=False,
        )
        del context["offer"], context["recent_purchase"]
    else:
        context = make_context(campaign={"campaign_id": "c", "name": "n", "variant": "B"})
    email = renderer.render(name, context)

    assert isinstance(email, RenderedEmail)
    assert email.subject and "\n" not in email.subject
    assert email.preheader and "\n" not in email.preheader
    assert email.warnings == []
    assert email.html.startswith("<!DOCTYPE html>")
    assert 'style="' in email.html
    assert f"<title>{html_lib.escape(email.subject, quote=False)}</title>" in email.html
    for url in context["links"].values():
        assert f'href="{url}"' in email.html
        assert url in email.text
    assert not TAG_RE.search(email.text), TAG_RE.search(email.text)
    assert "{{" not in email.html and "{%" not in email.html and "{{" not in email.text
    assert "\ue000" not in email.html + email.text
    assert email.headers["List-Unsubscribe"] == (
        "<https://northwind.example/u/tok123>, <mailto:unsubscribe@northwind.example>"
    )


def _visible_text(markup: str) -> str:
    markup = re.sub(r"<(style|head)\b.*?</\1>", " ", markup, flags=re.S | re.I)
    return " ".join(html_lib.unescape(TAG_RE.sub(" ", markup)).split())


@pytest.mark.parametrize("name", SHIPPED)
def test_flattened_template_shows_what_plain_jinja_shows(
    renderer: EmailRenderer, name: str
) -> None:
    """Flattening extends/blocks/includes and inlining CSS must not change the content."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(DEFAULT_TEMPLATES_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
    )
    env.filters.update(renderer.environment.filters)
    env.globals.update(renderer.environment.globals)
    for context in (make_context(), make_context(recommendations=[], behavioral_allowed=False)):
        email = renderer.render(name, context)
        expected = env.get_template(renderer.resolve_name(name)).render(
            context, subject=email.subject, preheader=email.preheader
        )
        assert _visible_text(email.html) == _visible_text(expected)


# ------------------------------------------------------------------------------------------
# Escaping
# ------------------------------------------------------------------------------------------


def test_injection_attempts_are_escaped(renderer: EmailRenderer) -> None:
    context = make_context(
        recipient={
            "customer_id": "C3",
            "first_name": "<script>alert(1)</script>",
            "email": "x@x.example",
        },
        campaign={"campaign_id": "c", "name": "n", "variant": "B"},
    )
    context["recommendations"][0]["name"] = '"><img src=x onerror=alert(1)>'
    context["recommendations"][1]["category"] = "<b onmouseover=alert(2)>Shoes</b>"
    context["recent_purchase"] = {"name": "</strong><script>steal()</script>"}
    email = renderer.render("newsletter", context)

    assert "<script" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "<img src=x" not in email.html
    assert "onerror=alert(1)&gt;" in email.html  # escaped, inside text or a quoted attribute
    assert 'alt="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"' in email.html
    assert "<b onmouseover" not in email.html
    # the subject is a plain-text header; the <title> that shows it is escaped
    assert email.subject.startswith("<script>alert(1)</script>")
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    # no raw tags from values in the text part
    assert not TAG_RE.search(email.text)
    assert "<img" not in email.text and "<script" not in email.text
    assert "alert(1)" in email.text  # the text of the value survives, the tags do not


# ------------------------------------------------------------------------------------------
# Missing variables and defaults
# ------------------------------------------------------------------------------------------


def test_missing_variable_error_names_template_line_and_variable(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path,
        {
            "campaigns/greet.html.j2": mini_campaign(
                '<p class="box">Hi\n  {{ recipient.first_name }}</p>'
            )
        },
    )
    with pytest.raises(TemplateRenderError) as info:
        r.render("greet", MINI_CONTEXT)
    err = info.value
    assert (err.template, err.lineno, err.variable) == (
        "campaigns/greet.html.j2",
        6,
        "recipient.first_name",
    )
    assert "campaigns/greet.html.j2, line 6" in str(err)
    assert "recipient.first_name" in str(err)
    assert err.customer_id == 7


def test_missing_variable_in_an_included_component_points_at_the_component(
    renderer: EmailRenderer,
) -> None:
    context = make_context()
    del context["links"]["preferences_url"]
    with pytest.raises(TemplateRenderError) as info:
        renderer.render("newsletter", context)
    err = info.value
    assert err.template == "components/footer.html.j2"
    source = (DEFAULT_TEMPLATES_DIR / "components/footer.html.j2").read_text().splitlines()
    assert "links.preferences_url" in source[err.lineno - 1]
    assert err.variable == "links.preferences_url"


def test_missing_top_level_variable(tmp_path: Path) -> None:
    r = mini_renderer(tmp_path, {"campaigns/x.html.j2": mini_campaign("<p>{{ coupon }}</p>")})
    with pytest.raises(TemplateRenderError, match=r"line 5: undefined variable 'coupon'"):
        r.render("x", MINI_CONTEXT)


def test_declared_default_allows_missing_value(renderer: EmailRenderer, tmp_path: Path) -> None:
    context = make_context(recipient={"customer_id": "C4", "email": "a@x.example"})
    email = renderer.render("newsletter", context)
    assert "Hi there, here is your week" in email.html

    r = mini_renderer(
        tmp_path,
        {"campaigns/d.html.j2": mini_campaign("<p>{{ first_name | default('there') }}</p>")},
    )
    assert "<p>there</p>" in r.render("d", MINI_CONTEXT).html


# ------------------------------------------------------------------------------------------
# Subject and preheader
# ------------------------------------------------------------------------------------------


def test_crlf_in_subject_is_stripped_and_reported(renderer: EmailRenderer) -> None:
    context = make_context(
        recipient={"customer_id": "C5", "first_name": "Eve\r\nBcc: all@x.example", "email": "e@x"},
        campaign={"campaign_id": "c", "name": "n", "variant": "B"},
    )
    context["recommendations"][0]["name"] = "Boot\nX-Injected: yes"
    email = renderer.render("newsletter", context)
    assert "\r" not in email.subject and "\n" not in email.subject
    assert email.subject == "Eve Bcc: all@x.example, your weekly picks are in"
    assert "\n" not in email.preheader and "Boot X-Injected: yes" in email.preheader
    assert any(w.startswith("subject:") and "2 line-break" in w for w in email.warnings)
    assert any(w.startswith("preheader:") for w in email.warnings)
    assert "<title>Eve Bcc: all@x.example, your weekly picks are in</title>" in email.html


def test_empty_subject_is_rejected(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path,
        {"campaigns/e.html.j2": mini_campaign("<p>x</p>", subject="{{ recipient.name }}")},
    )
    context = {**MINI_CONTEXT, "recipient": {"customer_id": 1, "name": " \r\n "}}
    with pytest.raises(TemplateRenderError, match="subject is empty"):
        r.render("e", context)


def test_template_newlines_in_subject_are_not_warnings(tmp_path: Path) -> None:
    subject = "{% if x %}\n  A\n{% else %}\n  Hello\n  {{ recipient.customer_id }}\n{% endif %}"
    r = mini_renderer(tmp_path, {"campaigns/s.html.j2": mini_campaign("<p>x</p>", subject)})
    email = r.render("s", {**MINI_CONTEXT, "x": False})
    assert email.subject == "Hello 7"
    assert email.warnings == []


def test_template_without_subject_block_is_rejected(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path,
        {
            "campaigns/n.html.j2": (
                '{% extends "layouts/base.html.j2" %}{% block preheader %}p{% endblock %}'
            )
        },
    )
    with pytest.raises(TemplateRenderError, match=r"no \{% block subject %\}"):
        r.validate_template("n")


# ------------------------------------------------------------------------------------------
# Headers
# ------------------------------------------------------------------------------------------


def test_list_unsubscribe_headers(renderer: EmailRenderer) -> None:
    email = renderer.render("win_back", make_context())
    assert email.headers == {
        "List-Unsubscribe": (
            "<https://northwind.example/u/tok123>, <mailto:unsubscribe@northwind.example>"
        ),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }

    context = make_context()
    context["links"]["unsubscribe_mailto"] = "mailto:u+tok123@northwind.example?subject=stop"
    email = renderer.render("win_back", context)
    assert email.headers["List-Unsubscribe"] == (
        "<https://northwind.example/u/tok123>, <mailto:u+tok123@northwind.example?subject=stop>"
    )


def test_list_unsubscribe_without_https_has_no_one_click(tmp_path: Path) -> None:
    r = mini_renderer(tmp_path, {"campaigns/h.html.j2": mini_campaign("<p>x</p>")})
    context = {**MINI_CONTEXT, "links": {"unsubscribe_url": "http://x.example/u,1"}}
    email = r.render("h", context)
    assert email.headers == {"List-Unsubscribe": "<http://x.example/u%2C1>"}
    assert any("List-Unsubscribe-Post" in w for w in email.warnings)


def test_relative_unsubscribe_url_is_joined_to_base_url(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path, {"campaigns/h.html.j2": mini_campaign("<p>x</p>")}, base_url="https://s.example"
    )
    email = r.render("h", {**MINI_CONTEXT, "links": {"unsubscribe_url": "/u/abc"}})
    assert email.headers["List-Unsubscribe"] == "<https://s.example/u/abc>"


def test_bad_unsubscribe_url_fails_that_recipient(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path,
        {
            "campaigns/h.html.j2": "{% extends 'layouts/base.html.j2' %}"
            "{% block subject %}s{% endblock %}{% block preheader %}p{% endblock %}"
        },
    )
    bad = {**MINI_CONTEXT, "links": {"unsubscribe_url": "https://x.example/u>\r\nBcc: a"}}
    with pytest.raises(TemplateRenderError, match="List-Unsubscribe"):
        r.render("h", bad)


# ------------------------------------------------------------------------------------------
# CSS inlining
# ------------------------------------------------------------------------------------------


def test_styles_are_inlined(renderer: EmailRenderer) -> None:
    email = renderer.render("newsletter", make_context())
    hero = re.search(r'<h1 class="hero-title" style="([^"]+)">', email.html)
    assert hero and "font-size: 28px" in hero.group(1)
    price = re.search(r'<div class="product-price" style="([^"]+)">', email.html)
    assert price and "color: #047857" in price.group(1)
    # only @media rules are left in <style>: the core layout does not need it
    styles = re.findall(r"<style>(.*?)</style>", email.html, re.S)
    assert styles and all(s.strip().startswith("@media") for s in styles)
    assert ".hero-title" not in "".join(styles)


def test_styles_inlined_without_any_style_element(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path,
        {"campaigns/c.html.j2": mini_campaign('<p class="box">{{ recipient.customer_id }}</p>')},
        keep_media_queries=False,
    )
    email = r.render("c", MINI_CONTEXT)
    assert "<style" not in email.html
    assert '<p class="box" style="color: #ff0000;">7</p>' in email.html


def test_css_inlining_happens_once_per_template(renderer: EmailRenderer, monkeypatch) -> None:
    import css_inline

    calls = []
    original = css_inline.CSSInliner.inline
    fresh = EmailRenderer(renderer.config)

    class Spy:
        def inline(self, html: str) -> str:
            calls.append(1)
            return original(renderer._inliner, html)

    monkeypatch.setattr(fresh, "_inliner", Spy())
    results = fresh.render_many("newsletter", [make_context() for _ in range(20)])
    assert all(isinstance(r, RenderedEmail) for r in results)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------
# Content blocks
# ------------------------------------------------------------------------------------------


def test_fallback_block_when_no_recommendations(renderer: EmailRenderer) -> None:
    email = renderer.render("newsletter", make_context(recommendations=[]))
    assert "Explore our bestsellers" in email.html
    assert 'class="products"' not in email.html
    assert not re.search(r"<table[^>]*>\s*<tbody>\s*</tbody>\s*</table>", email.html)
    assert "Explore our bestsellers" in email.text
    assert "Browse the shop (https://northwind.example)" in email.text

    full = renderer.render("newsletter", make_context())
    assert "Explore our bestsellers" not in full.html
    assert full.html.count('class="product-name"') == 5


def test_behavioral_content_only_with_consent(renderer: EmailRenderer) -> None:
    allowed = renderer.render("newsletter", make_context(behavioral_allowed=True))
    denied = renderer.render("newsletter", make_context(behavioral_allowed=False))
    assert "recent browsing" in allowed.html and "recent browsing" in allowed.text
    assert "recent browsing" not in denied.html and "recent browsing" not in denied.text
    assert "Popular this week" in denied.html

    cart_yes = renderer.render("cart_abandonment", make_context(behavioral_allowed=True))
    cart_no = renderer.render("cart_abandonment", make_context(behavioral_allowed=False))
    assert "cart" in cart_yes.subject
    assert "cart" not in cart_no.subject.lower()
    assert "cart" not in cart_no.html.lower() and "cart" not in cart_no.text.lower()

    # behavioural content is off unless the context says otherwise
    context = make_context()
    del context["behavioral_allowed"]
    assert "recent browsing" not in renderer.render("newsletter", context).html


def test_recent_purchase_block_only_when_present(renderer: EmailRenderer) -> None:
    with_purchase = renderer.render("newsletter", make_context())
    context = make_context()
    del context["recent_purchase"]
    without = renderer.render("newsletter", context)
    assert "Fjord rain jacket" in with_purchase.html
    assert "recent order" not in without.html


def test_offer_block_only_when_present(renderer: EmailRenderer) -> None:
    assert "SUMMER15" in renderer.render("newsletter", make_context()).html
    assert "SUMMER15" not in renderer.render("newsletter", make_context(offer=None)).html


def test_brand_from_config_and_partial_override(renderer: EmailRenderer) -> None:
    email = renderer.render("newsletter", make_context(brand={"name": "Southwind"}))
    assert "Southwind" in email.subject
    assert "12 Fjord Street, Bergen" in email.html  # address still from the config


def test_relative_and_unsafe_urls(tmp_path: Path) -> None:
    content = '<a href="{{ a | abs_url }}">a</a> <a href="{{ b | abs_url }}">b</a>'
    r = mini_renderer(
        tmp_path,
        {"campaigns/u.html.j2": mini_campaign(content)},
        base_url="https://s.example/shop/",
    )
    email = r.render("u", {**MINI_CONTEXT, "a": "/p/1?x=1&y=2", "b": "javascript:alert(1)"})
    assert 'href="https://s.example/p/1?x=1&amp;y=2"' in email.html
    assert 'href="#"' in email.html
    assert "a (https://s.example/p/1?x=1&y=2)" in email.text


def test_money_filter(tmp_path: Path) -> None:
    content = (
        "<p>{{ 1299.5 | money('EUR') }}|{{ 5 | money('chf') }}|{{ '7.25' | money('USD') }}</p>"
    )
    r = mini_renderer(tmp_path, {"campaigns/m.html.j2": mini_campaign(content)})
    assert "<p>€1,299.50|5.00 CHF|$7.25</p>" in r.render("m", MINI_CONTEXT).html


# ------------------------------------------------------------------------------------------
# Plain text
# ------------------------------------------------------------------------------------------


def test_text_part_has_links_and_no_tags(renderer: EmailRenderer) -> None:
    email = renderer.render("newsletter", make_context())
    text = email.text
    assert not TAG_RE.search(text)
    assert "View in browser (https://northwind.example/v/tok123)" in text
    assert "Email preferences (https://northwind.example/prefs/tok123)" in text
    assert "Unsubscribe (https://northwind.example/u/tok123)" in text
    assert "Trail boot 0 (https://northwind.example/p/0)" in text
    assert "€120.00" in text
    assert "SUMMER15" in text
    assert email.preheader not in text  # the hidden preheader div is left out
    assert "cdn.northwind.example" not in text  # images are left out
    assert "\n\n\n" not in text and text == text.strip()
    assert "&middot;" not in text and "·" in text  # entities decoded


def test_explicit_text_block_replaces_derived_text(tmp_path: Path) -> None:
    source = mini_campaign("<p>html only</p>") + (
        "{% block text %}Plain {{ name }}: {{ links.unsubscribe_url }}{% endblock %}"
    )
    r = mini_renderer(tmp_path, {"campaigns/t.html.j2": source})
    email = r.render("t", {**MINI_CONTEXT, "name": "<b>Bo</b>"})
    assert email.text == "Plain Bo: https://x.example/u"
    assert "html only" in email.html


# ------------------------------------------------------------------------------------------
# Batches and errors as values
# ------------------------------------------------------------------------------------------


def test_render_many_isolates_a_failing_recipient(renderer: EmailRenderer) -> None:
    bad = make_context(recipient={"customer_id": "BAD", "first_name": "X", "email": "x@x"})
    del bad["recommendations"][2]["price"]
    contexts = [make_context(), bad, make_context(recommendations=[])]
    results = renderer.render_many("newsletter", contexts)
    assert [type(r) for r in results] == [RenderedEmail, TemplateRenderError, RenderedEmail]
    err = results[1]
    assert isinstance(err, TemplateRenderError)
    assert err.customer_id == "BAD" and "BAD" in str(err)
    assert err.template == "components/recommendations.html.j2"
    assert err.variable == "product.price"


def test_render_many_with_broken_template_returns_the_error_for_everyone(tmp_path: Path) -> None:
    r = mini_renderer(tmp_path, {"campaigns/b.html.j2": mini_campaign("<p>{% if %}</p>")})
    results = r.render_many("b", [MINI_CONTEXT, MINI_CONTEXT])
    assert len(results) == 2 and all(isinstance(x, TemplateRenderError) for x in results)


def test_syntax_error_reports_template_and_line(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path,
        {
            "campaigns/s.html.j2": mini_campaign('{% include "components/broken.html.j2" %}'),
            "components/broken.html.j2": "<p>\nok\n{{ recipient.name | }}\n</p>\n",
        },
    )
    with pytest.raises(TemplateRenderError) as info:
        r.validate_template("s")
    err = info.value
    assert (err.template, err.lineno) == ("components/broken.html.j2", 3)
    assert str(err).startswith("components/broken.html.j2, line 3: syntax error")


def test_missing_include_is_reported_where_it_is_included(tmp_path: Path) -> None:
    r = mini_renderer(tmp_path, {"campaigns/i.html.j2": mini_campaign('{% include "nope.j2" %}')})
    with pytest.raises(
        TemplateRenderError, match=r"campaigns/i.html.j2, line 5: template not found"
    ):
        r.validate_template("i")


def test_jinja_inside_an_html_tag_is_rejected(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path, {"campaigns/t.html.j2": mini_campaign('<td {% if x %}class="a"{% endif %}>')}
    )
    with pytest.raises(TemplateRenderError, match=r"line 5: Jinja tags inside an HTML tag"):
        r.validate_template("t")


def test_jinja_inside_style_is_rejected(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path, {"campaigns/t.html.j2": mini_campaign("<style>p { color: {{ c }}; }</style>")}
    )
    with pytest.raises(TemplateRenderError, match="inside <style>"):
        r.validate_template("t")


def test_sandbox_blocks_unsafe_attributes(tmp_path: Path) -> None:
    content = "<p>{{ recipient.__class__.__mro__ }}</p>"
    r = mini_renderer(tmp_path, {"campaigns/x.html.j2": mini_campaign(content)})
    with pytest.raises(TemplateRenderError, match="unsafe"):
        r.render("x", MINI_CONTEXT)


def test_error_survives_pickling() -> None:
    err = TemplateRenderError("boom", template="a.j2", lineno=3, variable="v", customer_id=1)
    copy_ = pickle.loads(pickle.dumps(err))
    assert str(copy_) == str(err) == "a.j2, line 3: boom (recipient 1)"
    assert copy_.variable == "v"


# ------------------------------------------------------------------------------------------
# Template features
# ------------------------------------------------------------------------------------------


def test_smart_quotes_inside_tags_are_normalised(tmp_path: Path) -> None:
    source = mini_campaign(
        "<p>“Quoted” text stays. {{ recipient.first_name | default(“there”) }}</p>\n"
        "<p>{% if recipient.customer_id == 7 %}{{ ‘It’s’ ~ ' it’s' }}{% endif %}</p>",
        subject="Hi {{ recipient.nick | default(‘friend’) }}",
    )
    r = mini_renderer(tmp_path, {"campaigns/q.html.j2": source})
    email = r.render("q", MINI_CONTEXT)
    assert email.subject == "Hi friend"
    assert "<p>“Quoted” text stays. there</p>" in email.html
    assert "<p>It’s it’s</p>" in email.html


def test_normalize_template_source() -> None:
    source = "“a” {{ “x” ~ ‘y’ ~ 'it’s' ~ \u00a0z\u200b }} {% if a == ‘b’ %}“c”{% endif %}"
    assert normalize_template_source(source) == (
        "“a” {{ \"x\" ~ 'y' ~ 'it’s' ~  z }} {% if a == 'b' %}“c”{% endif %}"
    )
    assert normalize_template_source("plain {{ x }}") == "plain {{ x }}"


def test_super_blocks_and_top_level_sets(tmp_path: Path) -> None:
    files = {
        "layouts/mid.html.j2": (
            '{% extends "layouts/base.html.j2" %}\n'
            '{% set greeting = "Hello" %}\n'
            "{% block content %}<p>mid {{ greeting }}</p>{% endblock %}\n"
        ),
        "campaigns/c.html.j2": (
            '{% extends "layouts/mid.html.j2" %}\n'
            '{% set greeting = "Hej" %}\n'
            "{% block subject %}{{ greeting }} sub{% endblock %}\n"
            "{% block preheader %}pre{% endblock %}\n"
            "{% block content %}<p>child</p>{{ super() }}{{ superb }}{% endblock %}\n"
        ),
    }
    r = mini_renderer(tmp_path, files)
    email = r.render("c", {**MINI_CONTEXT, "superb": "!"})
    # Jinja semantics: the child's top-level set runs first, the parent's runs after it
    plain = ImmutableSandboxedEnvironment(loader=FileSystemLoader(str(tmp_path)), autoescape=True)
    expected = plain.get_template("campaigns/c.html.j2").render(
        MINI_CONTEXT, subject="x", preheader="y", superb="!"
    )
    assert "<p>child</p><p>mid Hello</p>!" in expected
    assert "<p>child</p><p>mid Hello</p>!" in email.html
    assert email.subject == "Hello sub"


def test_loops_inside_tables_survive_css_inlining(tmp_path: Path) -> None:
    content = (
        '<table class="box"><tbody>{% for row in rows %}<tr><td>{{ row }}</td></tr>'
        "{% else %}<tr><td>none</td></tr>{% endfor %}</tbody></table>"
    )
    r = mini_renderer(tmp_path, {"campaigns/t.html.j2": mini_campaign(content)})
    email = r.render("t", {**MINI_CONTEXT, "rows": ["a", "b"]})
    assert (
        '<table class="box" style="color: #ff0000;"><tbody><tr><td>a</td></tr><tr><td>b</td></tr>'
        "</tbody></table>"
    ) in email.html
    assert "a\n\nb" in email.text
    assert "none" in r.render("t", {**MINI_CONTEXT, "rows": []}).html


def test_auto_reload_picks_up_changes(tmp_path: Path) -> None:
    r = mini_renderer(
        tmp_path, {"campaigns/r.html.j2": mini_campaign("<p>one</p>")}, auto_reload=True
    )
    assert "<p>one</p>" in r.render("r", MINI_CONTEXT).html
    path = tmp_path / "campaigns/r.html.j2"
    path.write_text(mini_campaign("<p>two</p>"))
    import os

    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    assert "<p>two</p>" in r.render("r", MINI_CONTEXT).html


def test_context_is_not_mutated(renderer: EmailRenderer) -> None:
    context = make_context(brand={"name": "Southwind"})
    before = copy.deepcopy(context)
    renderer.render("birthday", context)
    assert context == before


def test_loop_separators_in_text(tmp_path: Path) -> None:
    content = (
        "<p>Tags: {% for t in tags %}<span>{{ t }}</span> {% endfor %}end</p>\n"
        "<div>{% for t in tags %}{{ t }}<br>{% endfor %}</div>\n"
        "<h2>Rows</h2>{% for t in tags %}<p>{{ t }}</p>{% endfor %}<p>after</p>"
    )
    r = mini_renderer(tmp_path, {"campaigns/l.html.j2": mini_campaign(content)})
    text = r.render("l", {**MINI_CONTEXT, "tags": ["a", "b"]}).text
    assert text.startswith("Tags: a b end\n\na\nb\n\nRows\n\na\n\nb\n\nafter\n\n")


# ------------------------------------------------------------------------------------------
# Speed-ups in the compiled code must not change any output
# ------------------------------------------------------------------------------------------


def _contexts_for_fast_path_checks() -> list[dict]:
    unicode_ctx = make_context(
        recipient={"customer_id": "C8", "first_name": "Zoë 東京", "email": "z@x.example"}
    )
    unicode_ctx["recommendations"][0]["name"] = "Café <b>Zürich</b> & “Co”"
    unicode_ctx["recommendations"][1]["price"] = 1299  # an int, not a float
    unicode_ctx["recommendations"][2]["currency"] = "CHF"
    objects_ctx = make_context(links=OrderedDict(make_context()["links"]))  # not a plain dict
    objects_ctx["recommendations"] = [
        SimpleNamespace(**p) for p in make_context()["recommendations"]
    ]
    relative = make_context()
    relative["recommendations"][0]["url"] = "/p/relative?a=1&b=2"
    relative["recommendations"][1]["url"] = "javascript:alert(1)"
    untidy = make_context(offer={"title": "  ", "description": "two\nlines\n\n\n", "url": "/o"})
    untidy["recommendations"][0]["name"] = " padded\t"
    untidy["recommendations"][1]["name"] = ""
    untidy["recommendations"][2]["category"] = "\n"
    untidy["recent_purchase"] = {"name": "<b></b>"}
    return [
        make_context(),
        make_context(recommendations=[], behavioral_allowed=False, offer=None),
        make_context(
            campaign={"campaign_id": "c", "name": "n", "variant": "B"}, brand={"name": "S"}
        ),
        make_context(offer={"title": "T", "description": "D", "cta_label": "Go", "url": "/o"}),
        make_context(recent_purchase={"name": "Tent", "url": "/p/9"}, recipient={"customer_id": 3}),
        unicode_ctx,
        objects_ctx,
        relative,
        untidy,
    ]


@pytest.mark.parametrize("name", SHIPPED)
def test_fast_paths_render_what_jinjas_own_code_renders(
    renderer: EmailRenderer, name: str, monkeypatch
) -> None:
    """Rewritten template code (inlined lookups, escaping and filters, HTML and text written
    in one pass) renders exactly what Jinja's own code for the two-pass template renders."""
    import personalization_assets.defs.campaigns.rendering as rendering

    monkeypatch.setattr(rendering, "SINGLE_PASS_TEXT", False)
    monkeypatch.setattr(
        rendering, "_fast_code", lambda source, filename, *_: compile(source, filename, "exec")
    )
    stock = EmailRenderer(renderer.config)
    stock.validate_template(name)
    monkeypatch.undo()
    one_pass = renderer._compiled(renderer.resolve_name(name)).template.root_render_func
    assert "_email_tb" in one_pass.__code__.co_varnames  # the shipped templates use one pass
    contexts = _contexts_for_fast_path_checks()
    broken = make_context()
    del broken["recommendations"][3]["price"]
    contexts.append(broken)
    fast_results = renderer.render_many(name, contexts)
    stock_results = stock.render_many(name, contexts)
    assert isinstance(stock_results[0], RenderedEmail) and isinstance(stock_results[-1], Exception)
    for fast, slow in zip(fast_results, stock_results, strict=True):
        if isinstance(slow, TemplateRenderError):
            assert isinstance(fast, TemplateRenderError) and str(fast) == str(slow)
            assert (fast.template, fast.lineno, fast.variable) == (
                slow.template,
                slow.lineno,
                slow.variable,
            )
        else:
            assert isinstance(fast, RenderedEmail)
            assert (fast.subject, fast.preheader, fast.text, fast.headers, fast.warnings) == (
                slow.subject,
                slow.preheader,
                slow.text,
                slow.headers,
                slow.warnings,
            )
            assert fast.html == slow.html


def test_html_is_ascii_with_character_references(renderer: EmailRenderer) -> None:
    context = make_context()
    context["recommendations"][0]["name"] = "Café Zürich 東京"
    email = renderer.render("newsletter", context)
    assert max(map(ord, email.html)) < 0x100  # one byte per character (the static "·" is)
    assert "Caf&#233; Z&#252;rich &#26481;&#20140;" in email.html
    assert "&#8364;120.00" in email.html  # the price, €120.00
    assert "Café Zürich 東京" in email.text and "€120.00" in email.text  # text stays as is
    assert "Café Zürich 東京" in html_lib.unescape(email.html)


def test_dict_keys_missing_keys_and_dict_methods(tmp_path: Path) -> None:
    content = (
        "<p>{{ d.a }}|{{ d.gone | default('dflt') }}|{{ d.items() | list | length }}|"
        "{{ d.keys | default('no') }}|{{ d.blank | default('b', true) }}</p>"
    )
    r = mini_renderer(tmp_path, {"campaigns/d.html.j2": mini_campaign(content)})
    email = r.render("d", {**MINI_CONTEXT, "d": {"a": "A", "keys": "K", "blank": ""}})
    assert "<p>A|dflt|3|K|b</p>" in email.html  # a key shadows the dict method of that name
    with pytest.raises(TemplateRenderError, match="undefined variable 'd.gone'"):
        r2 = mini_renderer(tmp_path, {"campaigns/e.html.j2": mini_campaign("<p>{{ d.gone }}</p>")})
        r2.render("e", {**MINI_CONTEXT, "d": {"a": 1}})


def test_text_part_keeps_autoescape_off_for_filters_that_read_it(tmp_path: Path) -> None:
    """``xmlattr`` returns Markup (which the text part unescapes) only if autoescape is on."""
    source = mini_campaign("<p>x</p>") + "{% block text %}[{{ attrs | xmlattr }}]{% endblock %}"
    r = mini_renderer(tmp_path, {"campaigns/j.html.j2": source})
    text = r.render("j", {**MINI_CONTEXT, "attrs": {"k": "a  <b>"}}).text
    assert text == '[ k="a  &lt;b&gt;"]'


SINGLE_PASS_LAYOUT = """<!DOCTYPE html>
<html><head><title>{{ subject }}</title></head><body>
<h1>{{ title }}</h1>
{% if intro %}<p>{{ intro }}</p>{% endif %}
<ul>{% for item in items %}<li>{{ item.name }} <a href="{{ item.url }}">{{ item.label }}</a>
{% if item.note | default(none) %}<br>{{ item.note }}{% endif %}</li>{% endfor %}</ul>
<table><tbody>{% for row in rows %}<tr><td>{{ row }}</td></tr>{% else %}<tr><td>none</td></tr>
{% endfor %}</tbody></table>
<p><a href="{{ links.unsubscribe_url }}">{% if short %}Stop{% else %}Unsubscribe here{% endif %}</a>
{% set tail = title ~ "!" %}{{ tail }}</p>
{% block subject %}{% endblock %}{% block preheader %}{% endblock %}
</body></html>
"""


@pytest.mark.parametrize(
    "context",
    [
        {
            "title": "T",
            "intro": "I",
            "items": [{"name": "a", "url": "/a", "label": "A", "note": "n"}],
        },
        {"title": "T", "intro": "", "items": [], "rows": []},
        {"title": " T ", "intro": " ", "items": [{"name": "", "url": "", "label": "", "note": ""}]},
        {"title": "x\n\n\ny", "items": [{"name": "a ", "url": "/a", "label": " b", "note": "\t"}]},
        {"title": "T", "items": [{"name": "a", "url": "/a", "label": "A"}] * 3, "rows": [1, ""]},
    ],
)
def test_single_pass_text_matches_two_passes(tmp_path: Path, monkeypatch, context: dict) -> None:
    """Writing the text part in the HTML's pass (and skipping its clean-up when every value
    is clean) gives the text of a separate second pass: loops, empty loops, list items, links
    with conditional labels, untidy values."""
    import personalization_assets.defs.campaigns.rendering as rendering

    source = (
        '{% extends "layouts/sp.html.j2" %}{% block subject %}S{% endblock %}'
        "{% block preheader %}P{% endblock %}"
    )
    files = {"layouts/sp.html.j2": SINGLE_PASS_LAYOUT, "campaigns/sp.html.j2": source}
    context = {"intro": None, "rows": ["r"], "short": False, **MINI_CONTEXT, **context}
    for key in ("items",):
        context.setdefault(key, [])
    one_pass = mini_renderer(tmp_path / "one", files)
    monkeypatch.setattr(rendering, "SINGLE_PASS_TEXT", False)
    two_pass = mini_renderer(tmp_path / "two", files)
    two_pass.validate_template("sp")
    monkeypatch.undo()
    code = one_pass._compiled("campaigns/sp.html.j2").template.root_render_func.__code__
    assert "_email_tb" in code.co_varnames
    for short in (False, True):
        a = one_pass.render("sp", {**context, "short": short})
        b = two_pass.render("sp", {**context, "short": short})
        assert (a.text, a.html, a.subject) == (b.text, b.html, b.subject)


def test_calls_inside_loops_still_see_loop_variables(tmp_path: Path) -> None:
    content = (
        "<p>{% for x in xs %}{% set y = x * 2 %}{{ range(y) | list | length }};{% endfor %}</p>"
    )
    r = mini_renderer(tmp_path, {"campaigns/l.html.j2": mini_campaign(content)})
    email = r.render("l", {**MINI_CONTEXT, "xs": [0, 1, 2]})
    assert "<p>0;2;4;</p>" in email.html and "0;2;4;" in email.text


def test_lifecycle_fields_drive_template_content(renderer: EmailRenderer) -> None:
    high = {"churn_risk_band": "High", "historic_clv": 812.5, "expected_days_to_next_order": 40}
    low = {**high, "churn_risk_band": "Low"}
    perk = "this one is on us"
    assert perk in renderer.render("win_back", make_context(lifecycle=high)).text
    assert perk not in renderer.render("win_back", make_context(lifecycle=low)).text
    assert perk not in renderer.render("win_back", make_context()).text  # no lifecycle row


def _pipeline_contexts(template: str, count: int) -> list[dict]:
    """Contexts as ``payloads.build_context`` makes them from ``load_send_rows``-shaped rows,
    varied: accents and markup in names, prices in several currencies, 0-7 products, cart
    items, missing first names, both variants."""
    from personalization_assets.defs.campaigns.payloads import build_context

    names = ["Trail boot", "Café <b>Zürich</b> & “Co”", "Fjällräven pack", " padded ", "Tent"]
    contexts = []
    for i in range(count):
        products = [
            {
                "product_id": f"P{(i * 7 + k * 131) % 997:04d}",
                "name": f"{names[(i + k) % len(names)]} {k}",
                "price": [129.0, 89.5, 1299, 0.99, -5.0][(i + k) % 5] + i % 3,
                "currency": ["EUR", "USD", "CHF", "GBP", None][(i + k) % 5],
                "category": ["Footwear", "Tents", "Jackets"][(i + k) % 3],
            }
            for k in range(i % 8)
        ]
        row = {
            "idempotency_key": f"{i:08x}c0ffee",
            "campaign_id": "weekly-2024-06",
            "customer_id": f"C{i:06d}",
            "variant": "AB"[i % 2],
            "rule": "days_since_last_open <= 30",
            "template": template,
            "email": f"c{i}@x.example",
            "first_name": ["", "Ingrid", "Zoë 東京", "O'Brien <x>"][i % 4],
            "behavioral_allowed": bool(i % 3),
            "recommendations": products,
            "cart_product": (
                {
                    "product_id": "P0042",
                    "name": "Fjord rain jacket",
                    "price": 199.0,
                    "currency": "EUR",
                    "category": "Jackets",
                }
                if i % 5 == 0
                else None
            ),
            "recent_purchase": {"product_id": "P7", "name": "Rain hat"} if i % 4 else None,
            "lifecycle": {"churn_risk_band": ["High", "Low"][i % 2], "historic_clv": 10.5 * i},
        }
        contexts.append(
            build_context(
                row, base_url="https://northwind.example", campaign_names={"weekly-2024-06": "W"}
            )
        )
    return contexts


@pytest.mark.parametrize("name", ["newsletter", "cart_abandonment", "win_back"])
def test_pipeline_payloads_match_jinjas_own_code_byte_for_byte(
    renderer: EmailRenderer, name: str, monkeypatch
) -> None:
    """Golden check of the optimised renderer: 200 recipients shaped like the pipeline's
    render to exactly what the unoptimised path (Jinja's own generated code, text rendered as
    a second pass) renders for them."""
    import personalization_assets.defs.campaigns.rendering as rendering

    monkeypatch.setattr(rendering, "SINGLE_PASS_TEXT", False)
    monkeypatch.setattr(
        rendering, "_fast_code", lambda source, filename, *_: compile(source, filename, "exec")
    )
    stock = EmailRenderer(renderer.config)
    stock.validate_template(name)
    monkeypatch.undo()
    contexts = _pipeline_contexts(name, 200)
    fast = renderer.render_many(name, contexts)
    slow = stock.render_many(name, copy.deepcopy(contexts))
    assert sum(isinstance(email, RenderedEmail) for email in fast) == len(contexts)
    for a, b in zip(fast, slow, strict=True):
        assert (a.subject, a.preheader, a.html, a.text, a.headers, a.warnings) == (
            b.subject,
            b.preheader,
            b.html,
            b.text,
            b.headers,
            b.warnings,
        )


def test_values_used_twice_are_looked_up_once(tmp_path: Path) -> None:
    """``p.name`` in ``alt=""``, in the link text and in the text part is read once per
    product; a name set again between statements is read again (and shows the new value)."""
    content = (
        '{% for p in items %}<p><img alt="{{ p.name }}" src="x.png">'
        '<a href="{{ p.url }}">{{ p.name }}</a></p>'
        "{% set p = {'name': 'changed &'} %}<p>{{ p.name }}</p>{% endfor %}"
    )
    r = mini_renderer(tmp_path, {"campaigns/s.html.j2": mini_campaign(content)})
    reads: list[str] = []

    class Product:
        def __init__(self, name: str) -> None:
            self._name = name
            self.url = "https://x.example/p"

        @property
        def name(self) -> str:
            reads.append(self._name)
            return self._name

    email = r.render("s", {**MINI_CONTEXT, "items": [Product("A & B"), Product("<i>C</i>")]})
    assert reads == ["A & B", "<i>C</i>"]
    assert (
        '<p><img alt="A &amp; B" src="x.png"><a href="https://x.example/p">A &amp; B</a></p>'
        "<p>changed &amp;</p>" in email.html
    )
    assert email.html.count("&lt;i&gt;C&lt;/i&gt;") == 2 and email.html.count("changed &amp;") == 2
    assert "A & B (https://x.example/p)" in email.text and email.text.count("changed &") == 2


def test_names_set_in_the_template_shadow_context_and_globals(tmp_path: Path) -> None:
    """A ``{% set %}`` shadows the context and the renderer's globals for the includes after
    it, as in plain Jinja (the compiled code looks names up in the context only when the
    template never sets them)."""
    files = {
        "components/show.html.j2": "<p>{{ offer.title }} / {{ base_url }} / {{ brand.name }}</p>",
        "campaigns/i.html.j2": mini_campaign(
            '{% include "components/show.html.j2" %}'
            "{% set offer = {'title': 'Set here'} %}{% set base_url = 'https://set.example' %}"
            '{% include "components/show.html.j2" %}'
        ),
    }
    r = mini_renderer(tmp_path, files, base_url="https://x.example", brand={"name": "B"})
    context = {**MINI_CONTEXT, "offer": {"title": "From context"}}
    html = r.render("i", context).html
    expected = (
        "<p>From context / https://x.example / B</p><p>Set here / https://set.example / B</p>"
    )
    plain = ImmutableSandboxedEnvironment(loader=FileSystemLoader(str(tmp_path)), autoescape=True)
    plain_html = plain.get_template("campaigns/i.html.j2").render(
        context, subject="x", preheader="y", base_url="https://x.example", brand={"name": "B"}
    )
    assert expected in plain_html and expected in html


def test_macro_sees_names_set_before_it_is_called(tmp_path: Path) -> None:
    """A macro looks names up when it is called: a top-level ``{% set %}`` made before the call
    shadows the context's value, as in plain Jinja (the compiled code skips the template's own
    variables only for names it never sets)."""
    content = (
        "{% macro show() %}<i>{{ tag }}</i>{% endmacro %}"
        "{% set tag = 'set in template' %}<p>{{ show() }}</p>"
    )
    files = {"campaigns/m.html.j2": mini_campaign(content)}
    r = mini_renderer(tmp_path, files)
    context = {**MINI_CONTEXT, "tag": "from context"}
    plain = ImmutableSandboxedEnvironment(loader=FileSystemLoader(str(tmp_path)), autoescape=True)
    plain_html = plain.get_template("campaigns/m.html.j2").render(
        context, subject="x", preheader="y"
    )
    assert "<p><i>set in template</i></p>" in plain_html
    assert "<p><i>set in template</i></p>" in r.render("m", context).html
