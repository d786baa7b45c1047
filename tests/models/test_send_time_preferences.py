"""Send-time optimisation: planted hour preferences recovered, the global hour beaten on a time
split, thin histories shrunk to the segment/global hour, and the asset on a real DuckDB."""

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from personalization_assets import paths
from personalization_assets.defs.models.send_time import (
    SendTimeParams,
    circular_smooth,
    estimate_preferences,
    evaluate_time_split,
    fit_prior_strength,
    fit_send_times,
    local_hours,
    simulate_hour_preferences,
)
from personalization_assets.defs.models.send_time_assets import send_time_preferences
from personalization_assets.defs.privacy import pseudonym
from personalization_assets.defs.warehouse.resources import (
    ProjectConfigResource,
    WarehouseResource,
)

PARAMS = SendTimeParams()
STATED_MARGIN = 0.20  # absolute hit-rate lift (share of holdout opens within +-1 h) over global


@pytest.fixture(scope="module")
def simulated():
    events, customers = simulate_hour_preferences(3000, seed=11)
    return local_hours(events, customers), customers


def _circular_gap(a, b) -> np.ndarray:
    d = np.abs(np.asarray(a) - np.asarray(b)) % 24
    return np.minimum(d, 24 - d)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_optimizer_beats_the_global_hour_on_a_time_split_by_the_stated_margin(seed):
    events, customers = simulate_hour_preferences(2500, seed=seed)
    evaluation = evaluate_time_split(local_hours(events, customers), customers, PARAMS)
    assert evaluation.customers > 1500
    assert evaluation.hit_rate_lift >= STATED_MARGIN
    assert evaluation.beats_global(PARAMS.min_lift)
    model = evaluation.metric("model", "mean_log_likelihood")
    assert model > evaluation.metric("segment", "mean_log_likelihood")
    assert model > evaluation.metric("global_hour", "mean_log_likelihood")


def test_planted_hours_are_recovered_for_customers_with_history(simulated):
    events, customers = simulated
    fitted = fit_send_times(events, customers, PARAMS)
    gap = _circular_gap(fitted.best_local_hour, customers["planted_hour"])
    rich = fitted.n_events >= 8
    thin = (fitted.n_events > 0) & (fitted.n_events < 3)
    assert rich.sum() > 500
    assert (gap[rich] <= 1).mean() > 0.85
    assert (gap[thin] <= 1).mean() < (gap[rich] <= 1).mean()  # thin histories are shrunk


def test_customers_without_opens_get_their_segment_hour_or_the_global_hour(simulated):
    events, customers = simulated
    silent = pd.DataFrame(
        {"customer_key": ["z1", "z2"], "timezone": ["UTC", "UTC"], "segment": ["Loyal", None]}
    )
    everyone = pd.concat([customers, silent], ignore_index=True)
    fitted = fit_send_times(events, everyone, PARAMS)
    frame = fitted.frame().set_index("customer_key")
    assert frame.loc["z1", "source"] == "segment"
    assert frame.loc["z1", "best_local_hour"] == fitted.segment_distributions["Loyal"].argmax()
    assert frame.loc["z2", "source"] == "global"
    assert frame.loc["z2", "best_local_hour"] == fitted.global_best_hour
    assert frame.loc["z1", "n_events"] == 0
    assert (frame.loc[customers["customer_key"], "source"] != "global").all()
    probabilities = np.array(frame["hour_probabilities"].tolist())
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)


def test_few_events_stay_near_the_segment_many_events_follow_the_customer():
    ids = np.array([f"s{i}" for i in range(40)] + ["one", "many"], dtype=object)
    counts = np.zeros((42, 24))
    counts[:40, 12] = 5  # the segment opens at noon
    counts[40, 3] = 1  # one open at 03:xx
    counts[41, 3] = 30  # thirty opens at 03:xx
    fixed = SendTimeParams(prior_strength=10.0)
    fitted = estimate_preferences(counts, ids, np.array(["Loyal"] * 42, dtype=object), fixed)
    assert fitted.best_local_hour[40] == 12
    assert fitted.best_local_hour[41] == 3
    assert fitted.concentration[41] > fitted.concentration[40]
    assert list(fitted.source[40:]) == ["customer", "customer"]


def test_prior_strength_is_fitted_larger_for_homogeneous_customers():
    rng = np.random.default_rng(0)
    shared = np.full(24, 1 / 24)
    same = rng.multinomial(12, shared, 400).astype(float)
    own_hour = np.zeros((400, 24))
    own_hour[np.arange(400), rng.integers(0, 24, 400)] = 12
    means = np.tile(shared, (400, 1))
    assert fit_prior_strength(same, means) >= 100
    assert fit_prior_strength(own_hour, means) <= 1


def test_without_individual_preferences_the_model_does_not_claim_a_lift():
    events, customers = simulate_hour_preferences(2000, seed=4, on_preference=0.0)
    evaluation = evaluate_time_split(local_hours(events, customers), customers, PARAMS)
    assert abs(evaluation.hit_rate_lift) < 0.05
    assert not evaluation.beats_global(0.05)


def test_circular_smoothing_keeps_mass_and_wraps_midnight():
    counts = np.zeros(24)
    counts[23] = 10
    smoothed = circular_smooth(counts, 0.2)
    assert smoothed.sum() == pytest.approx(10)
    assert smoothed[0] == pytest.approx(2) and smoothed[22] == pytest.approx(2)


