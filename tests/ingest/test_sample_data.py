"""Tests for the landing-zone sample data generator (real files in tmp dirs, small scales)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from personalization_assets.defs.ingest.assets import ASSIGNMENT_COLUMNS as LOADED_COLUMNS
from personalization_assets.defs.ingest.sample_data import (
    ASSIGNMENT_COLUMNS,
    ASSIGNMENT_INJECTIONS,
    ASSIGNMENTS_FILE,
    CATEGORY_NAMES,
    CITIES,
    CUSTOMER_COLUMNS,
    CUSTOMER_INJECTIONS,
    EVENT_INJECTIONS,
    EVENT_KEYS,
    EVENT_TYPES,
    GROUND_TRUTH_WINDOW_DAYS,
    MANIFEST_NAME,
    PRODUCT_COLUMNS,
    ArmEffect,
    ResponseModel,
    SampleManifest,
    generate_sample_data,
    latent_customer_traits,
    main,
)

SMALL = {"customers": 300, "products": 60, "days": 20, "seed": 7}
TINY = {"customers": 50, "products": 10, "days": 7, "seed": 3, "files_per_day": 3}
SIGNAL = {"customers": 3000, "products": 300, "days": 90, "seed": 11, "bad_fraction": 0.0}
SEGMENTS = {"customers": 2000, "products": 200, "days": 120, "seed": 42}
URBAN_CITIES = Path(__file__).resolve().parents[2] / "dbt_project/seeds/urban_cities.csv"
WEB_TYPES = {"page_view", "product_view", "add_to_cart", "checkout", "purchase"}
EMAIL_TYPES = {"email_send", "email_open", "email_click", "unsubscribe"}
PRODUCT_TYPES = {"product_view", "add_to_cart", "purchase"}
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


# --- helpers -------------------------------------------------------------------------------------


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _event_lines(root: Path) -> list[tuple[str, int, str]]:
    """(relative file, 1-based line, text) for every non-empty event line, in file order."""
    out = []
    for path in sorted(root.glob("events/date=*/*.ndjson")):
        rel = path.relative_to(root).as_posix()
        for number, text in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
            if text.strip():
                out.append((rel, number, text))
    return out


def _event_ids(root: Path) -> set[str]:
    """Event ids of all lines that parse as JSON."""
    ids = set()
    for _, _, text in _event_lines(root):
        try:
            ids.add(json.loads(text)["event_id"])
        except json.JSONDecodeError:
            continue
    return ids - {None, ""}


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _planted(manifest: SampleManifest, source: str) -> dict[tuple[str, int], dict]:
    return {(e["file"], e["line"]): e for e in manifest.injected if e["source"] == source}


def _catalog(root: Path) -> dict[str, dict[str, str]]:
    header, rows = _csv_rows(root / "catalog/products.csv")
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows}


def _folder_day(file: str) -> date:
    return date.fromisoformat(re.search(r"date=(\d{4}-\d{2}-\d{2})", file).group(1))


def _classify(text: str, file: str, products: dict, seen: set[str]) -> tuple[str, str | None]:
    """An independent, simple re-implementation of the warehouse rules for one line."""
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return "quarantined", "invalid_json"
    clean = {k: v.strip().lower() if isinstance(v, str) else v for k, v in event.items()}
    if not clean.get("event_id"):
        return "quarantined", "missing_event_id"
    if not clean.get("user_id"):
        return "quarantined", "missing_user_id"
    if clean.get("event_type") not in EVENT_TYPES:
        return "quarantined", "unknown_event_type"
    try:
        moment = datetime.fromisoformat(event["timestamp"])
    except (TypeError, ValueError):
        return "quarantined", "invalid_timestamp"
    folder_start = datetime.combine(_folder_day(file), datetime.min.time(), UTC)
    if moment > folder_start + timedelta(hours=48):
        return "quarantined", "future_timestamp"
    amount = event.get("amount")
    if amount is not None and not isinstance(amount, int | float):
        return "quarantined", "invalid_amount"
    if amount is not None and amount < 0:
        return "quarantined", "negative_amount"
    if clean.get("product_id") and clean["product_id"] not in products:
        return "quarantined", "unknown_product_id"
    if len(json.dumps(event.get("properties") or {})) > 4096:
        return "quarantined", "oversize_properties"
    if clean["event_id"] in seen:
        return "duplicate", "duplicate_event_id"
    seen.add(clean["event_id"])
    return "accepted", None


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, SampleManifest]:
    root = tmp_path_factory.mktemp("small")
    return root, generate_sample_data(root, **SMALL)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, SampleManifest]:
    root = tmp_path_factory.mktemp("tiny")
    return root, generate_sample_data(root, **TINY)


@pytest.fixture(scope="module")
def signal(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("signal")
    generate_sample_data(root, **SIGNAL)
    return root, [json.loads(text) for _, _, text in _event_lines(root)]


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(small, tmp_path):
    root, _ = small
    generate_sample_data(tmp_path, **SMALL)
    assert _digests(tmp_path) == _digests(root)


def test_different_seed_gives_different_events(small, tmp_path):
    root, _ = small
    generate_sample_data(tmp_path, **{**SMALL, "seed": SMALL["seed"] + 1})
    ids, other = (_event_ids(d) for d in (root, tmp_path))
    assert ids.isdisjoint(other)
    assert _digests(tmp_path)["crm/customers.csv"] != _digests(root)["crm/customers.csv"]


def test_rerun_in_same_dir_replaces_old_batches(tmp_path):
    generate_sample_data(tmp_path, **{**TINY, "days": 14})
    manifest = generate_sample_data(tmp_path, **TINY)
    files = sorted(tmp_path.glob("events/date=*/*"))
    assert len(files) == manifest.counts["event_files"]
    assert not list(tmp_path.rglob("*.tmp"))


# --- event contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["small", "tiny"])
def test_good_event_lines_match_contract(fixture, request):
    root, manifest = request.getfixturevalue(fixture)
    planted = _planted(manifest, "events")
    products = _catalog(root)
    _, customer_rows = _csv_rows(root / "crm/customers.csv")
    customers = {r[0] for r in customer_rows}
    event_ids = set()
    good = [(f, n, t) for f, n, t in _event_lines(root) if (f, n) not in planted]
    assert good
    for file, _, text in good:
        event = json.loads(text)
        _check_contract(event, file, products, customers)
        assert event["event_id"] not in event_ids
        event_ids.add(event["event_id"])


def _check_contract(event: dict, file: str, products: dict, customers: set[str]) -> None:
    """Every key, type and cross-field rule of a good event line."""
    assert tuple(event) == EVENT_KEYS
    assert re.fullmatch(r"e[0-9a-f]{12}", event["event_id"])
    assert event["user_id"] in customers and re.fullmatch(r"c\d{7}", event["user_id"])
    kind = event["event_type"]
    assert kind in EVENT_TYPES
    moment = datetime.fromisoformat(event["timestamp"])
    assert moment.utcoffset() == timedelta(0) and event["timestamp"].endswith("+00:00")
    assert moment.date() == _folder_day(file)
    product = event["product_id"]
    if kind in PRODUCT_TYPES:
        assert product in products
    elif kind != "email_click":
        assert product is None
    assert event["category"] == (products[product]["category"] if product else None)
    assert event["category"] is None or event["category"] in CATEGORY_NAMES
    _check_type_fields(event, products)
    assert isinstance(event["properties"], dict) and len(json.dumps(event["properties"])) < 512


def _check_type_fields(event: dict, products: dict) -> None:
    """Fields that depend on the event type (amount, web vs email fields, properties)."""
    kind, props = event["event_type"], event["properties"]
    if kind == "purchase":
        price = float(products[event["product_id"]]["price"])
        assert event["amount"] >= 0 and event["currency"] == "EUR"
        assert event["amount"] == round(props["quantity"] * price, 2)
        assert re.fullmatch(r"o[0-9a-f]{10}", props["order_id"]) and 1 <= props["quantity"] <= 3
    else:
        assert event["amount"] is None and event["currency"] is None
    if kind in WEB_TYPES:
        assert re.fullmatch(r"s[0-9a-f]{12}", event["session_id"])
        assert event["device"] in ("desktop", "mobile", "tablet")
        assert event["campaign_id"] is None and event["variant"] is None
    else:
        assert event["session_id"] is None and event["device"] is None
        assert re.fullmatch(r"newsletter_\d{4}w\d{2}", event["campaign_id"])
        assert event["variant"] in ("A", "B")
    if kind == "page_view":
        assert props["path"].startswith("/")
    if kind in ("email_send", "email_open", "email_click"):
        assert props["subject"]


# --- planted problems and the manifest -----------------------------------------------------------


@pytest.mark.parametrize("fixture", ["small", "tiny"])
def test_every_kind_is_injected(fixture, request):
    _, manifest = request.getfixturevalue(fixture)
    kinds = Counter((e["source"], e["kind"]) for e in manifest.injected)
    expected = {("events", k) for k in EVENT_INJECTIONS}
    expected |= {("customers", k) for k in CUSTOMER_INJECTIONS}
    expected |= {("products", "invalid_price")}
    expected |= {("assignments", k) for k in ASSIGNMENT_INJECTIONS}
    assert set(kinds) == expected


@pytest.mark.parametrize("fixture", ["small", "tiny"])
def test_every_event_line_reconciles_with_the_manifest(fixture, request):
    """Simple warehouse-like rules give exactly the manifest's disposition for every line."""
    root, manifest = request.getfixturevalue(fixture)
    planted = _planted(manifest, "events")
    products = _catalog(root)
    seen: set[str] = set()
    tally = Counter()
    for file, number, text in _event_lines(root):
        disposition, reason = _classify(text, file, products, seen)
        tally[disposition] += 1
        entry = planted.get((file, number))
        if entry is None:
            assert (disposition, reason) == ("accepted", None), (file, number)
        else:
            assert (disposition, reason) == (entry["disposition"], entry["reason"]), entry
    counts = manifest.counts
    assert tally["accepted"] == counts["expected_events_accepted"]
    assert tally["quarantined"] == counts["expected_events_quarantined"]
    assert tally["duplicate"] == counts["expected_events_duplicates"]


