"""Journeys on a copy of the sample shop at a fixed clock, delivered through a real SMTP server."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import pytest

from personalization_assets import paths
from personalization_assets.defs.campaigns.config import (
    CampaignConfigError,
    Journey,
    load_campaigns_config,
    validate_campaigns,
)
from personalization_assets.defs.campaigns.rendering import EmailRenderer, RendererConfig
from personalization_assets.defs.delivery.delivery import deliver
from personalization_assets.defs.delivery.journeys import advance_journeys
from personalization_assets.defs.delivery.ledger import suppress
from personalization_assets.defs.delivery.senders import SmtpSender, SmtpSettings
from personalization_assets.defs.segments.membership import feature_schema
from tests.conftest import by_id
from tests.delivery.support import StepClock, delivery_config

SHIPPED = load_campaigns_config(paths.PROJECT_ROOT / "config" / "campaigns.yaml")
RENDERER = EmailRenderer(
    RendererConfig(
        templates_dir=paths.PROJECT_ROOT / "templates",
        brand=SHIPPED.defaults.brand,
        base_url=SHIPPED.defaults.base_url,
    )
)
HOUR = dt.timedelta(hours=1)


def _journey(**overrides) -> Journey:
    spec = {
        "id": "cart_sequence",
        "name": "Cart sequence",
        "entry": {"type": "cart_abandonment", "wait_minutes": 60, "lookback_hours": 48},
        "goal": {"event": "purchase"},
        "steps": [
            {"id": "reminder", "send": {"template": "cart_abandonment"}},
            {"id": "wait_a_day", "wait": {"hours": 23}},
            {"id": "follow_up", "send": {"template": "cart_abandonment"}},
        ],
        **overrides,
    }
    return Journey.model_validate(spec)


def _config(*journeys: Journey):
    return SHIPPED.model_copy(update={"campaigns": [], "journeys": list(journeys)})


@pytest.fixture
def shop(sample_shop, tmp_path):
    """A copy of the sample shop, its clock T0 ten days after its data (no natural carts)."""
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(sample_shop.database, copy)
    con = duckdb.connect(str(copy))
    con.execute("set TimeZone = 'UTC'")
    as_of = con.execute("select as_of from main.feature_as_of").fetchall()[0][0]
    t0 = (as_of + dt.timedelta(days=10)).replace(minute=0, second=0, microsecond=0)
    customers = [
        row[0]
        for row in con.execute(
            f"""
            select f.customer_id from {by_id("main.customer_features")} f
            join main.dim_customer_contacts c using (customer_id)
            where f.email_consent and not f.is_unsubscribed and c.email is not null
              and not exists (select 1 from campaigns.suppressions s
                              where s.customer_id = f.customer_id or s.email = c.email)
            order by f.customer_id limit 3
            """
        ).fetchall()
    ]
    # Only this test's journeys and payloads: the pipeline's own are cleared.
    for table in ("delivery.send_ledger", "campaigns.email_payloads", "delivery.journey_state"):
        con.execute(f"delete from {table}")
    yield con, t0, customers
    con.close()


def _event(con, customer, event_type, at, event_id):
    con.execute(
        "insert into main.fct_events by name select ? as event_id, ? as customer_id, "
        "? as event_type, ? as event_ts, "
        "(select min(product_id) from main.dim_products) as product_id",
        [event_id, customer, event_type, at],
    )


def _sent(con, journey="cart_sequence"):
    return sorted(
        con.execute(
            "select customer_id, step_id, send_at from delivery.journey_payloads "
            "where journey_id = ? and status = 'rendered'",
            [journey],
        ).fetchall()
    )


def _deliver(con, sink, clock):
    deliver(
        con,
        SmtpSender(SmtpSettings(port=sink.port)),
        delivery_config(),
        run_id=f"run-{clock.isoformat()}",
        mode="smtp",
        clock=StepClock(clock),
    )
    return sorted((m["To"], m["Subject"]) for m in sink.messages())


def test_step_two_goes_only_to_customers_who_did_not_convert_at_the_right_time(shop, sink):
    con, t0, (c1, c2, c3) = shop
    for number, customer in enumerate((c1, c2, c3)):
        _event(con, customer, "add_to_cart", t0 - dt.timedelta(minutes=61), f"cart{number}")
    config = _config(_journey())
    advance_journeys(con, config, RENDERER, clock=t0)
    assert _sent(con) == [(c, "reminder", t0) for c in sorted((c1, c2, c3))]
    assert len(_deliver(con, sink, t0)) == 3

    _event(con, c2, "purchase", t0 + 5 * HOUR, "bought")
    almost = t0 + 23 * HOUR - dt.timedelta(minutes=1)
    advance_journeys(con, config, RENDERER, clock=almost)
    assert [s for s in _sent(con) if s[1] == "follow_up"] == []
    assert len(_deliver(con, sink, almost)) == 3

    # The schedule runs a little after the step is due; the step's time is still exact.
    advance_journeys(con, config, RENDERER, clock=t0 + 23 * HOUR + dt.timedelta(minutes=10))
    follow_ups = [s for s in _sent(con) if s[1] == "follow_up"]
    assert follow_ups == [(c, "follow_up", t0 + 23 * HOUR) for c in sorted((c1, c3))]
    states = dict(con.execute("select customer_id, status from delivery.journey_state").fetchall())
    assert states == {c1: "completed", c2: "converted", c3: "completed"}
    delivered = _deliver(con, sink, t0 + 23 * HOUR + dt.timedelta(minutes=10))
    addresses = dict(
        con.execute(
            "select customer_id, email from main.dim_customer_contacts where customer_id in (?, ?, ?)",
            [c1, c2, c3],
        ).fetchall()
    )
    per_address = {a: sum(1 for to, _ in delivered if to == a) for a in addresses.values()}
    assert per_address == {addresses[c1]: 2, addresses[c2]: 1, addresses[c3]: 2}


def test_advancing_twice_at_the_same_clock_changes_nothing(shop):
    con, t0, (c1, _, _) = shop
    _event(con, c1, "add_to_cart", t0 - 2 * HOUR, "cart")
    config = _config(_journey())
    for _ in range(2):
        advance_journeys(con, config, RENDERER, clock=t0)
        advance_journeys(con, config, RENDERER, clock=t0 + 24 * HOUR)
    assert [s[1] for s in _sent(con)] == ["follow_up", "reminder"]
    assert con.execute("select count(*) from delivery.journey_state").fetchall()[0][0] == 1


def test_re_entry_same_trigger_never_new_trigger_after_exit_and_cooldown(shop):
    con, t0, (c1, c2, _) = shop
    after_exit = _journey(
        re_entry={"policy": "after_exit", "cooldown_hours": 72},
        steps=[{"id": "reminder", "send": {"template": "cart_abandonment"}}],
    )
    never = Journey.model_validate(
        {**after_exit.model_dump(), "id": "cart_once", "re_entry": {"policy": "never"}}
    )
    config = _config(after_exit, never)
    _event(con, c1, "add_to_cart", t0 - 2 * HOUR, "cart1")
    advance_journeys(con, config, RENDERER, clock=t0)
    advance_journeys(con, config, RENDERER, clock=t0 + HOUR)  # same cart: no second entry
    _event(con, c1, "add_to_cart", t0 + 10 * HOUR, "cart2")  # new cart, inside the cooldown
    advance_journeys(con, config, RENDERER, clock=t0 + 12 * HOUR)
    _event(con, c1, "add_to_cart", t0 + 80 * HOUR, "cart3")  # new cart, after the cooldown
    advance_journeys(con, config, RENDERER, clock=t0 + 82 * HOUR)
    entries = con.execute(
        "select journey_id, entry_key from delivery.journey_state where customer_id = ? order by 1, 2",
        [c1],
    ).fetchall()
    assert entries == [
        ("cart_once", "cart1"),
        ("cart_sequence", "cart1"),
        ("cart_sequence", "cart3"),
    ]
    assert [s[0] for s in _sent(con, "cart_sequence")] == [c1, c1]


def test_wait_for_an_event_routes_by_event_or_timeout(shop):
    con, t0, (c1, c2, _) = shop
    journey = _journey(
        steps=[
            {"id": "reminder", "send": {"template": "cart_abandonment"}},
            {
                "id": "opened",
                "wait_for": {
                    "event": "email_open",
                    "timeout": {"hours": 12},
                    "then": "thanks",
                    "timeout_then": "nudge",
                },
            },
            {"id": "thanks", "send": {"template": "new_arrivals"}, "next": "exit"},
            {"id": "nudge", "send": {"template": "cart_abandonment"}},
        ]
    )
    config = _config(journey)
    for customer in (c1, c2):
        _event(con, customer, "add_to_cart", t0 - 2 * HOUR, f"cart-{customer}")
    advance_journeys(con, config, RENDERER, clock=t0)
    _event(con, c1, "email_open", t0 + 3 * HOUR, "open1")
    advance_journeys(con, config, RENDERER, clock=t0 + 4 * HOUR)
    assert (c1, "thanks", t0 + 3 * HOUR) in _sent(con)
    assert not any(s[1] == "nudge" for s in _sent(con))
    advance_journeys(con, config, RENDERER, clock=t0 + 12 * HOUR)
    assert (c2, "nudge", t0 + 12 * HOUR) in _sent(con)
    assert not any(s[0] == c2 and s[1] == "thanks" for s in _sent(con))


def test_branches_take_the_first_matching_case_else_otherwise(shop):
    con, t0, (c1, c2, c3) = shop
    segment, c3_in_it = con.execute(
        """
        select s.segment, exists (select 1 from {segments} t
                                  where t.customer_id = $c3 and t.segment = s.segment)
        from {segments} s where s.customer_id = $c2 order by 2, 1 limit 1
        """.format(segments=by_id("segments.customer_segments")),
        {"c2": c2, "c3": c3},
    ).fetchall()[0]
    journey = _journey(
        steps=[
            {
                "id": "route",
                "branch": [
                    {"event": "product_view", "within_hours": 1, "goto": "fresh"},
                    {"segment": segment, "goto": "by_segment"},
                ],
                "otherwise": "general",
            },
            {"id": "fresh", "send": {"template": "cart_abandonment"}, "next": "exit"},
            {"id": "by_segment", "send": {"template": "new_arrivals"}, "next": "exit"},
            {"id": "general", "send": {"template": "general_promotion"}},
        ],
    )
    for customer in (c1, c2, c3):
        _event(con, customer, "add_to_cart", t0 - 2 * HOUR, f"cart-{customer}")
    _event(con, c1, "product_view", t0 - dt.timedelta(minutes=30), "still-looking")
    advance_journeys(con, _config(journey), RENDERER, clock=t0)
    routed = {customer: step for customer, step, _ in _sent(con)}
    assert routed == {
        c1: "fresh",
        c2: "by_segment",
        c3: "by_segment" if c3_in_it else "general",
    }


def test_a_customer_suppressed_mid_journey_exits_without_the_next_email(shop):
    con, t0, (c1, _, _) = shop
    _event(con, c1, "add_to_cart", t0 - 2 * HOUR, "cart")
    config = _config(_journey())
    advance_journeys(con, config, RENDERER, clock=t0)
    suppress(con, c1, None, "hard_bounce", t0 + HOUR)
    advance_journeys(con, config, RENDERER, clock=t0 + 24 * HOUR)
    assert [s[1] for s in _sent(con)] == ["reminder"]
    assert con.execute("select status, exit_reason from delivery.journey_state").fetchall() == [
        ("exited", "ineligible: suppressed")
    ]


def test_journey_validation_names_every_problem(sample_shop):
    ro = duckdb.connect(str(sample_shop.database), read_only=True)
    schema = feature_schema(ro)
    ro.close()
    broken = _journey(
        goal={"event": "purchased"},
        steps=[
            {"id": "a", "send": {"template": "no_such_template"}, "next": "b"},
            {"id": "b", "branch": [{"segment": "Nobody", "goto": "a"}], "otherwise": "zzz"},
            {"id": "c", "wait": {"hours": 0}},
            {"id": "d", "send": {"template": "birthday"}, "wait": {"hours": 1}},
        ],
    )
    with pytest.raises(CampaignConfigError) as error:
        validate_campaigns(
            _config(broken),
            schema=schema,
            known_segments={"Champions"},
            template_exists=lambda name: name != "no_such_template",
        )
    message = str(error.value)
    for expected in (
        "goal event 'purchased' is not an event type",
        "template 'no_such_template' does not exist",
        "unknown segment 'Nobody'",
        "goes to unknown step 'zzz'",
        "wait of zero",
        "exactly one of send, wait, wait_for, branch",
    ):
        assert expected in message
    looping = _journey(
        steps=[
            {"id": "a", "send": {"template": "birthday"}},
            {"id": "b", "branch": [{"event": "email_open", "goto": "a"}]},
        ]
    )
    with pytest.raises(CampaignConfigError, match="loop without a wait"):
        validate_campaigns(
            _config(looping), schema=schema, known_segments=set(), template_exists=lambda n: True
        )


def test_a_scheduled_step_goes_out_at_ten_local_time_after_the_step_is_reached(shop):
    from zoneinfo import ZoneInfo

    con, t0, customers = shop
    for number, customer in enumerate(customers):
        _event(con, customer, "add_to_cart", t0 - dt.timedelta(minutes=61), f"cart{number}")
    journey = _journey(
        steps=[
            {
                "id": "reminder",
                "send": {
                    "template": "cart_abandonment",
                    "schedule": {
                        "at_local": "10:00",
                        "quiet_hours": {"start": "21:00", "end": "08:00"},
                    },
                },
            }
        ]
    )
    advance_journeys(con, _config(journey), RENDERER, clock=t0)
    zones = dict(
        con.execute(
            "select customer_id, timezone from main.dim_customers where customer_id in (?, ?, ?)",
            customers,
        ).fetchall()
    )
    sent = _sent(con)
    assert [s[0] for s in sent] == sorted(customers)
    for customer, _, send_at in sent:
        local = send_at.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(zones[customer]))
        assert send_at >= t0 and send_at - t0 < dt.timedelta(days=1)
        assert (local.hour, local.minute) == (10, 0)
