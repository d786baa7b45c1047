"""Tests for the segment rule language (parser, validator, DuckDB compiler, config)."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from personalization_assets.defs.segments.rules import (
    BoolOp,
    Compare,
    Const,
    Events,
    FieldRef,
    InList,
    Not,
    RuleSyntaxError,
    SegmentConfigError,
    SegmentDefinition,
    SegmentsConfig,
    check_rule,
    compile_rule,
    feature_schema_from_duckdb,
    load_segments_config,
    parse_rule,
    parse_segments_yaml,
    quote_relation,
    segment_membership_sql,
    validate_rule,
    validate_segments,
)

AS_OF = datetime(2024, 6, 1, 12, 0, 0)
ALL = {1, 2, 3, 4, 5}

SCHEMA = {
    "customer_key": "number",
    "open_rate_90d": "number",
    "days_since_last_open": "number",
    "purchases_per_month": "number",
    "city_tier": "string",
    "frequency": "number",
    "is_vip": "boolean",
    "last_name": "string",
    "signup_date": "date",
}

FEATURES_DDL = """
create table features (
    customer_key integer, open_rate_90d double, days_since_last_open integer,
    purchases_per_month double, city_tier varchar, frequency integer, is_vip boolean,
    last_name varchar, signup_date date
);
insert into features values
    (1, 0.8,  2,    6,    'urban',    10, true,  'O''Brien',              '2024-01-15'),
    (2, 0.05, 45,   1,    'rural',    1,  false, 'x''; drop table f; --', '2023-05-01'),
    (3, 0.3,  null, 3,    'urban',    4,  null,  null,                    '2024-03-01'),
    (4, null, 10,   null, 'suburban', 0,  true,  'Ann',                   null),
    (5, 0.6,  31,   0,    null,       2,  false, 'Bob',                   '2024-05-31');
"""

EVENTS_DDL = """
create table events (
    customer_key integer, event_type varchar, event_ts timestamp,
    category varchar, product_id varchar
);
insert into events values
    -- customer 1: 4 shoe views in (as_of - 24h, as_of] incl. one exactly at as_of, 1 hat view
    (1, 'product_view', '2024-06-01 12:00:00', 'shoes', 'p1'),
    (1, 'product_view', '2024-06-01 11:00:00', 'shoes', 'p1'),
    (1, 'product_view', '2024-06-01 10:00:00', 'shoes', 'p2'),
    (1, 'product_view', '2024-06-01 09:00:00', 'shoes', 'p2'),
    (1, 'product_view', '2024-06-01 11:30:00', 'hats',  'p3'),
    -- customer 2: 3 shoe views inside, one exactly at as_of - 24h and one after as_of
    (2, 'product_view', '2024-06-01 11:00:00', 'shoes', 'p1'),
    (2, 'product_view', '2024-06-01 10:00:00', 'shoes', 'p1'),
    (2, 'product_view', '2024-05-31 12:00:01', 'shoes', 'p1'),
    (2, 'product_view', '2024-05-31 12:00:00', 'shoes', 'p1'),
    (2, 'product_view', '2024-06-01 12:00:01', 'shoes', 'p1'),
    -- customer 3: 5 views spread over 2 categories + 1 without category
    (3, 'product_view', '2024-06-01 08:00:00', 'shoes', 'p1'),
    (3, 'product_view', '2024-06-01 08:10:00', 'shoes', 'p1'),
    (3, 'product_view', '2024-06-01 08:20:00', 'hats',  'p2'),
    (3, 'product_view', '2024-06-01 08:30:00', 'hats',  'p3'),
    (3, 'product_view', '2024-06-01 08:40:00', null,    'p1'),
    -- customer 4: purchases around the 7 day boundary, one email open
    (4, 'purchase',     '2024-05-30 00:00:00', 'shoes', 'p1'),
    (4, 'purchase',     '2024-05-25 12:00:01', 'hats',  'p2'),
    (4, 'purchase',     '2024-05-25 12:00:00', 'hats',  'p2'),
    (4, 'email_open',   '2024-06-01 11:59:00', null,    null);