@pytest.mark.parametrize("fixture", ["small", "tiny"])
def test_injected_lines_show_their_problem(fixture, request):
    root, manifest = request.getfixturevalue(fixture)
    lines = {(f, n): t for f, n, t in _event_lines(root)}
    by_id = defaultdict(list)
    for (f, n), t in lines.items():
        if t.startswith("{") and t.endswith("}") and '"event_id":"e' in t:
            by_id[json.loads(t)["event_id"]].append((f, n, t))
    for entry in manifest.injected:
        if entry["source"] != "events":
            continue
        text = lines[(entry["file"], entry["line"])]
        if entry["kind"] == "duplicate_event_id":
            copies = by_id[entry["event_id"]]
            assert copies[0][:2] < (entry["file"], entry["line"]) and copies[0][2] == text
        elif entry["kind"] == "stray_case_whitespace":
            event = json.loads(text)
            assert event["user_id"] != event["user_id"].strip().lower()
            assert event["event_id"] == entry["event_id"]
        elif entry["kind"] == "non_utc_offset":
            event = json.loads(text)
            moment = datetime.fromisoformat(event["timestamp"])
            assert moment.utcoffset() != timedelta(0)
            assert moment.astimezone(UTC).date() == _folder_day(entry["file"])
        elif entry["kind"] == "oversize_properties":
            assert len(json.dumps(json.loads(text)["properties"])) > 8192