def test_local_hours_follow_dst_and_fall_back_for_invalid_zones():
    events = pd.DataFrame(
        {
            "customer_key": ["a", "a", "b", "c", "d"],
            "event_type": ["email_open"] * 5,
            "event_ts": pd.to_datetime(
                [
                    "2026-01-15 14:00",  # Berlin winter +1
                    "2026-07-15 14:00",  # Berlin summer +2
                    "2026-07-15 14:00",  # 'Not/AZone' in DE -> Berlin
                    "2026-07-15 14:00",  # Kolkata +5:30 -> 19:30
                    "2026-07-15 14:00",  # no zone, no country -> default UTC
                ]
            ),
        }
    )
    customers = pd.DataFrame(
        {
            "customer_key": ["a", "b", "c", "d"],
            "timezone": ["Europe/Berlin", "Not/AZone", "Asia/Kolkata", None],
            "country": ["DE", "DE", "IN", None],
        }
    )
    hours = local_hours(events, customers)["local_hour"].tolist()
    assert hours == [15, 16, 16, 19, 14]


def _tiny_warehouse(database, events, customers, with_segments=True) -> None:
    """Warehouse tables by customer id (the simulated `customer_key` plays the id), the
    restricted `customer_keys` mapping, and segments keyed like the segments asset writes them."""
    con = duckdb.connect(str(database))
    pseudonym.configure_duckdb(con)
    con.register("_events", events.assign(event_ts=events["event_ts"].dt.tz_localize(None)))
    con.execute(
        "create or replace table main.fct_events as "
        "select customer_key as customer_id, * exclude (customer_key) from _events"
    )
    con.register("_customers", customers.assign(country=None))
    con.execute(
        "create or replace table main.dim_customers as select customer_key as customer_id, "
        "timezone, cast(country as varchar) as country from _customers"
    )
    con.execute(
        "create or replace table main.customer_keys as select "
        f"{pseudonym.customer_key_sql('customer_id')} as customer_key, customer_id "
        "from main.dim_customers"
    )
    if with_segments:
        con.execute("create schema if not exists segments")
        con.execute(
            "create or replace table segments.customer_segments as select k.customer_key, "
            "c.segment, 'rfm' as segment_type, timestamp '2026-10-31' as as_of from _customers c "
            "join main.customer_keys k on k.customer_id = c.customer_key"
        )
    con.close()


def _materialize(database):
    return dg.materialize(
        [send_time_preferences],
        resources={
            "warehouse": WarehouseResource(database=str(database)),
            "project_config": ProjectConfigResource(directory=str(paths.PROJECT_ROOT / "config")),
        },
        raise_on_error=False,
    )


def test_asset_writes_preferences_and_passes_the_check_on_planted_data(tmp_path):
    events, customers = simulate_hour_preferences(1500, seed=5)
    database = tmp_path / "warehouse.duckdb"
    _tiny_warehouse(database, events, customers)
    result = _materialize(database)
    assert result.success
    metadata = result.asset_materializations_for_node("models__send_time_preferences")[0].metadata
    assert metadata["hit_rate_lift_vs_global_hour"].value >= STATED_MARGIN
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert checks["beats_global_hour"].passed
    con = duckdb.connect(str(database), read_only=True)
    rows = con.execute(
        "select count(*), count(distinct customer_key), min(best_local_hour), "
        "max(best_local_hour), max(len(hour_probabilities)) from models.send_time_preferences"
    ).fetchall()[0]
    written = con.execute(
        "select k.customer_id, p.best_local_hour, p.n_events from models.send_time_preferences p "
        "join main.customer_keys k using (customer_key)"
    ).df()
    con.close()
    assert rows[0] == rows[1] == len(customers)
    assert 0 <= rows[2] <= rows[3] <= 23 and rows[4] == 24
    joined = written.merge(customers.rename(columns={"customer_key": "customer_id"}))
    rich = joined[joined["n_events"] >= 8]
    assert (_circular_gap(rich["best_local_hour"], rich["planted_hour"]) <= 1).mean() > 0.85


def test_asset_without_any_opens_gives_everyone_the_global_hour_and_warns(tmp_path):
    _, customers = simulate_hour_preferences(50, seed=6)
    empty = pd.DataFrame(
        {
            "customer_key": pd.Series(dtype=str),
            "event_type": pd.Series(dtype=str),
            "event_ts": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )
    database = tmp_path / "warehouse.duckdb"
    _tiny_warehouse(database, empty, customers, with_segments=False)
    result = _materialize(database)
    assert result.success
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    con = duckdb.connect(str(database), read_only=True)
    sources = con.execute(
        "select source, count(distinct best_local_hour) from models.send_time_preferences "
        "group by source"
    ).fetchall()
    con.close()
    assert sources == [("global", 1)]


def test_sample_shop_pipeline_gives_every_customer_one_send_time(sample_shop):
    counts = sample_shop.query(
        """select count(*), count(distinct p.customer_key),
                  (select count(*) from main.dim_customers),
                  count(*) filter (where p.source = 'customer' and p.n_events = 0),
                  count(*) filter (where p.source <> 'customer' and p.n_events > 0),
                  count(*) filter (where p.best_local_hour not between 0 and 23)
           from models.send_time_preferences p"""
    )[0]
    assert counts[0] == counts[1] == counts[2] > 0
    assert counts[3:] == (0, 0, 0)
    opened = sample_shop.query(
        """select count(distinct e.customer_id) from main.fct_events e
           join main.dim_customers using (customer_id)
           where e.event_type in ('email_open', 'email_click')"""
    )[0][0]
    by_source = dict(
        sample_shop.query("select source, count(*) from models.send_time_preferences group by 1")
    )
    assert by_source["customer"] == opened
    assert by_source.get("segment", 0) + by_source.get("global", 0) == counts[0] - opened
    evaluations = {
        e.asset_check_key.name: e
        for e in sample_shop.result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey(["models", "send_time_preferences"])
    }
    assert "hit_rate_lift" in evaluations["beats_global_hour"].metadata