"""

DEFAULT_SEGMENTS_YAML = """
segments:
  - name: Engaged Browsers
    description: Viewed one product category more than 3 times in the last 24 hours
    rule: events(product_view, 24h, per=category) > 3
  - name: Dormant
    description: No email opened for over 30 days, or never opened one
    rule: days_since_last_open > 30 or days_since_last_open is null
  - name: Frequent Engaged
    description: Buys often and opens most emails
    rule: purchases_per_month > 5 and open_rate_90d > 0.5
  - name: Infrequent
    description: Rarely buys or rarely opens
    rule: purchases_per_month < 2 or open_rate_90d < 0.1
  - name: Frequent Buyers in Urban Areas
    description: Regular buyers living in urban areas
    rule: purchases_per_month >= 2 and city_tier = 'urban'
"""


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with a tiny features table and events table."""
    connection = duckdb.connect(":memory:")
    connection.execute(FEATURES_DDL)
    connection.execute(EVENTS_DDL)
    yield connection
    connection.close()


def members(con: duckdb.DuckDBPyConnection, rule: str) -> set[int]:
    """Validate + compile ``rule`` and return the matching customer ids."""
    expr = parse_rule(rule)
    assert validate_rule(expr, SCHEMA) == []
    where = compile_rule(expr, events_relation="events")
    sql = f"select f.customer_key from features as f where {where}"
    params = {"as_of": AS_OF} if "$as_of" in where else {}  # only events() uses as_of
    return {row[0] for row in con.execute(sql, params).fetchall()}


def membership(con: duckdb.DuckDBPyConnection, config: SegmentsConfig) -> set[tuple[int, str]]:
    """Run the full membership query for a config."""
    sql = segment_membership_sql(
        config, SCHEMA, features_relation="features", events_relation="events"
    )
    return set(con.execute(sql, {"as_of": AS_OF}).fetchall())


def config_of(*segments: dict) -> SegmentsConfig:
    """Build a config from plain dicts."""
    return SegmentsConfig(segments=[SegmentDefinition(**s) for s in segments])


# --------------------------------------------------------------------------- parsing


def test_precedence_not_binds_tighter_than_and_than_or() -> None:
    a, b, c = FieldRef("a"), FieldRef("b"), FieldRef("c")
    assert parse_rule("a or b and not c") == BoolOp("or", a, BoolOp("and", b, Not(c)))
    assert parse_rule("(a or b) and c") == BoolOp("and", BoolOp("or", a, b), c)
    assert parse_rule("not x = 1") == Not(Compare("=", FieldRef("x"), Const(1)))


def test_parse_literals_lists_and_events() -> None:
    assert parse_rule("x in [1, -2.5, 'a']") == InList(
        FieldRef("x"), (Const(1), Const(-2.5), Const("a"))
    )
    assert parse_rule("events(product_view, 24h, per=category) > 3") == Compare(
        ">", Events("product_view", "24h", "category"), Const(3)
    )
    assert parse_rule("x == 1 AND y <> 'b'") == BoolOp(
        "and", Compare("=", FieldRef("x"), Const(1)), Compare("!=", FieldRef("y"), Const("b"))
    )
    assert parse_rule(r"""x = 'it''s' or x = "it's" or x = 'it\'s'""") == parse_rule(
        'x = "it\'s" or x = "it\'s" or x = "it\'s"'
    )


def test_syntax_error_reports_column_and_token() -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule("open_rate_90d > > 0.5")
    err = info.value.error
    assert err.column == 17
    assert "'>'" in err.message
    assert err.rule == "open_rate_90d > > 0.5"


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    with pytest.raises(RuleSyntaxError, match="nested"):
        parse_rule("(" * 500 + "x" + ")" * 500)


# --------------------------------------------------------------------------- SQL semantics