@pytest.mark.parametrize("fixture", ["small", "tiny"])
def test_manifest_counts_match_the_files(fixture, request):
    root, manifest = request.getfixturevalue(fixture)
    counts = manifest.counts
    lines = _event_lines(root)
    assert counts["event_lines"] == len(lines)
    assert counts["event_files"] == len(list(root.glob("events/date=*/*.ndjson")))
    for path in root.glob("events/date=*/*.ndjson"):
        assert path.read_bytes().endswith(b"\n")
        assert re.fullmatch(r"events_\d{8}_\d{4}\.ndjson", path.name)
        assert path.name[7:15] == path.parent.name[5:].replace("-", "")
    assert counts["expected_events_accepted"] == (
        len(lines) - counts["expected_events_quarantined"] - counts["expected_events_duplicates"]
    )
    header, customers = _csv_rows(root / "crm/customers.csv")
    assert tuple(header) == CUSTOMER_COLUMNS and counts["customers_rows"] == len(customers)
    header, products = _csv_rows(root / "catalog/products.csv")
    assert tuple(header) == PRODUCT_COLUMNS and counts["products_rows"] == len(products)
    for source, rows in (("customers", customers), ("products", products)):
        quarantined = sum(
            1 for e in manifest.injected if e["source"] == source and e["disposition"] != "accepted"
        )
        assert counts[f"expected_{source}_quarantined"] == quarantined
        assert counts[f"expected_{source}_accepted"] == len(rows) - quarantined
    on_disk = (root / MANIFEST_NAME).read_text(encoding="utf-8")
    assert on_disk == manifest.to_json()
    assert json.loads(on_disk) == manifest.to_dict()


