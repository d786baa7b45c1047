"""Point-in-time customer features and segments on a hand-built shop with known answers.

Real landing files → real Dagster run → real dbt on DuckDB. As of 2026-10-31 12:00 UTC (the
latest event), every expected value below is worked out by hand in the comments.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import by_id, run_job, write_landing

AS_OF = "2026-10-31T12:00:00+00:00"


def _event(event_id, user, event_type, ts, **extra):
    return {
        "event_id": event_id,
        "user_id": user,
        "event_type": event_type,
        "timestamp": ts,
        "product_id": extra.get("product_id"),
        "category": None,
        "amount": extra.get("amount"),
        "currency": "EUR" if extra.get("amount") is not None else None,
        "session_id": extra.get("session_id"),
        "device": extra.get("device"),
        "campaign_id": extra.get("campaign_id"),
        "variant": None,
        "properties": extra.get("properties", {}),
    }


def _purchase(event_id, user, ts, order_id, amount, product="p1"):
    return _event(
        event_id,
        user,
        "purchase",
        ts,
        product_id=product,
        amount=amount,
        properties={"order_id": order_id, "quantity": 1},
    )


def _customer(customer_id, *, tracking="true", city="Berlin", birth="1990-05-01"):
    return {
        "customer_id": customer_id,
        "email": f"{customer_id}@example.com",
        "first_name": "A",
        "last_name": "B",
        "gender": "f",
        "birth_date": birth,
        "city": city,
        "country": "DE",
        "timezone": "Europe/Berlin",
        "signup_date": "2026-01-01",
        "email_consent": "true",
        "tracking_consent": tracking,
        "unsubscribed": "false",
    }


EVENTS = [
    # c1: three orders (two on 10-21), four email campaigns, 4 shoe views in the last 24 h.
    _purchase("e01", "c1", "2026-10-01T10:00:00+00:00", "o1", 50.0),
    _purchase("e02", "c1", "2026-10-21T09:00:00+00:00", "o2", 20.0),
    _purchase("e03", "c1", "2026-10-21T09:00:00+00:00", "o2", 10.0, product="p2"),
    _purchase("e04", "c1", "2026-10-21T15:00:00+00:00", "o3", 40.0),
    *[
        _event(f"s{c}", "c1", "email_send", ts, campaign_id=c)
        for c, ts in [
            ("A", "2026-10-05T08:00:00+00:00"),
            ("B", "2026-10-12T08:00:00+00:00"),
            ("C", "2026-10-19T08:00:00+00:00"),
            ("D", "2026-10-26T08:00:00+00:00"),
        ]
    ],
    _event("oA", "c1", "email_open", "2026-10-05T09:00:00+00:00", campaign_id="A"),
    _event("oC1", "c1", "email_open", "2026-10-20T10:00:00+00:00", campaign_id="C"),
    _event("oC2", "c1", "email_open", "2026-10-20T10:00:00+00:00", campaign_id="C"),
    _event("kC", "c1", "email_click", "2026-10-20T10:05:00+00:00", campaign_id="C"),
    _event(
        "v0",
        "c1",
        "product_view",
        "2026-10-30T12:00:00+00:00",
        product_id="p1",
        session_id="w0",
        device="mobile",
    ),  # exactly 24 h before as-of: outside the window
    *[
        _event(
            f"v{h}",
            "c1",
            "product_view",
            f"2026-10-31T{h:02d}:00:00+00:00",
            product_id="p1",
            session_id="w1",
            device="mobile",
        )
        for h in (8, 9, 10, 11)
    ],
    _event(
        "v12",
        "c1",
        "product_view",
        "2026-10-31T12:00:00+00:00",
        product_id="p3",
        session_id="w1",
        device="desktop",
    ),  # the as-of event itself: inside
    # c3: one purchase 60 days ago, no tracking consent (browsing features must be null).
    _purchase("e10", "c3", "2026-09-01T12:00:00+00:00", "o10", 10.0),
    _event("v30", "c3", "product_view", "2026-10-31T10:00:00+00:00", product_id="p1"),
    # c5: two orders, one yesterday.
    _purchase("e20", "c5", "2026-08-15T12:00:00+00:00", "o20", 100.0),
    _purchase("e21", "c5", "2026-10-30T12:00:00+00:00", "o21", 100.0),
    # c6: one small order 152 days ago.
    _purchase("e30", "c6", "2026-06-01T12:00:00+00:00", "o30", 5.0),
]
CUSTOMERS = [
    _customer("c1"),
    _customer("c2", city="Smalltown"),
    _customer("c3", tracking="false"),
    _customer("c5"),
    _customer("c6"),
]
PRODUCTS = [
    {
        "product_id": "p1",
        "name": "Runner",
        "category": "shoes",
        "price": "50",
        "currency": "EUR",
        "in_stock": "true",
    },
    {
        "product_id": "p2",
        "name": "Tote",
        "category": "bags",
        "price": "10",
        "currency": "EUR",
        "in_stock": "true",
    },
    {
        "product_id": "p3",
        "name": "Cap",
        "category": "hats",
        "price": "15",
        "currency": "EUR",
        "in_stock": "true",
    },
]


@pytest.fixture(scope="module")
def tiny_shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_shop")
    write_landing(root, events={"2026-10-31": EVENTS}, customers=CUSTOMERS, products=PRODUCTS)
    result = run_job(root)
    assert result.success
    import duckdb

    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    yield con
    con.close()


def _features(con, customer_id):
    frame = con.execute(
        f"select * from {by_id('customer_features')} where customer_id = ?", [customer_id]
    ).df()
    return frame.iloc[0].to_dict()


def test_as_of_defaults_to_the_latest_event(tiny_shop):
    assert (
        str(tiny_shop.execute("select as_of from feature_as_of").fetchone()[0])
        == "2026-10-31 12:00:00"
    )


def test_rfm_values_count_orders_not_days_and_recency_from_the_last_order(tiny_shop):
    c1 = _features(tiny_shop, "c1")
    assert c1["frequency"] == 3  # o1, o2 (two lines), o3 (same day as o2): orders, not days
    assert c1["monetary_total"] == pytest.approx(120.0)
    assert c1["monetary_avg"] == pytest.approx(40.0)
    assert c1["recency_days"] == pytest.approx(9.875)  # 10-21 15:00 → 10-31 12:00
    assert c1["purchases_per_month"] == pytest.approx(1.0)  # 3 orders in 90 days / 3


def test_lifetimes_convention_counts_repeat_purchase_days(tiny_shop):
    c1 = _features(tiny_shop, "c1")
    assert c1["repeat_purchase_days"] == 1  # purchase days 10-01 and 10-21
    assert c1["recency_lt_days"] == 20
    assert c1["age_lt_days"] == 30
    assert c1["monetary_lt"] == pytest.approx(70.0)  # the 10-21 day: 20 + 10 + 40


def test_quintile_scores_rank_purchasers_with_recency_reversed(tiny_shop):
    scores = {
        row[0]: row[1:]
        for row in tiny_shop.execute(
            "select customer_id, r_score, f_score, m_score from "
            f"{by_id('customer_features')} where r_score is not null order by 1"
        ).fetchall()
    }
    # recency days: c6 152, c3 60, c1 9.875, c5 1 → percent ranks 0, 1/3, 2/3, 1
    # frequency: c3 1, c6 1 (tie: both lowest), c5 2, c1 3; monetary: c6 5, c3 10, c1 120, c5 200
    assert scores == {
        "c1": (4, 5, 4),
        "c3": (2, 1, 2),
        "c5": (5, 4, 5),
        "c6": (1, 1, 1),
    }


def test_customers_without_purchases_get_defined_values_not_nan(tiny_shop):
    c2 = _features(tiny_shop, "c2")
    assert c2["frequency"] == 0 and c2["monetary_total"] == 0 and c2["monetary_avg"] == 0
    assert c2["r_score"] is None or c2["r_score"] != c2["r_score"]  # null → NaN in pandas
    assert c2["engagement_score"] == 0
    assert c2["emails_sent_90d"] == 0


def test_engagement_counts_unique_campaigns_and_scores_by_the_documented_formula(tiny_shop):
    c1 = _features(tiny_shop, "c1")
    assert (c1["emails_sent_30d"], c1["emails_opened_30d"], c1["emails_clicked_30d"]) == (4, 2, 1)
    assert c1["open_rate_30d"] == pytest.approx(0.5)
    assert c1["click_rate_90d"] == pytest.approx(0.25)
    days_since_open = 11 + 2 / 24  # 10-20 10:00 → 10-31 12:00
    assert c1["days_since_last_open"] == pytest.approx(days_since_open)
    expected = 40 * 0.5 + 30 * min(1, 0.25 / 0.2) + 30 * (1 - days_since_open / 90)
    assert c1["engagement_score"] == pytest.approx(round(expected, 1))


def test_browsing_windows_exclude_the_boundary_and_include_as_of(tiny_shop):
    c1 = _features(tiny_shop, "c1")
    assert c1["product_views_24h"] == 5  # 08-11 h shoes + the as-of cap view; not 10-30 12:00
    assert c1["max_category_views_24h"] == 4
    assert c1["top_category"] == "shoes"
    assert c1["preferred_device"] == "mobile"
    # Local hours in Europe/Berlin across the 10-25 DST change: the two 10-21 09:00 UTC purchase
    # lines are 11:00 CEST and the 10-31 10:00 UTC view is 11:00 CET → 11 wins with 3 events.
    assert c1["preferred_hour"] == 11


def test_browsing_features_are_null_without_tracking_consent(tiny_shop):
    c3 = _features(tiny_shop, "c3")
    assert c3["frequency"] == 1  # purchases still count
    for column in ("product_views_24h", "max_category_views_24h", "top_category", "preferred_hour"):
        value = c3[column]
        assert value is None or value != value, column


def test_demographics_join_from_the_crm(tiny_shop):
    c1 = _features(tiny_shop, "c1")
    assert (c1["age"], c1["age_band"], c1["birthday_month"], c1["birthday_day"]) == (
        36,
        "35-44",
        5,
        1,
    )
    assert c1["city_tier"] == "urban"
    assert _features(tiny_shop, "c2")["city_tier"] == "other"


def test_rfm_segments_follow_the_configured_map(tiny_shop):
    rows = dict(
        tiny_shop.execute(
            f"select customer_id, segment from {by_id('segments.customer_segments')} "
            "where segment_type = 'rfm'"
        ).fetchall()
    )
    assert rows == {"c1": "Loyal Customers", "c5": "Champions", "c3": "Hibernating", "c6": "Lost"}


def test_rule_segments_use_point_in_time_event_windows(tiny_shop):
    members = tiny_shop.execute(
        "select segment, list(customer_id order by customer_id) from "
        f"{by_id('segments.customer_segments')} where segment_type = 'rule' group by segment"
    ).fetchall()
    by_segment = dict(members)
    assert by_segment["Engaged Browsers"] == ["c1"]
    assert "c1" not in by_segment["Dormant"] and "c2" in by_segment["Dormant"]


def test_lifetimes_columns_agree_with_a_pandas_reference_on_the_sample_shop(sample_shop):
    """frequency/recency/T/monetary as lifetimes' summary_data_from_transaction_data defines them
    (daily periods, first purchase excluded from monetary), recomputed here in pandas."""
    orders = sample_shop.df(
        "select customer_id, order_date, net_amount_base from fct_orders "
        "where not is_cancellation and order_source = 'events'"
    )
    as_of = sample_shop.query("select cast(as_of as date) from feature_as_of")[0][0]
    orders["order_date"] = orders["order_date"].astype("datetime64[ns]")
    daily = orders.groupby(["customer_id", "order_date"], as_index=False)["net_amount_base"].sum()
    first = daily.groupby("customer_id")["order_date"].transform("min")
    daily["is_first"] = daily["order_date"] == first
    reference = daily.groupby("customer_id").agg(
        frequency=("order_date", lambda d: d.nunique() - 1),
        first=("order_date", "min"),
        last=("order_date", "max"),
    )
    reference["recency"] = (reference["last"] - reference["first"]).dt.days
    reference["T"] = (pd.Timestamp(as_of) - reference["first"]).dt.days
    reference["monetary"] = (
        (daily[~daily["is_first"]].groupby("customer_id")["net_amount_base"].mean())
        .reindex(reference.index)
        .fillna(0.0)
    )
    ours = (
        sample_shop.df(
            "select customer_id, repeat_purchase_days, recency_lt_days, age_lt_days, monetary_lt "
            f"from {by_id('customer_features')} "
            "where age_lt_days is not null and customer_source = 'crm'"
        )
        .set_index("customer_id")
        .sort_index()
    )
    reference = reference.loc[ours.index]
    assert len(ours) > 50
    assert (ours["repeat_purchase_days"] == reference["frequency"]).all()
    assert (ours["recency_lt_days"] == reference["recency"]).all()
    assert (ours["age_lt_days"] == reference["T"]).all()
    assert ours["monetary_lt"].to_numpy() == pytest.approx(
        reference["monetary"].to_numpy(), abs=0.01
    )