OPERATOR_CASES = [
    ("frequency = 4", {3}),
    ("frequency == 4", {3}),
    ("frequency != 4", {1, 2, 4, 5}),
    ("frequency <> 4", {1, 2, 4, 5}),
    ("frequency < 2", {2, 4}),
    ("frequency <= 2", {2, 4, 5}),
    ("frequency > 4", {1}),
    ("frequency >= 4", {1, 3}),
    ("city_tier = 'urban'", {1, 3}),
    ("city_tier != 'urban'", {2, 4}),  # NULL city (5) never matches a comparison
    ("city_tier in ['urban', 'rural']", {1, 2, 3}),
    ("city_tier not in ['urban']", {2, 4}),
    ("frequency in [1, 2, -3]", {2, 5}),
    ("open_rate_90d between 0.3 and 0.6", {3, 5}),
    ("open_rate_90d not between 0.3 and 0.6", {1, 2}),
    ("open_rate_90d is null", {4}),
    ("open_rate_90d is not null", {1, 2, 3, 5}),
    ("is_vip", {1, 4}),
    ("is_vip = true", {1, 4}),
    ("is_vip = false", {2, 5}),
    ("is_vip != true", {2, 5}),
    ("not is_vip", {2, 3, 5}),  # NULL boolean counts as false, so `not` is true
    ("not not is_vip", {1, 4}),
    ("true", ALL),
    ("false", set()),
    ("true and frequency > 4", {1}),
    ("FALSE OR frequency > 4", {1}),
    ("frequency > 4 OR city_tier = 'rural'", {1, 2}),
    ("not (open_rate_90d > 0.5)", {2, 3, 4}),  # NULL open rate: comparison false, negated true
    ("open_rate_90d <= 0.5", {2, 3}),
    ("last_name contains 'Bri'", {1}),
    ("last_name startswith 'A'", {4}),
    ("last_name not contains 'o'", {1, 4}),
    ("last_name not startswith 'B'", {1, 2, 4}),
    ("signup_date >= '2024-03-01'", {3, 5}),
    ("signup_date < '2024-01-01'", {2}),
    ("signup_date between '2024-01-01' and '2024-03-31'", {1, 3}),
]


@pytest.mark.parametrize(("rule", "expected"), OPERATOR_CASES)
def test_operators(con, rule: str, expected: set[int]) -> None:
    assert members(con, rule) == expected


PRECEDENCE_CASES = [
    ("frequency > 4 or frequency = 0 and is_vip", {1, 4}),
    ("(frequency > 4 or frequency = 0) and city_tier = 'urban'", {1}),
    ("not frequency > 4 and city_tier = 'urban'", {3}),
    ("not (frequency > 4 and city_tier = 'urban')", {2, 3, 4, 5}),
    ("frequency = 1 or frequency = 2 and is_vip or frequency = 10", {1, 2}),
    ("frequency > 0 and\n  (city_tier = 'rural' or\n   is_vip)", {1, 2}),
]


@pytest.mark.parametrize(("rule", "expected"), PRECEDENCE_CASES)
def test_boolean_precedence(con, rule: str, expected: set[int]) -> None:
    assert members(con, rule) == expected


ARITHMETIC_CASES = [
    ("frequency * 2 + 1 = 9", {3}),
    ("frequency + 2 * 3 = 7", {2}),
    ("(frequency + 2) * 3 = 12", {5}),
    ("frequency - 1 - 1 = 0", {5}),  # left associative
    ("frequency / 2 = 0.5", {2}),  # float division
    ("-frequency < -4", {1}),
    ("- -frequency = 4", {3}),
    ("frequency - -1 = 3", {5}),
    ("10 / frequency > 4", {2, 5}),  # 10 / 0 is NULL -> customer 4 does not match
    ("10 / frequency is null", {4}),
    ("frequency / 0 > -1", set()),
    ("purchases_per_month / (frequency - frequency) is null", ALL),
    ("purchases_per_month * open_rate_90d >= 1.5", {1}),
]