def _customer_reason(row: dict, seen: set[str]) -> str | None:
    """Simple CRM rules: missing id, duplicate id (first wins), invalid email."""
    cid = row["customer_id"].strip().lower()
    if not cid:
        return "missing_customer_id"
    if cid in seen:
        return "duplicate_customer_id"
    seen.add(cid)
    if not EMAIL_RE.fullmatch(row["email"].strip().lower()):
        return "invalid_email"
    return None


@pytest.mark.parametrize("fixture", ["small", "tiny"])
def test_csv_rows_reconcile_with_the_manifest(fixture, request):
    root, manifest = request.getfixturevalue(fixture)
    header, rows = _csv_rows(root / "crm/customers.csv")
    planted = _planted(manifest, "customers")
    seen: set[str] = set()
    for number, values in enumerate(rows, start=1):
        row = dict(zip(header, values, strict=True))
        reason = _customer_reason(row, seen)
        entry = planted.get(("crm/customers.csv", number))
        assert reason == (entry["reason"] if entry else None), (number, row)
        if entry is None:
            assert row["email"] == row["email"].strip().lower()
            assert row["email"].split("@")[1] in ("example.com", "example.org", "example.net")
    header, rows = _csv_rows(root / "catalog/products.csv")
    planted = _planted(manifest, "products")
    for number, values in enumerate(rows, start=1):
        row = dict(zip(header, values, strict=True))
        entry = planted.get(("catalog/products.csv", number))
        try:
            valid = float(row["price"]) >= 0
        except ValueError:
            valid = False
        assert valid == (entry is None), (number, row)
        if entry is None:
            assert re.fullmatch(r"p\d{6}", row["product_id"]) and row["currency"] == "EUR"
            assert re.fullmatch(r"\d+\.\d{2}", row["price"])


def test_customers_csv_values(small):
    root, _ = small
    header, rows = _csv_rows(root / "crm/customers.csv")
    records = [dict(zip(header, r, strict=True)) for r in rows]
    good = [r for r in records if re.fullmatch(r"c\d{7}", r["customer_id"])]
    assert all(r["email_consent"] in ("true", "false") for r in good)
    assert all(
        date.fromisoformat(r["birth_date"]) < date.fromisoformat(r["signup_date"]) for r in good
    )
    blank = sum(1 for r in good if r["timezone"] == "") / len(good)
    assert 0.02 < blank < 0.25
    names = {r["first_name"] for r in records} | {r["last_name"] for r in records}
    assert any(not n.isascii() for n in names)


def test_no_bad_input_when_fraction_is_zero(tmp_path):
    manifest = generate_sample_data(tmp_path, **{**TINY, "bad_fraction": 0.0})
    assert manifest.injected == []
    counts = manifest.counts
    assert (
        counts["expected_events_accepted"] == counts["event_lines"] == len(_event_lines(tmp_path))
    )


# --- planted behavioural signal ------------------------------------------------------------------


def _latent():
    args = {k: SIGNAL[k] for k in ("customers", "days", "seed")}
    return latent_customer_traits(**args, end_date=date(2026, 10, 31)).set_index("customer_id")


def test_no_activity_after_dropout_or_before_signup(signal):
    """Churned customers do nothing after drop-out (only the shop's sends continue)."""
    _, events = signal
    latent = _latent()
    dropout = latent["dropout_at"].dropna().to_dict()
    signup = latent["signup_at"].to_dict()
    for event in events:
        moment = datetime.fromisoformat(event["timestamp"])
        assert moment >= signup[event["user_id"]]
        if event["event_type"] != "email_send" and event["user_id"] in dropout:
            assert moment < dropout[event["user_id"]], event
    assert 0.2 < latent["churned"].mean() < 0.5


def test_churners_look_churned_by_recency(signal):
    _, events = signal
    latent = _latent()
    last_seen = {}
    for event in events:
        if event["event_type"] != "email_send":
            last_seen[event["user_id"]] = event["timestamp"]
    end = datetime(2026, 11, 1, tzinfo=UTC)
    recency = {u: (end - datetime.fromisoformat(t)).days for u, t in last_seen.items()}
    churned = [recency[u] for u in recency if latent.at[u, "churned"]]
    stayed = [recency[u] for u in recency if not latent.at[u, "churned"]]
    assert np.median(churned) > np.median(stayed) + 10


def test_viewed_categories_follow_affinity(signal):
    _, events = signal
    latent = _latent()
    views = defaultdict(Counter)
    for event in events:
        if event["event_type"] == "product_view":
            views[event["user_id"]][event["category"]] += 1
    active = [u for u, c in views.items() if sum(c.values()) >= 5]
    assert len(active) > 100
    hits = sum(1 for u in active if views[u].most_common(1)[0][0] == latent.at[u, "top_category"])
    assert hits / len(active) > 0.6


def test_open_rate_correlates_with_purchases(signal):
    _, events = signal
    sends, opens, orders = Counter(), Counter(), defaultdict(set)
    for event in events:
        user = event["user_id"]
        if event["event_type"] == "email_send":
            sends[user] += 1
        elif event["event_type"] == "email_open":
            opens[user] += 1
        elif event["event_type"] == "purchase":
            orders[user].add(event["properties"]["order_id"])
    users = [u for u in sends if sends[u] >= 3]
    open_rate = np.array([opens[u] / sends[u] for u in users])
    purchases = np.array([len(orders[u]) for u in users])
    ranks = [
        np.argsort(np.argsort(a + np.linspace(0, 1e-9, len(a)))) for a in (open_rate, purchases)
    ]
    assert np.corrcoef(*ranks)[0, 1] > 0.1
    assert 0.05 < (open_rate == 0).mean() < 0.6  # a minority never opens


def test_sessions_follow_the_funnel(signal):
    _, events = signal
    sessions = defaultdict(list)
    for event in events:
        if event["session_id"]:
            sessions[event["session_id"]].append(event)
    carts_without_purchase = 0
    for items in sessions.values():
        items.sort(key=lambda e: e["timestamp"])
        kinds = [e["event_type"] for e in items]
        assert kinds[0] == "page_view" and len({e["user_id"] for e in items}) == 1
        orders = {e["properties"]["order_id"] for e in items if e["event_type"] == "purchase"}
        assert len(orders) <= 1 and kinds.count("purchase") <= 3
        if "purchase" in kinds:
            assert "checkout" in kinds and "add_to_cart" in kinds
        elif "add_to_cart" in kinds:
            carts_without_purchase += 1
    assert carts_without_purchase > 0


def test_product_popularity_is_skewed(signal):
    _, events = signal
    views = Counter(e["product_id"] for e in events if e["event_type"] == "product_view")
    counts = np.array(sorted(views.values(), reverse=True))
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()


# --- marketing segments ---------------------------------------------------------------------------

# Per customer, as of the latest good event: orders in the last 90 days / 3, unique open rate
# over the last 90 days (NULL without sends), most product views of one category in the last
# 24 hours, whether they opened an email in the last 30 days, and orders over the whole window.
_SEGMENT_SQL = """
WITH cutoff AS (SELECT max(ts) AS t FROM events),
recent AS (
    SELECT e.* FROM events e, cutoff
    WHERE e.ts > cutoff.t - INTERVAL 90 DAY AND e.ts <= cutoff.t
),
orders AS (
    SELECT user_id, count(DISTINCT order_id) / 3.0 AS purchases_per_month
    FROM recent WHERE event_type = 'purchase' GROUP BY user_id
),
email AS (
    SELECT user_id,
        count(DISTINCT campaign_id) FILTER (WHERE event_type = 'email_open')
            / count(DISTINCT campaign_id) FILTER (WHERE event_type = 'email_send')
            AS open_rate
    FROM recent WHERE event_type IN ('email_send', 'email_open') GROUP BY user_id
    HAVING count(*) FILTER (WHERE event_type = 'email_send') > 0
),
opened AS (
    SELECT DISTINCT user_id FROM recent, cutoff
    WHERE event_type = 'email_open' AND ts > cutoff.t - INTERVAL 30 DAY
),
views AS (
    SELECT user_id, max(n) AS category_views FROM (
        SELECT user_id, category, count(*) AS n FROM recent, cutoff
        WHERE event_type = 'product_view' AND ts > cutoff.t - INTERVAL 24 HOUR
        GROUP BY user_id, category
    ) GROUP BY user_id
),
lifetime AS (
    SELECT user_id, count(DISTINCT order_id) AS orders
    FROM events WHERE event_type = 'purchase' GROUP BY user_id
)
SELECT c.customer_id, c.city,
    coalesce(o.purchases_per_month, 0) AS purchases_per_month,
    m.open_rate,
    coalesce(v.category_views, 0) AS category_views,
    p.user_id IS NOT NULL AS opened_30d,
    coalesce(l.orders, 0) AS orders
FROM customers c
LEFT JOIN orders o ON o.user_id = c.customer_id
LEFT JOIN email m ON m.user_id = c.customer_id
LEFT JOIN opened p ON p.user_id = c.customer_id
LEFT JOIN views v ON v.user_id = c.customer_id
LEFT JOIN lifetime l ON l.user_id = c.customer_id
ORDER BY c.customer_id
"""