@pytest.mark.parametrize(("rule", "expected"), ARITHMETIC_CASES)
def test_arithmetic_and_division_by_zero(con, rule: str, expected: set[int]) -> None:
    assert members(con, rule) == expected


def test_string_escaping_and_injection(con) -> None:
    assert members(con, "last_name = 'O''Brien'") == {1}
    assert members(con, 'last_name = "O\'Brien"') == {1}
    assert members(con, r"last_name = 'O\'Brien'") == {1}
    assert members(con, """last_name = "x'; drop table f; --\"""") == {2}
    assert members(con, "city_tier = 'x''; drop table features; --'") == set()
    assert members(con, "last_name in ['a\\\\b', \"'); drop table events; --\"]") == set()
    assert con.execute("select count(*) from features").fetchone() == (5,)
    assert con.execute("select count(*) from events").fetchone() == (19,)


def test_identifiers_are_quoted_and_relations_checked() -> None:
    sql = compile_rule(parse_rule("frequency > 1"), events_relation="main.events")
    assert 'f."frequency"' in sql
    assert quote_relation("main.events") == '"main"."events"'
    assert quote_relation('"my schema"."ev"') == '"my schema"."ev"'
    for bad in ("events; drop table x", "(select 1)", "a b", ""):
        with pytest.raises(ValueError):
            quote_relation(bad)
    with pytest.raises(ValueError):
        compile_rule(parse_rule("true"), events_relation="events", as_of_param="now(); --")


def test_the_key_column_joins_features_and_events_and_is_checked(con) -> None:
    """Analytics relations join on customer_key (default); the campaign layer passes customer_id."""
    con.execute(
        "create table features_by_id as select customer_key as customer_id, * from features"
    )
    con.execute("create table events_by_id as select customer_key as customer_id, * from events")
    where = compile_rule(
        parse_rule("events(product_view, 24h) >= 3"),
        events_relation="events_by_id",
        key_column="customer_id",
    )
    assert '_ev."customer_id" = f."customer_id"' in where
    by_id = con.execute(
        f"select f.customer_id from features_by_id as f where {where}", {"as_of": AS_OF}
    ).fetchall()
    assert {r[0] for r in by_id} == members(con, "events(product_view, 24h) >= 3") == {1, 2, 3}
    config = config_of({"name": "Browsers", "rule": "events(product_view, 24h) >= 3"})
    sql = segment_membership_sql(
        config,
        SCHEMA,
        features_relation="features_by_id",
        events_relation="events_by_id",
        key_column="customer_id",
    )
    assert set(con.execute(sql, {"as_of": AS_OF}).fetchall()) == membership(con, config)
    for bad in ("customer_id; drop table x", "a b", ""):
        with pytest.raises(ValueError):
            compile_rule(parse_rule("true"), events_relation="events", key_column=bad)


EVENT_CASES = [
    # customer 1 has a view exactly at as_of (included); customer 2 has one exactly at
    # as_of - 24h and one just after as_of (both excluded)
    ("events(product_view, 24h) >= 3", {1, 2, 3}),
    ("events(product_view, 24h) = 3", {2}),
    ("events(product_view, 24h) = 5", {1, 3}),
    ("events(product_view, 1441m) = 4", {2}),  # widening the window picks up the boundary
    ("events(product_view, 24h, per=category) = 4", {1}),
    ("events(product_view, 24h, per=category) = 2", {3}),  # null category ignored
    ("events(product_view, 24h, per=product_id) = 3", {2, 3}),
    ("events(product_view, 24h, per=product_id) = 2", {1}),
    ("events(purchase, 7d) = 2", {4}),
    ("events(purchase, 1w) = 2", {4}),
    ("events(purchase, 8d) = 3", {4}),
    ("events(purchase, 30d) = 0", {1, 2, 3, 5}),
    ("events(purchase, 30d, per=category) = 0", {1, 2, 3, 5}),
    ("events(email_open, 2m) = 1", {4}),
    ("events(email_open, 1m) = 1", set()),  # exactly as_of - 1m is excluded
    ("events('add_to_cart', '90d') > 0", set()),
    ("events(product_view, 24h) + events(purchase, 7d) >= 5", {1, 3}),
    ("events(product_view, 24h, per=category) > 3", {1}),
]