def _segment_frame(root: Path, manifest: SampleManifest) -> pd.DataFrame:
    """Segment inputs per customer from the good event lines and good CRM rows."""
    planted = _planted(manifest, "events")
    rows = []
    for file, number, text in _event_lines(root):
        if (file, number) not in planted:
            e = json.loads(text)
            order_id = e["properties"].get("order_id")
            rows.append(
                (e["user_id"], e["event_type"], e["timestamp"], e["category"])
                + (e["campaign_id"], order_id)
            )
    columns = ["user_id", "event_type", "ts", "category", "campaign_id", "order_id"]
    events = pd.DataFrame(rows, columns=columns)
    events["ts"] = pd.to_datetime(events["ts"], utc=True)
    header, values = _csv_rows(root / "crm/customers.csv")
    planted_customers = _planted(manifest, "customers").items()
    bad = {line for (_, line), e in planted_customers if e["disposition"] != "accepted"}
    customers = pd.DataFrame(
        [v for number, v in enumerate(values, start=1) if number not in bad], columns=header
    )
    con = duckdb.connect()
    con.register("events", events)
    con.register("customers", customers[["customer_id", "city"]])
    frame = con.execute(_SEGMENT_SQL).df()
    con.close()
    _, urban = _csv_rows(URBAN_CITIES)
    frame["urban"] = frame["city"].isin({row[0] for row in urban})
    return frame


def _segments(f: pd.DataFrame) -> dict[str, pd.Series]:
    """Member masks of the shipped segments (same thresholds as the product's rules)."""
    ppm, rate = f["purchases_per_month"], f["open_rate"]
    return {
        "frequent_engaged": (ppm > 5) & (rate > 0.5),
        "frequent_buyers_urban": (ppm >= 2) & f["urban"],
        "engaged_browsers": f["category_views"] > 3,
        "dormant": ~f["opened_30d"],
        "infrequent": (ppm < 2) | (rate.fillna(0) < 0.1),
    }


@pytest.fixture(scope="module")
def segment_inputs(tmp_path_factory) -> pd.DataFrame:
    """Segment inputs per customer for a 2,000-customer, 120-day shop."""
    root = tmp_path_factory.mktemp("segments")
    return _segment_frame(root, generate_sample_data(root, **SEGMENTS))


def test_generator_urban_cities_are_in_the_seed():
    _, urban = _csv_rows(URBAN_CITIES)
    assert {c[1] for c in CITIES if c[3]} <= {row[0] for row in urban}


def test_every_marketing_segment_has_members(segment_inputs):
    """The shop is dense enough for every segment the product ships (as of the last event)."""
    f = segment_inputs
    sizes = {name: int(mask.sum()) for name, mask in _segments(f).items()}
    assert all(size > 0 for size in sizes.values()), sizes
    n = len(f)
    assert 0.25 < sizes["dormant"] / n < 0.65, sizes  # far from everyone
    assert sizes["infrequent"] / n > 0.8, sizes  # most customers
    assert 0.28 < f["open_rate"].mean() < 0.45  # mean unique open rate over 90 days


def test_purchases_are_common_and_heavy_tailed(segment_inputs):
    orders = segment_inputs["orders"]
    assert 0.33 < (orders > 0).mean() < 0.55
    per_buyer = orders[orders > 0]
    assert (per_buyer >= 2).mean() > 0.4  # repeat purchases are common
    assert np.quantile(per_buyer, 0.99) >= 5 * np.median(per_buyer)


# --- CLI and scale -------------------------------------------------------------------------------


def test_cli_writes_files(tmp_path, capsys):
    target = tmp_path / "landing"
    manifest = main(
        ["--landing-dir", str(target), "--customers", "120", "--products", "20", "--days", "8"]
        + ["--seed", "5", "--end-date", "2026-06-30", "--files-per-day", "2"]
    )
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "event lines" in out
    assert (target / "crm/customers.csv").is_file() and (target / "catalog/products.csv").is_file()
    params = json.loads((target / MANIFEST_NAME).read_text())["params"]
    assert params == manifest.params
    assert params["customers"] == 120 and params["end_date"] == "2026-06-30"
    assert params["files_per_day"] == 2 and params["seed"] == 5
    assert list(target.glob("events/date=2026-06-30/events_20260630_000[12].ndjson"))


def test_cli_scale_preset_is_overridden_by_flags(tmp_path, capsys):
    manifest = main(["--landing-dir", str(tmp_path), "--scale", "10k", "--customers", "80"])
    capsys.readouterr()
    assert manifest.params["customers"] == 80
    assert manifest.params["products"] == 1000 and manifest.params["days"] == 120


def test_demo_scale_runs_quickly(tmp_path):
    started = time.perf_counter()
    manifest = generate_sample_data(tmp_path)
    elapsed = time.perf_counter() - started
    if elapsed > 15:
        pytest.skip(f"demo scale took {elapsed:.1f}s on this machine")
    counts = manifest.counts
    assert counts["customers_rows"] > 5000 and counts["products_rows"] > 500
    assert 5 * 5000 < counts["event_lines"] < 40 * 5000
    assert counts["event_files"] == 120


def test_invalid_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        generate_sample_data(tmp_path, products=3)
    with pytest.raises(ValueError):
        generate_sample_data(tmp_path, customers=0)


# --- response model: assignments, holdout and ground truth ---------------------------------------


def _assignment_reason(row: dict, seen: set[tuple[str, str]]) -> str | None:
    """Simple assignment rules: missing ids/variant, bad time, duplicate (first valid wins)."""
    customer = row["customer_id"].strip().lower()
    if not customer:
        return "missing_customer_id"
    if not row["variant"].strip():
        return "missing_variant"
    try:
        datetime.fromisoformat(row["assigned_at"].strip())
    except ValueError:
        return "invalid_assigned_at"
    key = (row["campaign_id"].strip(), customer)
    if key in seen:
        return "duplicate_assignment"
    seen.add(key)
    return None


def _assignments(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / ASSIGNMENTS_FILE, dtype=str, keep_default_na=False)


@pytest.mark.parametrize("fixture", ["small", "tiny"])
def test_assignment_rows_reconcile_with_the_manifest(fixture, request):
    root, manifest = request.getfixturevalue(fixture)
    header, rows = _csv_rows(root / ASSIGNMENTS_FILE)
    assert tuple(header) == ASSIGNMENT_COLUMNS == LOADED_COLUMNS
    assert manifest.counts["assignments_rows"] == len(rows)
    planted = _planted(manifest, "assignments")
    seen: set[tuple[str, str]] = set()
    rejected = 0
    for number, values in enumerate(rows, start=1):
        row = dict(zip(header, values, strict=True))
        reason = _assignment_reason(row, seen)
        entry = planted.get((ASSIGNMENTS_FILE, number))
        assert reason == (entry["reason"] if entry else None), (number, row)
        rejected += reason is not None
    assert manifest.counts["expected_assignments_quarantined"] == rejected
    assert manifest.counts["expected_assignments_accepted"] == len(rows) - rejected


def test_every_send_is_an_assignment_and_the_holdout_gets_no_email(signal):
    root, events = signal
    frame = _assignments(root)
    sends = {
        (e["campaign_id"], e["user_id"]): (e["variant"], e["timestamp"])
        for e in events
        if e["event_type"] == "email_send"
    }
    arms = {
        (r.campaign_id, r.customer_id): (r.variant, r.assigned_at)
        for r in frame.itertuples(index=False)
    }
    assert len(arms) == len(frame)  # bad_fraction 0: one row per (campaign, customer)
    assert all(arms[key] == value for key, value in sends.items())
    held_out = {key for key, (variant, _) in arms.items() if variant == "holdout"}
    assert held_out and held_out.isdisjoint(sends)
    contacted = {
        (e["campaign_id"], e["user_id"])
        for e in events
        if e["event_type"] in ("email_open", "email_click", "unsubscribe")
    }
    assert held_out.isdisjoint(contacted)
    assert len(arms) == len(sends) + len(held_out)
    share = len(held_out) / len(arms)  # planned 0.10, binomial
    assert abs(share - 0.10) < 4 * np.sqrt(0.1 * 0.9 / len(arms))
    assert set(frame["planned_share"]) == {"0.4500", "0.1000"}