@pytest.mark.parametrize(("rule", "expected"), EVENT_CASES)
def test_windowed_event_counts(con, rule: str, expected: set[int]) -> None:
    assert members(con, rule) == expected


# --------------------------------------------------------------------------- validation

ERROR_CASES = [
    # rule, message fragment, field, column
    ("open_rate_9d > 0.5", "did you mean 'open_rate_90d'", "open_rate_9d", 1),
    ("city_tier > 5", "type mismatch in '>': field 'city_tier' is a string", "city_tier", 1),
    ("open_rate_90d > 'high'", "but 'high' is a string", "open_rate_90d", 1),
    ("5 < city_tier", "type mismatch", "city_tier", 1),
    ("frequency and true", "'and' needs a boolean", "frequency", 1),
    ("not frequency", "'not' needs a boolean", "frequency", 5),
    ("frequency + 'a' > 1", "'+' needs a number", "frequency", 13),
    ("city_tier contains 1", "'contains' needs a string", "city_tier", 20),
    ("is_vip > false", "cannot compare booleans", "is_vip", 1),
    ("open_rate_90d", "must be a true/false condition", "open_rate_90d", 1),
    ("city_tier = null", "use 'is null'", "city_tier", 1),
    ("city_tier in ['a', null]", "null is not allowed in a list", "city_tier", 20),
    ("city_tier in ['a', 2]", "but 2 is a number", "city_tier", 1),
    ("frequency between 5 and 1", "empty range", "frequency", 19),
    ("signup_date > '2024-13-01'", "not a valid date", "signup_date", 15),
    ("is_vip between 1 and 2", "'between' cannot be used with booleans", "is_vip", 1),
]


@pytest.mark.parametrize(("rule", "fragment", "field", "column"), ERROR_CASES)
def test_validation_errors(rule: str, fragment: str, field: str, column: int) -> None:
    errors = check_rule(rule, SCHEMA, segment="My Segment")
    assert len(errors) == 1, errors
    err = errors[0]
    assert fragment in err.message
    assert err.field == field
    assert err.column == column
    text = str(err)
    assert "segment 'My Segment'" in text
    assert rule in text
    assert f"'{field}'" in text


EVENT_ERROR_CASES = [
    ("events(product_viw, 24h) > 1", "unknown event type 'product_viw'", 8),
    ("events(product_view, 24x) > 1", "bad window '24x'", 22),
    ("events(product_view, 24) > 1", "bad window '24'", 22),
    ("events(product_view, 0d) > 1", "bad window '0d'", 22),
    ("events(product_view, 1.5h) > 1", "bad window '1.5h'", 22),
    ("events(product_view, 24h, per=brand) > 1", "bad per 'brand'", 31),
]


@pytest.mark.parametrize(("rule", "fragment", "column"), EVENT_ERROR_CASES)
def test_event_validation_errors(rule: str, fragment: str, column: int) -> None:
    errors = check_rule(rule, SCHEMA, segment="Browsers")
    assert [e.message for e in errors if fragment in e.message], errors
    assert errors[0].column == column
    assert "segment 'Browsers'" in str(errors[0]) and rule in str(errors[0])


def test_unknown_event_type_suggests_closest() -> None:
    (err,) = check_rule("events(product_viw, 24h) > 1", SCHEMA, segment="S")
    assert "did you mean 'product_view'" in err.message


def test_all_errors_in_one_rule_are_reported() -> None:
    errors = check_rule("events(clicks, 2y, per=x) > 1 and city_teir = 'a'", SCHEMA, segment="S")
    messages = " | ".join(e.message for e in errors)
    expected = ("unknown event type 'clicks'", "bad window '2y'", "bad per 'x'", "'city_teir'")
    for fragment in expected:
        assert fragment in messages
    assert "did you mean 'city_tier'" in messages