def test_ground_truth_is_in_the_manifest_and_follows_the_planted_lifts(small):
    root, manifest = small
    truth = manifest.ground_truth
    assert truth["window_days"] == GROUND_TRUTH_WINDOW_DAYS
    assert truth["response_model"] == manifest.params["response_model"]
    frame = _assignments(root)
    frame = frame[
        ~frame.index.isin([e["line"] - 1 for e in _planted(manifest, "assignments").values()])
    ]
    counted = frame.groupby(["campaign_id", "variant"]).size()
    assert set(truth["campaigns"]) == set(frame["campaign_id"])
    for campaign, spec in truth["campaigns"].items():
        arms = spec["arms"]
        assert set(arms) == {"A", "B", "holdout"}
        assert sum(a["planned_share"] for a in arms.values()) == pytest.approx(1.0)
        for arm, values in arms.items():
            assert values["assigned"] == counted.get((campaign, arm), 0)
        # multiplicative lifts on every customer's own rate: B > A > holdout, B opens more
        assert arms["B"]["conversion_rate"] > arms["A"]["conversion_rate"]
        assert arms["A"]["conversion_rate"] > arms["holdout"]["conversion_rate"] > 0
        assert arms["B"]["open_rate"] > arms["A"]["open_rate"] > 0
        assert arms["holdout"]["open_rate"] is None
    last = max(truth["campaigns"].values(), key=lambda c: c["last_assigned_at"])
    assert last["window_complete"] is (
        datetime.fromisoformat(last["last_assigned_at"]) + timedelta(days=3)
        <= datetime(2026, 11, 1, tzinfo=UTC)
    )


def test_observed_outcomes_match_the_ground_truth(signal):
    """Independently from the events: conversions in the window after assignment, per arm,
    pooled over the complete campaigns, agree with the manifest's truth within sampling error."""
    root, events = signal
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    truth = manifest["ground_truth"]["campaigns"]
    frame = _assignments(root)
    frame["assigned_at"] = pd.to_datetime(frame["assigned_at"], utc=True)
    orders = pd.DataFrame(
        [
            (e["user_id"], e["properties"]["order_id"], e["timestamp"])
            for e in events
            if e["event_type"] == "purchase"
        ],
        columns=["customer_id", "order_id", "ordered_at"],
    )
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"], utc=True)
    orders = orders.groupby(["customer_id", "order_id"], as_index=False)["ordered_at"].min()
    joined = frame.merge(orders, on="customer_id")
    window = pd.Timedelta(days=GROUND_TRUTH_WINDOW_DAYS)
    inside = joined[
        (joined["ordered_at"] >= joined["assigned_at"])
        & (joined["ordered_at"] < joined["assigned_at"] + window)
    ]
    converted = set(zip(inside["campaign_id"], inside["customer_id"], strict=True))
    frame["converted"] = [
        (c, k) in converted for c, k in zip(frame["campaign_id"], frame["customer_id"], strict=True)
    ]
    complete = [c for c, spec in truth.items() if spec["window_complete"]]
    frame = frame[frame["campaign_id"].isin(complete)]
    for arm, group in frame.groupby("variant"):
        expected = np.mean([truth[c]["arms"][arm]["conversion_rate"] for c in group["campaign_id"]])
        observed = group["converted"].mean()
        assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / len(group)), arm


def test_response_model_is_validated_and_a_zero_holdout_means_none(tmp_path):
    with pytest.raises(ValueError):
        ResponseModel(holdout_share=1.0)
    with pytest.raises(ValueError):
        ResponseModel(variants=(("holdout", ArmEffect()),))
    with pytest.raises(ValueError):
        ResponseModel(variants=(("A", ArmEffect(conversion_lift=-1.0)),))
    model = ResponseModel(holdout_share=0.0)
    manifest = generate_sample_data(tmp_path, **{**TINY, "bad_fraction": 0.0}, response_model=model)
    assert "holdout" not in set(_assignments(tmp_path)["variant"])
    assert manifest.params["response_model"]["holdout_share"] == 0.0