SYNTAX_CASES = [
    ("open_rate_90d > > 0.5", 17, "'>'"),
    ("frequency > 1 and", 18, "end of rule"),
    ("(frequency > 1", 15, "expected ')'"),
    ("a < b < c", 7, "cannot be chained"),
    ("frequency > 1 frequency", 15, "'frequency'"),
    ("city_tier = 'abc", 13, "never closed"),
    ("frequency in []", 14, "at least one value"),
    ("frequency in 1, 2", 14, "expected '['"),
    ("frequency between 1 or 2", 21, "expected 'and'"),
    ("frequency is 5", 14, "expected 'null'"),
    ("frequency not 5", 15, "after 'not'"),
    ("24h > frequency", 1, "only allowed as the window"),
    ("max(frequency) > 1", 1, "unknown function 'max'"),
    ("events(product_view) > 1", 20, "needs an event type and a window"),
    ("events(product_view, 24h, by=category) > 1", 27, "unknown events() argument"),
    ("frequency > 1 ; drop table x", 15, "unexpected character ';'"),
    ("frequency = [1]", 13, "lists are only allowed"),
    ("", 1, "empty"),
]


@pytest.mark.parametrize(("rule", "column", "fragment"), SYNTAX_CASES)
def test_syntax_errors(rule: str, column: int, fragment: str) -> None:
    (err,) = check_rule(rule, SCHEMA, segment="Broken")
    assert err.message.startswith("syntax error")
    assert fragment in err.message
    assert err.column == column
    assert str(err).startswith(f"segment 'Broken', column {column}:")
    assert f"rule: {rule}" in str(err)


def test_syntax_error_on_later_line_reports_line_and_column() -> None:
    (err,) = check_rule("frequency > 1\nand and", SCHEMA, segment="S")
    assert (err.line, err.column) == (2, 5)
    assert "line 2, column 5" in str(err)


def test_invalid_schema_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="invalid feature types"):
        validate_rule(parse_rule("x > 1"), {"x": "integer"})  # type: ignore[dict-item]


# --------------------------------------------------------------------------- configuration


def test_default_segments(con) -> None:
    config = parse_segments_yaml(DEFAULT_SEGMENTS_YAML)
    assert [s.name for s in config.segments][:2] == ["Engaged Browsers", "Dormant"]
    assert set(validate_segments(config, SCHEMA)) == {s.name for s in config.segments}
    assert membership(con, config) == {
        (1, "Engaged Browsers"),
        # Dormant deliberately includes customers who never opened an email (3)
        (2, "Dormant"),
        (3, "Dormant"),
        (5, "Dormant"),
        (1, "Frequent Engaged"),
        (2, "Infrequent"),
        (5, "Infrequent"),
        (1, "Frequent Buyers in Urban Areas"),
        (3, "Frequent Buyers in Urban Areas"),
    }


def test_exclusive_group_keeps_highest_priority(con) -> None:
    config = config_of(
        {"name": "Regulars", "rule": "frequency >= 2", "exclusive_group": "tier", "priority": 2},
        {"name": "Urban", "rule": "city_tier = 'urban'", "exclusive_group": "tier", "priority": 1},
        {"name": "VIP", "rule": "is_vip", "exclusive_group": "tier"},  # no priority: last
        {"name": "Everyone", "rule": "frequency >= 0"},
        {"name": "Low", "rule": "frequency < 5", "exclusive_group": "other", "priority": 3},
        {"name": "Tiny", "rule": "frequency < 3", "exclusive_group": "other", "priority": 3},
    )
    everyone = {(c, "Everyone") for c in ALL}
    tier = {(1, "Urban"), (3, "Urban"), (5, "Regulars"), (4, "VIP")}
    other = {(2, "Low"), (3, "Low"), (4, "Low"), (5, "Low")}  # tie -> first in file
    assert membership(con, config) == everyone | tier | other


def test_membership_query_with_string_as_of_and_no_segments(con) -> None:
    sql = segment_membership_sql(
        config_of({"name": "B", "rule": "events(product_view, 24h) = 3"}),
        SCHEMA,
        features_relation="main.features",
        events_relation="main.events",
        as_of_param="$run_at",
    )
    assert con.execute(sql, {"run_at": "2024-06-01 12:00:00"}).fetchall() == [(2, "B")]
    empty = segment_membership_sql(
        SegmentsConfig(segments=[]), SCHEMA, features_relation="features", events_relation="events"
    )
    assert con.execute(empty, {"as_of": AS_OF}).fetchall() == []


def test_segment_name_with_quote_is_escaped(con) -> None:
    config = config_of({"name": "Bob's '); drop table features; --", "rule": "frequency = 2"})
    assert membership(con, config) == {(5, "Bob's '); drop table features; --")}
    assert con.execute("select count(*) from features").fetchone() == (5,)


def test_validate_segments_aggregates_all_problems() -> None:
    config = config_of(
        {"name": "Dormant", "rule": "days_since_last_opn > 30"},
        {"name": "dormant", "rule": "frequency > 1"},
        {"name": "Broken", "rule": "frequency >"},
        {"name": "Browsers", "rule": "events(product_view, 24q) > 3"},
    )
    with pytest.raises(SegmentConfigError) as info:
        validate_segments(config, SCHEMA)
    errors = info.value.errors
    assert [e.segment for e in errors] == ["Dormant", "dormant", "Broken", "Browsers"]
    text = str(info.value)
    assert text.startswith("4 problem(s)")
    assert "segment 'Dormant', column 1: unknown field 'days_since_last_opn'" in text
    assert "did you mean 'days_since_last_open'" in text
    assert "rule: days_since_last_opn > 30" in text
    assert "duplicate segment name 'dormant'" in text
    assert "segment 'Broken', column 12: syntax error" in text
    assert "bad window '24q'" in text
    with pytest.raises(SegmentConfigError):
        segment_membership_sql(config, SCHEMA, features_relation="f", events_relation="e")


def test_yaml_structure_errors_name_segment_and_key() -> None:
    bad_key = "segments:\n  - name: A\n    rule: frequency > 1\n    priorty: 1\n"
    with pytest.raises(SegmentConfigError, match=r"segment 'A': priorty: Extra inputs"):
        parse_segments_yaml(bad_key)
    missing_rule = "segments:\n  - name: A\n  - name: B\n    rule: x > 1\n"
    with pytest.raises(SegmentConfigError, match=r"segment 'A': rule: Field required"):
        parse_segments_yaml(missing_rule)
    with pytest.raises(SegmentConfigError, match="top-level 'segments:'"):
        parse_segments_yaml("- name: A\n")
    with pytest.raises(SegmentConfigError, match="invalid YAML"):
        parse_segments_yaml("segments: [\n")
    with pytest.raises(SegmentConfigError, match="segment '#1': name"):
        parse_segments_yaml("segments:\n  - name: '  '\n    rule: x > 1\n")


def test_load_segments_config_from_file(tmp_path) -> None:
    path = tmp_path / "segments.yaml"
    path.write_text(DEFAULT_SEGMENTS_YAML, encoding="utf-8")
    config = load_segments_config(path)
    assert len(config.segments) == 5
    assert config.segments[4].rule == "purchases_per_month >= 2 and city_tier = 'urban'"
    assert config.segments[0].priority is None and config.segments[0].exclusive_group is None


def test_feature_schema_from_duckdb(con) -> None:
    rows = con.execute("describe features").fetchall()
    schema = feature_schema_from_duckdb((name, typ) for name, typ, *_ in rows)
    assert schema == SCHEMA
    other = [("tags", "VARCHAR[]"), ("ts", "TIMESTAMP WITH TIME ZONE"), ("b", "BLOB")]
    assert feature_schema_from_duckdb(other) == {"ts": "timestamp"}
