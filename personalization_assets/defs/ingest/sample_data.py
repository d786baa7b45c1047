"""Deterministic sample data for the landing zone: a small, learnable online shop.

The generator writes the raw exports an online shop would drop into a landing zone
(NDJSON event batches per UTC day, a CRM customer CSV and a product catalog CSV) plus
``_generator_manifest.json``, which lists every bad row it planted so that ingestion tests
can account for every line. The same arguments always give byte-identical files.

The shop model
--------------
* **Catalog.** About ten categories, each with its own price range. Popularity inside a
  category is Zipf-like, so a few products get most of the traffic. About 8% are out of stock.
* **Customers.** Each customer lives in a city (big "urban" cities and smaller towns in a
  weighted mix of countries) with an IANA time zone, and has latent traits:

  - ``purchase_rate``: expected orders per 30 days, gamma-distributed (heavy-tailed, mean
    0.22) for regular customers. With ``intent`` it sets how often the customer starts a
    shopping session.
  - ``power_buyer``: about 1.2% of customers are loyal power buyers. They signed up before
    the window, nearly all take the newsletter, they order about twice a week (log-normal
    around 8 orders per 30 days), rarely churn and open most newsletters.
  - ``intent`` (0..1, grows with ``purchase_rate``; 1 for power buyers): how purposeful the
    customer's shopping sessions are. High intent bounces less and gets through cart,
    checkout and payment more often, so an order takes about 7 shopping sessions at
    intent 0 and fewer than 2 at intent 1.
  - ``browse_rate``: window-shopping sessions per 30 days (gamma, heavy-tailed, a little
    higher for keen buyers), independent of buying.
  - ``dropout_at``: about 30% of customers (10% of power buyers) churn during the window.
    After their drop-out time they do nothing at all: no sessions, opens, clicks or
    unsubscribes. The shop keeps sending them newsletters, so only ``email_send`` events
    go on (30 days after the drop-out at the low "sunset" rate, see Email).
  - ``affinity``: a Dirichlet preference over categories that puts most of its mass on
    1-3 favourite categories. It drives what the customer views, carts and buys.
  - ``open_prob`` and ``click_prob``: email engagement, correlated with ``purchase_rate``.
    About 12% of customers never open an email.
  - a preferred device and a preferred local hour of activity (in their own time zone).
  - a signup date, before or during the window. There is no activity before signup.

* **Web sessions.** Shopping sessions follow a funnel: ``page_view`` -> ``product_view``
  (0..n) -> ``add_to_cart`` -> ``checkout`` -> ``purchase``, with abandonment at every step
  (the customer's ``intent`` sets the odds). Half of them land on a favourite category's
  page and then mostly view that category. A converted session writes one ``purchase``
  event per order line (1-3 lines, one shared ``properties.order_id``). Window-shopping
  sessions land on a favourite category and view 3 or more of its products (a few leave
  something in the cart; none buys). Timestamps inside a session go up by seconds to
  minutes. Sessions are spread evenly over each customer's active period, so the last day
  of the window is an ordinary day (with people in the middle of browsing).
* **Email.** Each Tuesday in the window a newsletter goes out (``newsletter_<year>w<week>``,
  A/B variants in equal shares beside a 10% holdout, B opens a little more often) to customers
  who have email consent and
  have not unsubscribed. Like a real shop's engagement-based sending, subscribers who are
  likely to open get every newsletter and the rest about 15% of them (reach grows with
  ``open_prob`` in ``REACH_OPEN_PROB``); 30 days after a drop-out the subscriber is back on
  the low rate. Opens and clicks depend on the customer's engagement. A click sometimes
  names a product and sometimes leads into a web session. A few customers unsubscribe
  after a newsletter. Consent flags are data the warehouse must respect: web events are
  written whatever ``tracking_consent`` says.
* **Experiments (response model).** Every eligible subscriber of a newsletter is *assigned*
  (``experiments/assignments.csv``: campaign, customer, variant or ``holdout``, assigned_at,
  planned_share); the holdout gets no email at all. ``ResponseModel`` plants each variant's
  effects as multiplicative lifts on the customer's own open and click probabilities and on a
  per-customer base response rate (the chance of an order in the two days after assignment,
  which the holdout has too). Response orders are the only orders a newsletter causes
  (click-through sessions browse but do not order), so the true per-arm rates are exact: the
  manifest's ``ground_truth`` holds them per campaign, averaged over all assigned customers
  (potential outcomes with common random numbers, the customers' other orders included).
  ``simulate_campaign_responses`` runs the same model on small warehouse-shaped tables for
  many-seed tests of the analysis.
* **Bad input.** About ``bad_fraction`` of event lines are planted problems, one problem per
  line (see ``EVENT_INJECTIONS``), plus a few bad CRM, catalog and assignment rows. The
  manifest records each one with its file, line, expected disposition and reason.

At the demo scale (5,000 customers, 120 days to 2026-10-31, seed 42) about 42% of the
customers buy at least once (orders per buyer: median 2, 99th percentile about 40). As of
the last event, 46 customers have more than 15 orders in the last 90 days and opened more
than half of their newsletters, 82 urban customers order at least twice a month, 52 viewed
4+ products of one category in the last 24 hours, and 54% opened no email in the last 30
days (mean unique open rate 0.36). ``test_every_marketing_segment_has_members`` checks that
every shipped segment has members at 2,000 customers.

Everything is computed as numpy columns. DuckDB turns the columns into JSON, and the bad
lines are spliced into the byte stream afterwards. The demo writes about 35 event lines per
customer; a million customers (about 35 million lines, 11 GB) take about ten minutes on two
cores and under 6 GiB of memory. Files are written under a ``.tmp`` name and renamed when
complete (the landing zone's write-then-rename rule).

Run from the command line::

    python -m personalization_assets.defs.ingest.sample_data --landing-dir data/landing --scale demo
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from personalization_assets.contract import CUSTOMER_COLUMNS, EVENT_TYPES, PRODUCT_COLUMNS

GENERATOR_VERSION = 1
DAY = 86_400
NEVER = np.iinfo(np.int64).max // 4  # sentinel timestamp for "no drop-out" / "never"
MANIFEST_NAME = "_generator_manifest.json"
CUSTOMERS_FILE = "crm/customers.csv"
PRODUCTS_FILE = "catalog/products.csv"


SCALE_PRESETS: dict[str, dict[str, int]] = {
    "demo": {"customers": 5_000, "products": 500, "days": 150},
    "10k": {"customers": 10_000, "products": 1_000, "days": 120},
    "100k": {"customers": 100_000, "products": 10_000, "days": 120},
    "1m": {"customers": 1_000_000, "products": 50_000, "days": 120},
}

PAGE_VIEW, PRODUCT_VIEW, ADD_TO_CART, CHECKOUT, PURCHASE = range(5)
EMAIL_SEND, EMAIL_OPEN, EMAIL_CLICK, UNSUBSCRIBE = range(5, 9)
EVENT_KEYS = (
    "event_id",
    "user_id",
    "event_type",
    "timestamp",
    "product_id",
    "category",
    "amount",
    "currency",
    "session_id",
    "device",
    "campaign_id",
    "variant",
    "properties",
)
DEVICES = ("desktop", "mobile", "tablet")
VARIANTS = ("A", "B")

# (name, min price EUR, max price EUR, share of the catalog, product nouns)
CATEGORIES: tuple[tuple[str, float, float, float, tuple[str, ...]], ...] = (
    ("shoes", 39, 179, 0.11, ("Running Shoe", "Sneaker", "Ankle Boot", "Loafer", "Sandal")),
    ("outerwear", 59, 349, 0.09, ("Parka", "Rain Jacket", "Wool Coat", "Puffer Vest")),
    ("tops", 12, 79, 0.14, ("T-Shirt", "Blouse", "Hoodie", "Knit Sweater", "Polo")),
    ("bottoms", 24, 119, 0.11, ("Jeans", "Chinos", "Skirt", "Joggers", "Shorts")),
    ("accessories", 9, 149, 0.10, ("Scarf", "Beanie", "Leather Belt", "Tote Bag", "Cap")),
    ("beauty", 5, 69, 0.09, ("Face Cream", "Lip Balm", "Shampoo", "Eau de Toilette")),
    ("home", 8, 199, 0.10, ("Throw Blanket", "Candle", "Mug Set", "Cushion", "Lamp")),
    ("sports", 15, 249, 0.09, ("Yoga Mat", "Water Bottle", "Dumbbell Set", "Bike Light")),
    ("kids", 7, 69, 0.08, ("Onesie", "Kids Raincoat", "Plush Bear", "Puzzle")),
    ("electronics", 19, 899, 0.09, ("Headphones", "Power Bank", "Smartwatch", "Speaker")),
)
CATEGORY_NAMES = tuple(c[0] for c in CATEGORIES)
PRODUCT_ADJECTIVES = ("Classic", "Essential", "Urban", "Alpine", "Soft", "Eco", "Pro", "Retro")

# country code, weight, cities as (name, IANA zone, urban?)
COUNTRIES: tuple[tuple[str, float, tuple[tuple[str, str, bool], ...]], ...] = (
    (
        "DE",
        0.22,
        (
            ("Berlin", "Europe/Berlin", True),
            ("Hamburg", "Europe/Berlin", True),
            ("Munich", "Europe/Berlin", True),
            ("Cologne", "Europe/Berlin", True),
            ("Freiburg", "Europe/Berlin", False),
            ("Lüneburg", "Europe/Berlin", False),
            ("Bamberg", "Europe/Berlin", False),
            ("Görlitz", "Europe/Berlin", False),
        ),
    ),
    (
        "FR",
        0.13,
        (
            ("Paris", "Europe/Paris", True),
            ("Lyon", "Europe/Paris", True),
            ("Marseille", "Europe/Paris", True),
            ("Annecy", "Europe/Paris", False),
            ("Colmar", "Europe/Paris", False),
            ("Quimper", "Europe/Paris", False),
        ),
    ),
    (
        "GB",
        0.12,
        (
            ("London", "Europe/London", True),
            ("Manchester", "Europe/London", True),
            ("Birmingham", "Europe/London", True),
            ("York", "Europe/London", False),
            ("Bath", "Europe/London", False),
            ("Inverness", "Europe/London", False),
        ),
    ),
    (
        "NL",
        0.08,
        (
            ("Amsterdam", "Europe/Amsterdam", True),
            ("Rotterdam", "Europe/Amsterdam", True),
            ("Utrecht", "Europe/Amsterdam", False),
            ("Delft", "Europe/Amsterdam", False),
            ("Zwolle", "Europe/Amsterdam", False),
        ),
    ),
    (
        "ES",
        0.08,
        (
            ("Madrid", "Europe/Madrid", True),
            ("Barcelona", "Europe/Madrid", True),
            ("Salamanca", "Europe/Madrid", False),
            ("Cádiz", "Europe/Madrid", False),
            ("Las Palmas", "Atlantic/Canary", False),
        ),
    ),
    (
        "IT",
        0.08,
        (
            ("Rome", "Europe/Rome", True),
            ("Milan", "Europe/Rome", True),
            ("Bari", "Europe/Rome", False),
            ("Bologna", "Europe/Rome", False),
            ("Lucca", "Europe/Rome", False),
            ("Trento", "Europe/Rome", False),
        ),
    ),
    (
        "US",
        0.12,
        (
            ("New York", "America/New_York", True),
            ("Los Angeles", "America/Los_Angeles", True),
            ("Chicago", "America/Chicago", True),
            ("San Francisco", "America/Los_Angeles", True),
            ("Boise", "America/Boise", False),
            ("Burlington", "America/New_York", False),
            ("Santa Fe", "America/Denver", False),
        ),
    ),
    (
        "PL",
        0.07,
        (
            ("Warsaw", "Europe/Warsaw", True),
            ("Krakow", "Europe/Warsaw", True),
            ("Gdańsk", "Europe/Warsaw", False),
            ("Toruń", "Europe/Warsaw", False),
        ),
    ),
    (
        "SE",
        0.05,
        (
            ("Stockholm", "Europe/Stockholm", True),
            ("Göteborg", "Europe/Stockholm", False),
            ("Uppsala", "Europe/Stockholm", False),
            ("Kiruna", "Europe/Stockholm", False),
        ),
    ),
    (
        "JP",
        0.05,
        (
            ("Tokyo", "Asia/Tokyo", True),
            ("Osaka", "Asia/Tokyo", True),
            ("Kyoto", "Asia/Tokyo", False),
            ("Sapporo", "Asia/Tokyo", False),
            ("Kanazawa", "Asia/Tokyo", False),
        ),
    ),
)
CITIES = tuple(
    (ci, name, zone, urban) for ci, c in enumerate(COUNTRIES) for name, zone, urban in c[2]
)
ZONES = tuple(sorted({c[2] for c in CITIES}))

# (display name, ASCII form used in email addresses)
FEMALE_NAMES = (
    ("Anna", "anna"), ("Emma", "emma"), ("Sophie", "sophie"), ("Marie", "marie"),
    ("Laura", "laura"), ("Julia", "julia"), ("Zoë", "zoe"), ("Léa", "lea"),
    ("Chloé", "chloe"), ("Olivia", "olivia"), ("Mia", "mia"), ("Maja", "maja"),
    ("Ingrid", "ingrid"), ("Yuki", "yuki"), ("Lucía", "lucia"), ("Giulia", "giulia"),
    ("Agnieszka", "agnieszka"), ("Charlotte", "charlotte"),
)  # fmt: skip
MALE_NAMES = (
    ("Lukas", "lukas"), ("Jonas", "jonas"), ("Leon", "leon"), ("Paul", "paul"),
    ("Thomas", "thomas"), ("Łukasz", "lukasz"), ("José", "jose"), ("Matteo", "matteo"),
    ("Lars", "lars"), ("Hiroshi", "hiroshi"), ("Oliver", "oliver"), ("Noah", "noah"),
    ("Jan", "jan"), ("Pierre", "pierre"), ("Søren", "soren"), ("Björn", "bjorn"),
    ("Marco", "marco"), ("Daniel", "daniel"),
)  # fmt: skip
OTHER_NAMES = (("Alex", "alex"), ("Sam", "sam"), ("Robin", "robin"), ("Kim", "kim"))
FIRST_NAMES = FEMALE_NAMES + MALE_NAMES + OTHER_NAMES
GENDERS = ("female", "male", "other")
_GENDER_NAME_RANGES = (
    (0, len(FEMALE_NAMES)),
    (len(FEMALE_NAMES), len(FEMALE_NAMES) + len(MALE_NAMES)),
    (len(FEMALE_NAMES) + len(MALE_NAMES), len(FIRST_NAMES)),
)
LAST_NAMES = (
    ("Müller", "mueller"), ("Schmidt", "schmidt"), ("Schneider", "schneider"),
    ("Fischer", "fischer"), ("Weber", "weber"), ("Martin", "martin"), ("Bernard", "bernard"),
    ("Dubois", "dubois"), ("Smith", "smith"), ("Jones", "jones"), ("Brown", "brown"),
    ("Taylor", "taylor"), ("de Vries", "devries"), ("Jansen", "jansen"),
    ("García", "garcia"), ("Fernández", "fernandez"), ("Rossi", "rossi"), ("Russo", "russo"),
    ("Kowalski", "kowalski"), ("Nowak", "nowak"), ("Wójcik", "wojcik"),
    ("Andersson", "andersson"), ("Johansson", "johansson"), ("Sato", "sato"),
    ("Suzuki", "suzuki"), ("Tanaka", "tanaka"), ("Williams", "williams"),
    ("O'Brien", "obrien"), ("Ferrari", "ferrari"), ("Lefèvre", "lefevre"),
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
NEWSLETTER_THEMES = (
    "autumn layers", "running season", "home refresh", "weekend deals", "gift ideas",
    "new arrivals", "last chance sale", "cozy nights", "outdoor essentials", "beauty edit",
)  # fmt: skip
BASE_PATHS = ("/", "/sale", "/new", "/search", "/account")

# --- behaviour knobs ---------------------------------------------------------------------
PURCHASE_RATE_MEAN = 0.22  # orders per 30 days, mean of the regular customers
PURCHASE_RATE_SHAPE = 0.6  # gamma shape (< 1: heavy tail)
POWER_BUYER_SHARE = 0.012  # loyal "power buyers": several orders a week, keen email openers
POWER_RATE_MEDIAN, POWER_RATE_SIGMA = 8.0, 0.3  # their orders per 30 days (log-normal)
POWER_CHURN = 0.1
# funnel step probabilities at intent 0 and at intent 1 (a customer's intent lies between)
P_BOUNCE, P_CART, P_CHECKOUT, P_PURCHASE = (0.25, 0.1), (0.35, 0.85), (0.7, 0.9), (0.8, 0.95)
P_CATEGORY_LANDING = 0.5  # shopping sessions that land on a favourite category's page
P_FOCUS_CATEGORY = 0.9  # product views of a category landing session in that category
BROWSE_RATE_MEAN, BROWSE_RATE_SHAPE = 0.45, 0.5  # window-shopping sessions per 30 days
BROWSE_MIN_VIEWS, BROWSE_EXTRA_VIEWS, P_BROWSE_CART = 3, 2.0, 0.1
NEWSLETTER_REACH = 0.15  # share of the weekly newsletters an unengaged subscriber gets
REACH_OPEN_PROB = (0.05, 0.35)  # reach grows from 0.15 to 1 as open_prob goes from 0.05 to 0.35
SUNSET_S = 30 * DAY  # that long after a drop-out the subscriber is back on the low reach
SEND_HOUR_UTC = 7
SEND_SPREAD_S = 2_700  # a newsletter goes out over 45 minutes
UNSUB_DELAY_S = (3_000, 21_000)  # unsubscribe between 50 min and ~6 h after the send
NEVER_OPEN_SHARE = 0.12
VARIANT_B_OPEN_LIFT = 1.15
P_CLICK_PRODUCT, P_CLICK_SESSION = 0.6, 0.5
OPEN_DELAY_S, CLICK_DELAY_S = 4 * 3600, 90  # mean exponential delays: send -> open -> click

# --- response model (experiments with known effects) --------------------------------------------
HOLDOUT = "holdout"
ASSIGNMENTS_FILE = "experiments/assignments.csv"
ASSIGNMENT_COLUMNS = ("campaign_id", "customer_id", "variant", "assigned_at", "planned_share")
RESPONSE_BASE_RATE = (0.01, 0.05)  # per-customer base response rate, from intent 0 to intent 1
RESPONSE_DELAY_S = (3_600, 2 * DAY)  # a response order comes 1 h to 2 days after assignment
RESPONSE_SESSION_S = (0, 25, 60, 100, 150)  # page view, product view, cart, checkout, purchase
GROUND_TRUTH_WINDOW_DAYS = 3  # the window (days after assignment) the manifest's truth is for
ASSIGNMENT_INJECTIONS: dict[str, tuple[str, str | None]] = {
    "missing_customer_id": ("quarantined", "missing_customer_id"),
    "invalid_variant": ("quarantined", "missing_variant"),
    "invalid_assigned_at": ("quarantined", "invalid_assigned_at"),
    "duplicate_assignment": ("quarantined", "duplicate_assignment"),
}

# --- injected bad input --------------------------------------------------------------------
# kind -> (disposition, reason or None, "add" a line / "replace" a good line, weight)
EVENT_INJECTIONS: dict[str, tuple[str, str | None, str, int]] = {
    "invalid_json": ("quarantined", "invalid_json", "add", 1),
    "missing_user_id": ("quarantined", "missing_user_id", "add", 1),
    "missing_event_id": ("quarantined", "missing_event_id", "add", 1),
    "unknown_event_type": ("quarantined", "unknown_event_type", "add", 1),
    "invalid_timestamp": ("quarantined", "invalid_timestamp", "add", 1),
    "future_timestamp": ("quarantined", "future_timestamp", "add", 1),
    "invalid_amount": ("quarantined", "invalid_amount", "add", 1),
    "negative_amount": ("quarantined", "negative_amount", "add", 1),
    "unknown_product_id": ("quarantined", "unknown_product_id", "add", 1),
    "oversize_properties": ("quarantined", "oversize_properties", "add", 1),
    "duplicate_event_id": ("duplicate", "duplicate_event_id", "add", 3),
    "stray_case_whitespace": ("accepted", None, "replace", 2),
    "non_utc_offset": ("accepted", None, "replace", 2),
}
CUSTOMER_INJECTIONS: dict[str, tuple[str, str | None]] = {
    "invalid_email": ("quarantined", "invalid_email"),
    "missing_customer_id": ("quarantined", "missing_customer_id"),
    "duplicate_customer_id": ("quarantined", "duplicate_customer_id"),
    "email_case_whitespace": ("accepted", None),
}
OVERSIZE_BYTES = 9_000
_BAD_TIMESTAMPS = ("yesterday-ish", "2026-13-45T99:00:00Z", "31/10/2026 25:61", "not a date")
_BAD_AMOUNTS = ("12,50€", "19.99 EUR", "abc")
_BAD_EVENT_TYPES = ("teleport", "wishlist_sync", "levitate")
_BAD_PRICES = ("-12.50", "n/a", "12,50", "-0.99", "free")
_OFFSETS_MIN = (330, -480, 540, 60, -210, 120, -300)
_RENDER_ROWS = 1_000_000  # events per DuckDB render query
_SAMPLE_CHUNK = 1_000_000  # rows per chunk when sampling from per-customer distributions


@dataclass
class SampleManifest:
    """What the generator wrote, with an exact account of every planted bad row."""

    generator_version: int
    seed: int
    params: dict
    counts: dict[str, int]
    injected: list[dict] = field(default_factory=list)
    ground_truth: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Return the manifest as plain JSON-ready data."""
        return {
            "generator_version": self.generator_version,
            "seed": self.seed,
            "params": dict(self.params),
            "counts": dict(self.counts),
            "injected": [dict(i) for i in self.injected],
            "ground_truth": dict(self.ground_truth),
        }

    def to_json(self) -> str:
        """Serialise like ``_generator_manifest.json`` (sorted keys, indent 2)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class ArmEffect:
    """Planted multiplicative effects of one variant on a customer's own probabilities.

    ``open_lift`` and ``click_lift`` multiply the customer's open probability and click
    probability (given an open); ``conversion_lift`` multiplies the customer's base response
    rate (the chance of an order in the days after assignment that the holdout also has).
    Probabilities are capped at 1.
    """

    open_lift: float = 1.0
    click_lift: float = 1.0
    conversion_lift: float = 1.0


@dataclass(frozen=True)
class ResponseModel:
    """How the simulated newsletters work: arms, their planted effects and the holdout share.

    Every eligible subscriber of a newsletter is *assigned*: to the holdout with probability
    ``holdout_share`` (no email at all), otherwise to one of ``variants`` with equal chance.
    The holdout's conversion lift is 1 by definition: its response rate is the customer's base
    rate (``RESPONSE_BASE_RATE``, growing with intent). Response orders are the only orders the
    newsletters cause (click-through sessions browse but do not order), so the true effects
    are exact; they are computed per campaign and written to the manifest's ``ground_truth``.
    """

    holdout_share: float = 0.10
    variants: tuple[tuple[str, ArmEffect], ...] = (
        ("A", ArmEffect(conversion_lift=1.5)),
        ("B", ArmEffect(open_lift=VARIANT_B_OPEN_LIFT, conversion_lift=1.8)),
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError("holdout_share must be in [0, 1)")
        names = [name for name, _ in self.variants]
        if not names or len(set(names)) != len(names) or HOLDOUT in names:
            raise ValueError(f"variants need distinct names other than {HOLDOUT!r}: {names}")
        for name, effect in self.variants:
            lifts = (effect.open_lift, effect.click_lift, effect.conversion_lift)
            if not all(np.isfinite(lift) and lift >= 0 for lift in lifts):
                raise ValueError(f"variant {name!r}: lifts must be finite and >= 0")

    @property
    def arms(self) -> list[str]:
        """Variant names, then the holdout (arm index = position)."""
        return [name for name, _ in self.variants] + [HOLDOUT]

    def lifts(self) -> np.ndarray:
        """(arms, 3) open / click / conversion lifts; the holdout gets no email (0, 0, 1)."""
        rows = [(e.open_lift, e.click_lift, e.conversion_lift) for _, e in self.variants]
        return np.array([*rows, (0.0, 0.0, 1.0)], dtype=float)

    def planned_shares(self) -> dict[str, float]:
        """Planned share of every arm (sums to 1)."""
        k = len(self.variants)
        shares = {name: (1.0 - self.holdout_share) / k for name, _ in self.variants}
        return {**shares, HOLDOUT: self.holdout_share}

    def to_dict(self) -> dict:
        """JSON-ready description (for the manifest)."""
        return {
            "holdout_share": self.holdout_share,
            "variants": {
                name: {
                    "open_lift": e.open_lift,
                    "click_lift": e.click_lift,
                    "conversion_lift": e.conversion_lift,
                }
                for name, e in self.variants
            },
            "base_response_rate": list(RESPONSE_BASE_RATE),
            "response_delay_seconds": list(RESPONSE_DELAY_S),
        }


DEFAULT_RESPONSE_MODEL = ResponseModel()


@dataclass(frozen=True)
class _Window:
    """The simulated period: ``days`` UTC days that end with ``end_date``."""

    end_date: date
    days: int

    @property
    def start_date(self) -> date:
        return self.end_date - timedelta(days=self.days - 1)

    @property
    def start_ts(self) -> int:
        return _epoch(self.start_date)

    @property
    def end_ts(self) -> int:
        """Exclusive end (midnight UTC after ``end_date``)."""
        return _epoch(self.end_date) + DAY


@dataclass
class _Catalog:
    """Products as columns plus per-category popularity tables."""

    category: np.ndarray  # int8 category index per product
    price_cents: np.ndarray  # int64
    in_stock: np.ndarray  # bool
    names: list[str]
    by_category: list[np.ndarray]  # product indices per category, most popular first
    cdf: list[np.ndarray]  # cumulative Zipf weights matching by_category


@dataclass
class _Customers:
    """Customer attributes and latent behavioural traits as columns."""

    city: np.ndarray
    zone: np.ndarray
    tz_blank: np.ndarray
    gender: np.ndarray
    first: np.ndarray
    last: np.ndarray
    domain: np.ndarray
    birth: np.ndarray  # datetime64[D]
    signup_ts: np.ndarray
    email_consent: np.ndarray
    tracking_consent: np.ndarray
    unsubscribed: np.ndarray
    purchase_rate: np.ndarray
    browse_rate: np.ndarray  # window-shopping sessions per 30 days
    power: np.ndarray  # bool: member of the power-buyer cohort
    intent: np.ndarray  # 0..1 shopping intent: higher converts a session more often
    dropout_ts: np.ndarray  # NEVER when the customer does not churn
    open_prob: np.ndarray
    click_prob: np.ndarray
    affinity: np.ndarray  # (n, n_categories)
    device: np.ndarray
    pref_hour: np.ndarray

    @property
    def n(self) -> int:
        return len(self.city)

    def limit_ts(self, window: _Window) -> np.ndarray:
        """Time before which a customer may act: drop-out or end of the window."""
        return np.minimum(self.dropout_ts, window.end_ts)

    def funnel(self) -> tuple[np.ndarray, ...]:
        """Per customer: bounce, cart, checkout and purchase probabilities, orders/session."""
        bounce, cart, checkout, purchase = (
            lo + (hi - lo) * self.intent for lo, hi in (P_BOUNCE, P_CART, P_CHECKOUT, P_PURCHASE)
        )
        return bounce, cart, checkout, purchase, (1 - bounce) * cart * checkout * purchase


# --- small helpers ---------------------------------------------------------------------------


def _epoch(d: date) -> int:
    """Seconds since the epoch of midnight UTC on ``d``."""
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent random stream per purpose, so changing one never shifts another."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def _permute(values: np.ndarray, bits: int, seed: int, stream: str) -> np.ndarray:
    """Keyed bijection on ``[0, 2**bits)``: unique, random-looking ids from indices."""
    add, mul1, mul2 = (int(k) for k in _rng(seed, stream).integers(0, 2**62, size=3))
    mask = np.uint64((1 << bits) - 1)
    half = np.uint64(bits // 2)
    x = (values.astype(np.uint64) + np.uint64(add)) & mask
    for mul in (mul1 | 1, mul2 | 1):
        x ^= x >> half
        x = (x * np.uint64(mul)) & mask
    x ^= x >> half
    return x.astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _group_rank(counts: np.ndarray) -> np.ndarray:
    """0..k-1 within each consecutive group of the given sizes."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total) - np.repeat(starts, counts)


def event_file_name(day: date, number: int) -> str:
    """Landing-zone path of one event batch, relative to the landing dir."""
    stamp = day.strftime("%Y%m%d")
    return f"events/date={day.isoformat()}/events_{stamp}_{number:04d}.ndjson"


# --- catalog -----------------------------------------------------------------------------------


def _build_catalog(n: int, seed: int) -> _Catalog:
    """Products with category price ranges and Zipf popularity inside each category."""
    rng = _rng(seed, "catalog")
    n_cat = len(CATEGORIES)
    weights = np.array([c[3] for c in CATEGORIES])
    cats = np.concatenate(
        [np.arange(n_cat), rng.choice(n_cat, n - n_cat, p=weights / weights.sum())]
    )
    cats = rng.permutation(cats).astype(np.int8)
    lo = np.log([CATEGORIES[c][1] for c in cats])
    hi = np.log([CATEGORIES[c][2] for c in cats])
    euros = np.floor(np.exp(lo + rng.random(n) * (hi - lo))).astype(np.int64)
    cents = rng.choice(np.array([99, 95, 0, 49]), n, p=[0.6, 0.2, 0.1, 0.1])
    price = np.maximum(euros * 100 + cents - np.where(cents == 0, 0, 100), 99)
    in_stock = rng.random(n) >= 0.08
    adj = rng.integers(0, len(PRODUCT_ADJECTIVES), n)
    noun = rng.integers(0, 1000, n)
    names = [
        f"{PRODUCT_ADJECTIVES[a]} {CATEGORIES[c][4][k % len(CATEGORIES[c][4])]}"
        for a, c, k in zip(adj.tolist(), cats.tolist(), noun.tolist(), strict=True)
    ]
    by_cat, cdfs = [], []
    for c in range(n_cat):
        members = rng.permutation(np.flatnonzero(cats == c))
        w = 1.0 / np.arange(1, len(members) + 1) ** 1.1
        by_cat.append(members)
        cdfs.append(np.cumsum(w) / w.sum())
    return _Catalog(cats, price, in_stock, names, by_cat, cdfs)


# --- customers ---------------------------------------------------------------------------------


def _draw_geo(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Country -> city (urban cities weigh 3x) -> time zone; ~10% leave the zone blank."""
    weights = np.array([c[1] for c in COUNTRIES])
    country = rng.choice(len(COUNTRIES), n, p=weights / weights.sum())
    city = np.zeros(n, dtype=np.int16)
    u = rng.random(n)
    for ci in range(len(COUNTRIES)):
        members = np.array([i for i, c in enumerate(CITIES) if c[0] == ci])
        w = np.array([3.0 if CITIES[i][3] else 1.0 for i in members])
        pick = np.searchsorted(np.cumsum(w) / w.sum(), u[country == ci], side="right")
        city[country == ci] = members[np.minimum(pick, len(members) - 1)]
    zone = np.array([ZONES.index(c[2]) for c in CITIES], dtype=np.int16)[city]
    return city, zone, rng.random(n) < 0.10


def _draw_identity(
    rng: np.random.Generator, n: int, window: _Window, power: np.ndarray
) -> dict[str, np.ndarray]:
    """Names, gender, email domain, birth date, signup time and consent flags.

    Power buyers are established customers: they signed up before the window, nearly all
    of them take the newsletter and few have unsubscribed.
    """
    gender = rng.choice(3, n, p=[0.48, 0.48, 0.04]).astype(np.int8)
    lo = np.array([r[0] for r in _GENDER_NAME_RANGES])[gender]
    hi = np.array([r[1] for r in _GENDER_NAME_RANGES])[gender]
    first = (lo + np.floor(rng.random(n) * (hi - lo))).astype(np.int16)
    age_days = (np.clip(rng.normal(40, 13, n), 18, 85) * 365.25).astype(np.int64)
    end_day = np.datetime64(window.end_date, "D")
    before = (rng.random(n) < 0.75) | power
    offset = np.where(before, -rng.integers(1, 1100, n), rng.integers(0, window.days, n))
    signup_day = np.datetime64(window.start_date, "D") + offset
    return {
        "gender": gender,
        "first": first,
        "last": rng.integers(0, len(LAST_NAMES), n).astype(np.int16),
        "domain": rng.choice(3, n, p=[0.6, 0.25, 0.15]).astype(np.int8),
        "birth": end_day - age_days,
        "signup_ts": signup_day.astype(np.int64) * DAY + rng.integers(0, DAY, n),
        "email_consent": rng.random(n) < np.where(power, 0.97, 0.85),
        "tracking_consent": rng.random(n) < 0.75,
        "unsubscribed": rng.random(n) < np.where(power, 0.01, 0.04),
    }


def _draw_affinity(rng: np.random.Generator, n: int) -> np.ndarray:
    """Dirichlet category preferences concentrated on 1-3 favourite categories."""
    n_cat = len(CATEGORIES)
    popularity = np.array([c[3] for c in CATEGORIES])
    n_fav = rng.choice([1, 2, 3], n, p=[0.45, 0.4, 0.15])
    scores = rng.random((n, n_cat)) ** (1.0 / popularity)  # weighted order without replacement
    rank = np.argsort(np.argsort(-scores, axis=1), axis=1)
    alpha = np.where(rank < n_fav[:, None], 2.5, 0.08)
    g = rng.gamma(alpha)
    return g / g.sum(axis=1, keepdims=True)


def _draw_behaviour(
    rng: np.random.Generator, n: int, signup_ts: np.ndarray, window: _Window, power: np.ndarray
):
    """Purchase and browse rates, intent, drop-out, engagement, device and preferred hour."""
    rate = rng.gamma(PURCHASE_RATE_SHAPE, PURCHASE_RATE_MEAN / PURCHASE_RATE_SHAPE, n)
    power_rate = POWER_RATE_MEDIAN * np.exp(rng.normal(0, POWER_RATE_SIGMA, n))
    rate = np.where(power, power_rate, rate)
    rank = np.argsort(np.argsort(rate)) / max(n - 1, 1)
    browse = rng.gamma(BROWSE_RATE_SHAPE, BROWSE_RATE_MEAN / BROWSE_RATE_SHAPE, n) * (0.5 + rank)
    churned = rng.random(n) < np.where(power, POWER_CHURN, 0.36 - 0.2 * rank)
    first_ts = np.maximum(signup_ts, window.start_ts)
    dropout = first_ts + (rng.random(n) * (window.end_ts - first_ts)).astype(np.int64)
    log_rate = np.log(rate + 1e-9)
    z = (log_rate - log_rate.mean()) / (log_rate.std() + 1e-9)
    engagement = 0.75 * z + 0.65 * rng.normal(0, 1, n)
    keen = 1.5 + 0.4 * rng.normal(0, 1, n)  # power buyers open most newsletters
    engagement = np.where(power, np.maximum(engagement, keen), engagement)
    never_open = ~power & (rng.random(n) < NEVER_OPEN_SHARE * 2 * _sigmoid(-engagement))
    hour = rng.choice(np.array([8.0, 12.5, 20.5]), n, p=[0.2, 0.25, 0.55])
    return {
        "purchase_rate": rate,
        "browse_rate": browse,
        "power": power,
        "intent": np.where(power, 1.0, rank**1.5),
        "dropout_ts": np.where(churned, dropout, NEVER),
        "open_prob": np.where(never_open, 0.0, _sigmoid(-0.45 + 0.9 * engagement)),
        "click_prob": 0.08 + 0.3 * _sigmoid(engagement),
        "affinity": _draw_affinity(rng, n),
        "device": rng.choice(3, n, p=[0.35, 0.55, 0.10]).astype(np.int8),
        "pref_hour": hour + rng.normal(0, 1.0, n),
    }


def _simulate_customers(n: int, window: _Window, seed: int) -> _Customers:
    """All customer attributes; depends only on (n, window, seed)."""
    rng = _rng(seed, "customers")
    city, zone, tz_blank = _draw_geo(rng, n)
    power = rng.random(n) < POWER_BUYER_SHARE
    ident = _draw_identity(rng, n, window, power)
    behaviour = _draw_behaviour(rng, n, ident["signup_ts"], window, power)
    return _Customers(city=city, zone=zone, tz_blank=tz_blank, **ident, **behaviour)


def customer_id(index: int) -> str:
    """Customer id for a 0-based customer index (``c0000123``)."""
    return f"c{index:07d}"


def product_id(index: int) -> str:
    """Product id for a 0-based product index (``p000123``)."""
    return f"p{index:06d}"


def latent_customer_traits(
    customers: int = 5000, *, days: int = 120, end_date: date = date(2026, 10, 31), seed: int = 42
) -> pd.DataFrame:
    """The hidden traits behind ``generate_sample_data`` with the same arguments.

    For tests and model evaluation only; nothing reads this from the landing zone. Columns:
    ``customer_id``, ``timezone`` (the real zone, even where the CSV leaves it blank),
    ``signup_at``, ``dropout_at`` (NaT when the customer does not churn), ``churned``,
    ``power_buyer``, ``purchase_rate`` (orders per 30 days), ``browse_rate`` (window-shopping
    sessions per 30 days), ``intent``, ``open_prob``, ``click_prob``, ``device``,
    ``pref_local_hour``, ``top_category`` and one ``affinity_<category>`` column per category.
    """
    window = _Window(end_date, days)
    cust = _simulate_customers(customers, window, seed)
    churned = cust.dropout_ts < NEVER
    frame = pd.DataFrame(
        {
            "customer_id": [customer_id(i) for i in range(cust.n)],
            "timezone": np.array(ZONES, dtype=object)[cust.zone],
            "signup_at": pd.to_datetime(cust.signup_ts, unit="s", utc=True),
            "dropout_at": pd.to_datetime(np.where(churned, cust.dropout_ts, 0), unit="s", utc=True),
            "churned": churned,
            "power_buyer": cust.power,
            "purchase_rate": cust.purchase_rate,
            "browse_rate": cust.browse_rate,
            "intent": cust.intent,
            "open_prob": cust.open_prob,
            "click_prob": cust.click_prob,
            "device": np.array(DEVICES, dtype=object)[cust.device],
            "pref_local_hour": cust.pref_hour,
            "top_category": np.array(CATEGORY_NAMES, dtype=object)[cust.affinity.argmax(1)],
        }
    )
    frame.loc[~churned, "dropout_at"] = pd.NaT
    for i, name in enumerate(CATEGORY_NAMES):
        frame[f"affinity_{name}"] = cust.affinity[:, i]
    return frame


# --- sampling from customer preferences ---------------------------------------------------------


def _sample_categories(
    cust_idx: np.ndarray, cum_aff: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One category per row, drawn from the customer's affinity."""
    n = len(cust_idx)
    u_cat = rng.random(n)
    cat = np.empty(n, dtype=np.int64)
    for s in range(0, n, _SAMPLE_CHUNK):
        e = min(s + _SAMPLE_CHUNK, n)
        cat[s:e] = (u_cat[s:e, None] > cum_aff[cust_idx[s:e]]).sum(axis=1)
    return np.minimum(cat, len(CATEGORIES) - 1)


def _sample_products(
    cust_idx: np.ndarray,
    cum_aff: np.ndarray,
    catalog: _Catalog,
    rng: np.random.Generator,
    focus: np.ndarray | None = None,
) -> np.ndarray:
    """One product per row: category from the customer's affinity, then Zipf within it.

    Where ``focus`` (a category per row, -1 for none) is given, the row stays in that
    category with probability ``P_FOCUS_CATEGORY``.
    """
    n = len(cust_idx)
    cat = _sample_categories(cust_idx, cum_aff, rng)
    u_prod = rng.random(n)
    if focus is not None:
        cat = np.where((focus >= 0) & (rng.random(n) < P_FOCUS_CATEGORY), focus, cat)
    out = np.empty(n, dtype=np.int32)
    for c in range(len(CATEGORIES)):
        mask = cat == c
        pick = np.searchsorted(catalog.cdf[c], u_prod[mask], side="right")
        out[mask] = catalog.by_category[c][np.minimum(pick, len(catalog.by_category[c]) - 1)]
    return out


def _part(n: int, **cols: np.ndarray | int) -> dict[str, np.ndarray]:
    """A block of events with every column present (missing ones get their null value)."""
    defaults = {
        "cust": (np.int32, -1),
        "etype": (np.int8, -1),
        "ts": (np.int64, 0),
        "product": (np.int32, -1),
        "amount_cents": (np.int64, -1),
        "session": (np.int64, -1),
        "device": (np.int8, -1),
        "campaign": (np.int16, -1),
        "variant": (np.int8, -1),
        "order_no": (np.int64, -1),
        "quantity": (np.int8, 0),
        "path": (np.int16, -1),
    }
    out = {}
    for name, (dtype, null) in defaults.items():
        value = cols.get(name, null)
        out[name] = np.broadcast_to(np.asarray(value, dtype=dtype), (n,)).copy()
    return out


def _concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack event blocks column by column."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --- email -----------------------------------------------------------------------------------


def _campaigns(window: _Window) -> tuple[np.ndarray, list[str]]:
    """One newsletter per Tuesday in the window: send times (UTC) and campaign ids."""
    sends, names = [], []
    for i in range(window.days):
        day = window.start_date + timedelta(days=i)
        if day.weekday() == 1:
            iso = day.isocalendar()
            names.append(f"newsletter_{iso.year}w{iso.week:02d}")
            sends.append(_epoch(day) + SEND_HOUR_UTC * 3600)
    return np.array(sends, dtype=np.int64), names


def _subjects(names: list[str]) -> list[str]:
    """Subject line per (campaign, variant), flattened as ``campaign * 2 + variant``."""
    out = []
    for i, _ in enumerate(names):
        theme = NEWSLETTER_THEMES[i % len(NEWSLETTER_THEMES)]
        out += [f"This week: {theme}", f"Picked for you: {theme}"]
    return out


def _unsubscribe_plan(
    cust: _Customers, send_base: np.ndarray, window: _Window, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Unsubscribe time and campaign for unsubscribers who leave during the window."""
    unsub_ts = np.full(cust.n, NEVER, dtype=np.int64)
    unsub_camp = np.full(cust.n, -1, dtype=np.int64)
    in_window = rng.random(cust.n) < 0.5  # the other half left before the window started
    cand = np.flatnonzero(cust.unsubscribed & cust.email_consent & in_window)
    if len(send_base) == 0 or len(cand) == 0:
        return unsub_ts, unsub_camp
    limit = cust.limit_ts(window)[cand]
    valid = (send_base[None, :] > cust.signup_ts[cand, None]) & (
        send_base[None, :] + UNSUB_DELAY_S[1] < limit[:, None]
    )
    m = valid.sum(axis=1)
    r = np.floor(rng.random(len(cand)) * m)
    k = np.argmax(np.cumsum(valid, axis=1) > r[:, None], axis=1)
    delay = rng.integers(*UNSUB_DELAY_S, size=len(cand))
    ok = m > 0
    unsub_camp[cand[ok]] = k[ok]
    unsub_ts[cand[ok]] = send_base[k[ok]] + delay[ok]
    return unsub_ts, unsub_camp


@dataclass
class _Assignments:
    """Every (newsletter, eligible subscriber) pair with its arm, as columns."""

    cust: np.ndarray
    campaign: np.ndarray
    arm: np.ndarray  # index into ResponseModel.arms (the last one is the holdout)
    ts: np.ndarray  # assigned_at = the (planned) send time
    email_limit: np.ndarray  # time before which the customer can open or click
    arm_count: int  # variants + the holdout

    @property
    def holdout(self) -> np.ndarray:
        return self.arm == self.arm_count - 1


def _simulate_email(
    cust: _Customers,
    catalog: _Catalog,
    cum_aff: np.ndarray,
    window: _Window,
    seed: int,
    model: ResponseModel = DEFAULT_RESPONSE_MODEL,
) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray], _Assignments]:
    """Newsletter sends, opens, clicks and unsubscribes; parts, click sessions, assignments.

    Holdout members are assigned like everyone else but get no send, open or click (their
    random draws are still made, so the other customers' email stream does not depend on who
    is held out). An unsubscriber's last newsletter is never held out.
    """
    rng = _rng(seed, "email")
    send_base, _ = _campaigns(window)
    unsub_ts, unsub_camp = _unsubscribe_plan(cust, send_base, window, rng)
    blocked = cust.unsubscribed & (unsub_camp < 0)
    lo, hi = REACH_OPEN_PROB
    engaged = np.clip((cust.open_prob - lo) / (hi - lo), 0.0, 1.0)
    sunset = send_base[None, :] >= cust.dropout_ts[:, None] + SUNSET_S
    reach = np.where(sunset, 0.0, engaged[:, None]) * (1 - NEWSLETTER_REACH) + NEWSLETTER_REACH
    eligible = (
        (cust.email_consent & ~blocked)[:, None]
        & (send_base[None, :] > cust.signup_ts[:, None])
        & (send_base[None, :] < unsub_ts[:, None])
        & (rng.random((cust.n, len(send_base))) < reach)
    )
    leavers = np.flatnonzero(unsub_camp >= 0)
    eligible[leavers, unsub_camp[leavers]] = True
    ci, cc = np.nonzero(eligible)
    sends = _part(
        len(ci),
        cust=ci,
        etype=EMAIL_SEND,
        ts=send_base[cc] + rng.integers(0, SEND_SPREAD_S, len(ci)),
        campaign=cc,
        variant=rng.integers(0, len(model.variants), len(ci)),
    )
    limit = np.minimum(cust.limit_ts(window), unsub_ts)[ci]
    pair = np.searchsorted(ci * len(send_base) + cc, leavers * len(send_base) + unsub_camp[leavers])
    held_out = _rng(seed, "holdout").random(len(ci)) < model.holdout_share
    held_out[pair] = False
    opens, clicks, sessions = _opens_and_clicks(
        cust, catalog, cum_aff, sends, np.where(held_out, 0, limit), rng, model
    )
    arms = np.where(held_out, len(model.variants), sends["variant"])
    assignments = _Assignments(ci, cc, arms, sends["ts"].copy(), limit, len(model.arms))
    unsubs = _part(
        len(leavers),
        cust=leavers,
        etype=UNSUBSCRIBE,
        ts=unsub_ts[leavers],
        campaign=unsub_camp[leavers],
        variant=sends["variant"][pair],
    )
    sends = {k: v[~held_out] for k, v in sends.items()}
    return [sends, opens, clicks, unsubs], sessions, assignments


def _opens_and_clicks(
    cust: _Customers,
    catalog: _Catalog,
    cum_aff: np.ndarray,
    sends: dict[str, np.ndarray],
    limit: np.ndarray,
    rng: np.random.Generator,
    model: ResponseModel = DEFAULT_RESPONSE_MODEL,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Opens (engagement-driven, times the variant's lift), clicks and click-through sessions."""
    n, ci = len(sends["cust"]), sends["cust"]
    lifts = model.lifts()[sends["variant"]]
    open_ts = sends["ts"] + 30 + rng.exponential(OPEN_DELAY_S, n).astype(np.int64)
    opened = (rng.random(n) < cust.open_prob[ci] * lifts[:, 0]) & (open_ts < limit)
    click_ts = open_ts + 5 + rng.exponential(CLICK_DELAY_S, n).astype(np.int64)
    clicked = opened & (rng.random(n) < cust.click_prob[ci] * lifts[:, 1]) & (click_ts < limit)
    with_product = clicked & (rng.random(n) < P_CLICK_PRODUCT)
    product = np.full(n, -1, dtype=np.int32)
    product[with_product] = _sample_products(ci[with_product], cum_aff, catalog, rng)
    to_session = clicked & (rng.random(n) < P_CLICK_SESSION)
    keep = {k: sends[k] for k in ("cust", "campaign", "variant")}
    opens = _part(int(opened.sum()), **{k: v[opened] for k, v in keep.items()}, etype=EMAIL_OPEN)
    opens["ts"] = open_ts[opened]
    clicks = _part(
        int(clicked.sum()),
        **{k: v[clicked] for k, v in keep.items()},
        etype=EMAIL_CLICK,
        ts=click_ts[clicked],
        product=product[clicked],
    )
    sessions = {
        "cust": ci[to_session],
        "start": click_ts[to_session] + rng.integers(2, 15, int(to_session.sum())),
        "first_product": product[to_session],
        "path": len(BASE_PATHS) + len(CATEGORIES) + sends["campaign"][to_session],
        "focus": np.full(int(to_session.sum()), -1),
        "browse": np.zeros(int(to_session.sum()), dtype=bool),
        "no_order": np.ones(int(to_session.sum()), dtype=bool),
    }
    return opens, clicks, sessions


# --- web sessions ----------------------------------------------------------------------------


def _zone_offsets(window: _Window) -> tuple[np.ndarray, int]:
    """UTC offset (seconds) per (zone, day) around the window, and the table's first day."""
    first = window.start_date - timedelta(days=3)
    table = np.zeros((len(ZONES), window.days + 6), dtype=np.int64)
    for z, name in enumerate(ZONES):
        tz = ZoneInfo(name)
        for d in range(window.days + 6):
            day = first + timedelta(days=d)
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
            table[z, d] = int(noon.utcoffset().total_seconds())
    return table, _epoch(first)


def _organic_sessions(
    cust: _Customers, cum_aff: np.ndarray, window: _Window, seed: int
) -> dict[str, np.ndarray]:
    """Session starts: Poisson in the active period, at the customer's local preferred hour."""
    rng = _rng(seed, "sessions")
    active_from = np.maximum(cust.signup_ts, window.start_ts)
    active_to = cust.limit_ts(window)
    span = np.clip(active_to - active_from, 0, None)
    shop_per_day = cust.purchase_rate / 30.0 / cust.funnel()[-1]
    n_shop = rng.poisson(shop_per_day * span / DAY)
    n_browse = rng.poisson(cust.browse_rate / 30.0 * span / DAY)
    ci = np.concatenate([np.repeat(np.arange(cust.n), n) for n in (n_shop, n_browse)])
    browse = np.repeat(np.array([False, True]), [n_shop.sum(), n_browse.sum()])
    t0 = active_from[ci] + (rng.random(len(ci)) * span[ci]).astype(np.int64)
    offsets, table_start = _zone_offsets(window)
    off = offsets[cust.zone[ci], (t0 - table_start) // DAY]
    local_day = (t0 + off) // DAY
    local_sec = np.clip(cust.pref_hour[ci] * 3600 + rng.normal(0, 5400, len(ci)), 0, DAY - 1)
    start = local_day * DAY + local_sec.astype(np.int64) - off
    keep = (start >= active_from[ci]) & (start < active_to[ci])
    ci, start, browse = ci[keep], start[keep], browse[keep]
    use_category = browse | (rng.random(len(ci)) < P_CATEGORY_LANDING)
    focus = np.where(use_category, _sample_categories(ci, cum_aff, rng), -1)
    base_path = rng.integers(0, len(BASE_PATHS), len(ci))
    path = np.where(use_category, len(BASE_PATHS) + focus, base_path)
    return {
        "cust": ci,
        "start": start,
        "first_product": np.full(len(ci), -1),
        "path": path,
        "focus": focus,
        "browse": browse,
        "no_order": np.zeros(len(ci), dtype=bool),
    }


def _funnel_steps(sessions: dict[str, np.ndarray], cust: _Customers, rng: np.random.Generator):
    """How far each session gets: number of product views, cart, checkout, order lines.

    Shopping sessions use the customer's funnel probabilities (see ``_Customers.funnel``).
    Window-shopping sessions never bounce, view several products of one category and at
    most leave something in the cart. Click-through sessions (``no_order``) browse and may
    cart but never order: the orders a newsletter causes come from the response model.
    """
    s = len(sessions["cust"])
    bounce, p_cart, p_checkout, p_purchase, _ = (a[sessions["cust"]] for a in cust.funnel())
    browse = sessions["browse"]
    clicked_in = sessions["first_product"] >= 0
    depth = np.where(
        browse,
        BROWSE_MIN_VIEWS + rng.poisson(BROWSE_EXTRA_VIEWS, s),
        1 + rng.poisson(np.where(sessions["focus"] >= 0, 1.2, 0.7)),
    )
    bounced = rng.random(s) < np.where(browse, 0.0, bounce)
    n_views = np.where(clicked_in, 1 + rng.poisson(0.8, s), np.where(bounced, 0, depth))
    cart = (n_views > 0) & (rng.random(s) < np.where(browse, P_BROWSE_CART, p_cart))
    checkout = cart & ~browse & (rng.random(s) < p_checkout)
    bought = checkout & (rng.random(s) < p_purchase) & ~sessions["no_order"]
    n_lines = np.where(bought, rng.choice([1, 2, 3], s, p=[0.7, 0.2, 0.1]), 0)
    return n_views, cart, checkout, n_lines


def _funnel_events(sessions, cust, catalog, cum_aff, rng) -> list[dict[str, np.ndarray]]:
    """Expand sessions into page views, product views, carts, checkouts and order lines.

    Each block carries ``session``, ``ordinal`` (position in the session) and ``gap``
    (seconds since the previous event of the session) besides the event columns.
    """
    n_views, cart, checkout, n_lines = _funnel_steps(sessions, cust, rng)
    s = len(n_views)
    pv = _part(s, etype=PAGE_VIEW, path=sessions["path"])
    pv.update(session=np.arange(s), ordinal=np.zeros(s, np.int64), gap=np.zeros(s, np.int64))
    v_sess = np.repeat(np.arange(s), n_views)
    v_rank = _group_rank(n_views)
    v_prod = _sample_products(
        sessions["cust"][v_sess], cum_aff, catalog, rng, sessions["focus"][v_sess]
    )
    first = sessions["first_product"][v_sess]
    v_prod = np.where((v_rank == 0) & (first >= 0), first, v_prod)
    views = _part(len(v_sess), etype=PRODUCT_VIEW, product=v_prod)
    views.update(session=v_sess, ordinal=1 + v_rank, gap=5 + rng.exponential(40, len(v_sess)))
    last_view = np.full(s, -1, dtype=np.int32)
    last_view[n_views > 0] = v_prod[np.cumsum(n_views)[n_views > 0] - 1]
    c_sess, k_sess = np.flatnonzero(cart), np.flatnonzero(checkout)
    carts = _part(len(c_sess), etype=ADD_TO_CART, product=last_view[c_sess])
    carts.update(
        session=c_sess, ordinal=1 + n_views[c_sess], gap=3 + rng.exponential(25, len(c_sess))
    )
    checks = _part(len(k_sess), etype=CHECKOUT)
    checks.update(
        session=k_sess, ordinal=2 + n_views[k_sess], gap=10 + rng.exponential(60, len(k_sess))
    )
    lines = _order_lines(sessions, n_views, n_lines, last_view, catalog, cum_aff, rng)
    return [pv, views, carts, checks, lines]


def _order_lines(sessions, n_views, n_lines, last_view, catalog, cum_aff, rng):
    """One purchase event per order line; the first line is the carted product."""
    p_sess = np.repeat(np.arange(len(n_views)), n_lines)
    rank = _group_rank(n_lines)
    extra = _sample_products(sessions["cust"][p_sess], cum_aff, catalog, rng)
    product = np.where(rank == 0, last_view[p_sess], extra)
    quantity = rng.choice(np.array([1, 2, 3]), len(p_sess), p=[0.82, 0.14, 0.04])
    order_of_session = np.cumsum(n_lines > 0) - 1
    lines = _part(
        len(p_sess),
        etype=PURCHASE,
        product=product,
        quantity=quantity,
        amount_cents=quantity * catalog.price_cents[product],
        order_no=order_of_session[p_sess],
    )
    gap = np.where(rank == 0, 15 + rng.exponential(60, len(p_sess)), 1)
    lines.update(session=p_sess, ordinal=3 + n_views[p_sess] + rank, gap=gap)
    return lines


def _simulate_web(cust, catalog, cum_aff, click_sessions, window, seed) -> dict[str, np.ndarray]:
    """All web events, timed within their session; sessions running past drop-out are cut."""
    rng = _rng(seed, "web")
    organic = _organic_sessions(cust, cum_aff, window, seed)
    sessions = {k: np.concatenate([organic[k], click_sessions[k]]) for k in organic}
    s = len(sessions["cust"])
    sticky = rng.random(s) < 0.8
    device = np.where(sticky, cust.device[sessions["cust"]], rng.integers(0, 3, s))
    parts = _funnel_events(sessions, cust, catalog, cum_aff, rng)
    web = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((web["ordinal"], web["session"]))
    web = {k: v[order] for k, v in web.items()}
    elapsed = np.cumsum(np.ceil(web["gap"]).astype(np.int64))
    firsts = np.flatnonzero(web["ordinal"] == 0)  # one page view per session, sorted
    web["ts"] = sessions["start"][web["session"]] + elapsed - elapsed[firsts][web["session"]]
    lasts = np.append(firsts[1:], len(elapsed)) - 1
    limit = cust.limit_ts(window)[sessions["cust"]]
    keep_session = web["ts"][lasts] < limit
    keep = keep_session[web["session"]]
    web["cust"] = sessions["cust"][web["session"]].astype(np.int32)
    web["device"] = device[web["session"]].astype(np.int8)
    return {k: v[keep] for k, v in web.items() if k not in ("ordinal", "gap")}


def _simulate_events(
    cust: _Customers,
    catalog: _Catalog,
    window: _Window,
    seed: int,
    model: ResponseModel = DEFAULT_RESPONSE_MODEL,
) -> tuple[dict[str, np.ndarray], _Assignments, dict]:
    """All good events sorted by time (final ids, category column), assignments, ground truth."""
    cum_aff = np.cumsum(cust.affinity, axis=1).astype(np.float32)
    email_parts, click_sessions, assignments = _simulate_email(
        cust, catalog, cum_aff, window, seed, model
    )
    web = _simulate_web(cust, catalog, cum_aff, click_sessions, window, seed)
    response, truth = _response_orders(
        assignments, cust, catalog, cum_aff, web, window, seed, model
    )
    events = _concat([web, *email_parts, response])
    order = np.argsort(events["ts"], kind="stable")
    events = {k: v[order] for k, v in events.items()}
    n = len(order)
    events["eid"] = _permute(np.arange(n), 48, seed, "event_id")
    has_session = events["session"] >= 0
    events["session"][has_session] = _permute(events["session"][has_session], 48, seed, "sid")
    has_order = events["order_no"] >= 0
    events["order_no"][has_order] = _permute(events["order_no"][has_order], 40, seed, "oid")
    has_product = events["product"] >= 0
    category = np.where(has_product, catalog.category[events["product"]], -1)
    events["category"] = category.astype(np.int8)
    return events, assignments, truth


# --- response model -----------------------------------------------------------------------------


def _response_orders(
    assign: _Assignments,
    cust: _Customers,
    catalog: _Catalog,
    cum_aff: np.ndarray,
    web: dict[str, np.ndarray],
    window: _Window,
    seed: int,
    model: ResponseModel,
) -> tuple[dict[str, np.ndarray], dict]:
    """Orders the newsletters cause (a short converting session each) and the ground truth.

    Every assignment gets a pre-drawn product, delay and uniform number, whatever its arm, so
    the potential outcome under every arm is known: it converts under arm ``v`` when
    ``u < base * conversion_lift[v]`` and the session ends before the customer drops out.
    """
    rng = _rng(seed, "response")
    n = len(assign.cust)
    base = _base_response_rate(cust.intent[assign.cust])
    u = rng.random(n)
    start = assign.ts + rng.integers(*RESPONSE_DELAY_S, size=n)
    product = _sample_products(assign.cust, cum_aff, catalog, rng)
    in_time = start + RESPONSE_SESSION_S[-1] < cust.limit_ts(window)[assign.cust]
    p_arm = np.minimum(1.0, base * model.lifts()[assign.arm, 2])
    converted = np.flatnonzero(in_time & (u < p_arm))
    k = len(converted)
    steps = (PAGE_VIEW, PRODUCT_VIEW, ADD_TO_CART, CHECKOUT, PURCHASE)
    session = np.arange(k) + (int(web["session"].max()) + 1 if len(web["session"]) else 0)
    order = np.arange(k) + (int(web["order_no"].max()) + 1 if len(web["order_no"]) else 0)
    buyer = assign.cust[converted]
    parts = []
    for step, offset in zip(steps, RESPONSE_SESSION_S, strict=True):
        is_product = step in (PRODUCT_VIEW, ADD_TO_CART, PURCHASE)
        parts.append(
            _part(
                k,
                cust=buyer,
                etype=step,
                ts=start[converted] + offset,
                product=product[converted] if is_product else -1,
                amount_cents=catalog.price_cents[product[converted]] if step == PURCHASE else -1,
                session=session,
                device=cust.device[buyer],
                order_no=order if step == PURCHASE else -1,
                quantity=1 if step == PURCHASE else 0,
                path=0 if step == PAGE_VIEW else -1,
            )
        )
    background = _orders_in_window(web, assign, GROUND_TRUTH_WINDOW_DAYS * DAY)
    truth = _ground_truth(
        model,
        assign,
        campaign_names=_campaigns(window)[1],
        window_end_ts=window.end_ts,
        base=base,
        respond_in_time=in_time,
        value=catalog.price_cents[product] / 100.0,
        background=background,
        open_prob=cust.open_prob[assign.cust],
        click_prob=cust.click_prob[assign.cust],
    )
    return _concat(parts), truth


def _base_response_rate(intent: np.ndarray) -> np.ndarray:
    """A customer's chance of an order in the days after a newsletter, without any email."""
    lo, hi = RESPONSE_BASE_RATE
    return lo + (hi - lo) * intent


def _orders_in_window(
    web: dict[str, np.ndarray], assign: _Assignments, window_s: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per assignment: whether the customer's *other* orders fall in [assigned_at, + window),
    and their value (EUR). These do not depend on the arm."""
    lines = web["etype"] == PURCHASE
    order_no, first = np.unique(web["order_no"][lines], return_index=True)
    value = np.bincount(
        np.searchsorted(order_no, web["order_no"][lines]),
        weights=web["amount_cents"][lines] / 100.0,
        minlength=len(order_no),
    )
    # one row per order: its customer and its time (the first line's)
    cust = web["cust"][lines][first].astype(np.int64)
    ts = web["ts"][lines][first]
    key = cust * (1 << 40) + ts
    order = np.argsort(key, kind="stable")
    key, value = key[order], value[order]
    cum = np.concatenate([[0.0], np.cumsum(value)])
    lo = np.searchsorted(key, assign.cust.astype(np.int64) * (1 << 40) + assign.ts, side="left")
    hi = np.searchsorted(
        key, assign.cust.astype(np.int64) * (1 << 40) + assign.ts + window_s, side="left"
    )
    return hi > lo, cum[hi] - cum[lo]


def _p_in_time(gap: np.ndarray, mean_s: float) -> np.ndarray:
    """P(exponential delay with this mean < gap), 0 for gaps <= 0."""
    return np.where(gap > 0, -np.expm1(-np.maximum(gap, 0) / mean_s), 0.0)


def _p_two_delays(gap: np.ndarray, mean_a: float, mean_b: float) -> np.ndarray:
    """P(sum of two independent exponential delays < gap) (hypoexponential CDF)."""
    la, lb = 1.0 / mean_a, 1.0 / mean_b
    x = np.maximum(gap, 0)
    cdf = 1.0 - (lb * np.exp(-la * x) - la * np.exp(-lb * x)) / (lb - la)
    return np.where(gap > 0, cdf, 0.0)


def _ground_truth(
    model: ResponseModel,
    assign: _Assignments,
    *,
    base: np.ndarray,
    respond_in_time: np.ndarray,
    value: np.ndarray,
    background: tuple[np.ndarray, np.ndarray],
    open_prob: np.ndarray,
    click_prob: np.ndarray,
    campaign_names: Sequence[str] | None = None,
    window_end_ts: int | None = None,
) -> dict:
    """True per-arm rates of every campaign, averaged over *all* its assigned customers.

    For arm ``v`` and assigned customer ``i`` (potential outcomes, whatever arm ``i`` got):
    open rate ``min(1, open_i * open_lift_v) * P(open before i's limit)``, CTR likewise times
    the click probability, conversion ``1 - (1 - bg_i) * (1 - c_i * min(1, base_i * lift_v))``
    and revenue ``bg_rev_i + c_i * min(1, base_i * lift_v) * value_i``, where ``bg`` are the
    customer's other orders in the window and ``c_i`` says the response would come in time.
    Open rate and CTR are per delivered email (undefined for the holdout); conversion rate and
    revenue are per assigned recipient, in ``GROUND_TRUTH_WINDOW_DAYS`` after assignment.
    """
    bg, bg_rev = background
    lifts = model.lifts()
    campaign_ids, campaign_idx = np.unique(assign.campaign, return_inverse=True)
    m = len(campaign_ids)
    gap = assign.email_limit - assign.ts - 30
    p_open_t = _p_in_time(gap, OPEN_DELAY_S)
    p_click_t = _p_two_delays(gap - 5, OPEN_DELAY_S, CLICK_DELAY_S)
    size = np.bincount(campaign_idx, minlength=m).astype(float)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(campaign_idx, weights=values, minlength=m) / size

    arms: dict[str, dict[str, np.ndarray]] = {}
    for a, name in enumerate(model.arms):
        p_open = np.minimum(1.0, open_prob * lifts[a, 0])
        p_resp = respond_in_time * np.minimum(1.0, base * lifts[a, 2])
        arms[name] = {
            "assigned": np.bincount(campaign_idx[assign.arm == a], minlength=m),
            "open_rate": mean(p_open * p_open_t),
            "ctr": mean(p_open * np.minimum(1.0, click_prob * lifts[a, 1]) * p_click_t),
            "conversion_rate": mean(1.0 - (1.0 - bg) * (1.0 - p_resp)),
            "revenue_per_recipient": mean(bg_rev + p_resp * value),
        }
    first = np.full(m, np.iinfo(np.int64).max)
    np.minimum.at(first, campaign_idx, assign.ts)
    last = np.zeros(m, dtype=np.int64)
    np.maximum.at(last, campaign_idx, assign.ts)
    shares = model.planned_shares()
    out = {}
    for j, cid in enumerate(campaign_ids.tolist()):
        name = campaign_names[cid] if campaign_names is not None else str(cid)
        out[name] = {
            "first_assigned_at": _iso(int(first[j])),
            "last_assigned_at": _iso(int(last[j])),
            "window_complete": bool(
                window_end_ts is None or last[j] + GROUND_TRUTH_WINDOW_DAYS * DAY <= window_end_ts
            ),
            "arms": {
                arm: {
                    "planned_share": shares[arm],
                    "assigned": int(cols["assigned"][j]),
                    "open_rate": None if arm == HOLDOUT else float(cols["open_rate"][j]),
                    "ctr": None if arm == HOLDOUT else float(cols["ctr"][j]),
                    "conversion_rate": float(cols["conversion_rate"][j]),
                    "revenue_per_recipient": float(cols["revenue_per_recipient"][j]),
                }
                for arm, cols in arms.items()
            },
        }
    return out


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


# --- event files -----------------------------------------------------------------------------


@dataclass
class _FileLayout:
    """Which good events land in which batch file."""

    names: list[str]  # relative path per file
    dates: list[date]  # folder date per file
    bounds: np.ndarray  # good rows of file f are bounds[f]:bounds[f + 1]
    file_of_row: np.ndarray


def _layout(ts: np.ndarray, window: _Window, files_per_day: int) -> _FileLayout:
    """Split each UTC day's time-sorted events into ``files_per_day`` consecutive batches."""
    day = (ts - window.start_ts) // DAY
    per_day = np.bincount(day, minlength=window.days)
    rank = np.arange(len(ts)) - (np.cumsum(per_day) - per_day)[day]
    slot = day * files_per_day + rank * files_per_day // np.maximum(per_day[day], 1)
    used, counts = np.unique(slot, return_counts=True)
    file_of_row = np.searchsorted(used, slot)
    dates = [window.start_date + timedelta(days=int(s // files_per_day)) for s in used]
    names = [
        event_file_name(d, int(s % files_per_day) + 1) for d, s in zip(dates, used, strict=True)
    ]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return _FileLayout(names, dates, bounds, file_of_row)


@dataclass
class _Injection:
    """One planted event problem: its source good row and where the line goes."""

    number: int
    kind: str
    row: int
    file: int
    pos: int  # inserted before this good line of the file (replace: the line replaced)
    fresh_id: str | None = None


def _kind_counts(kinds: dict, total: int) -> dict[str, int]:
    """Split ``total`` bad lines over kinds by weight, at least one each."""
    weight = sum(v[3] for v in kinds.values())
    return {k: max(1, round(total * v[3] / weight)) for k, v in kinds.items()}


def _plan_event_injections(
    events: dict[str, np.ndarray], layout: _FileLayout, bad_fraction: float, seed: int
) -> list[_Injection]:
    """Choose source rows and target positions for every planted event problem."""
    n = len(events["ts"])
    if bad_fraction <= 0 or n == 0:
        return []
    rng = _rng(seed, "inject_events")
    counts = _kind_counts(EVENT_INJECTIONS, round(bad_fraction * n))
    n_replace = sum(c for k, c in counts.items() if EVENT_INJECTIONS[k][2] == "replace")
    pool = rng.permutation(n)
    replace_rows, rest = pool[:n_replace], pool[n_replace:]
    if len(rest) == 0:
        rest = pool
    plan: list[_Injection] = []
    for kind, count in counts.items():
        if EVENT_INJECTIONS[kind][2] == "replace":
            rows, replace_rows = replace_rows[:count], replace_rows[count:]
        else:
            rows = rest[rng.integers(0, len(rest), count)]
        for row in rows.tolist():
            plan.append(_place(len(plan), kind, row, layout, rng))
    fresh = _permute(np.arange(n, n + len(plan)), 48, seed, "event_id")
    for item in plan:
        if EVENT_INJECTIONS[item.kind][2] == "add" and item.kind != "duplicate_event_id":
            item.fresh_id = f"e{int(fresh[item.number]):012x}"
    return plan


def _place(number: int, kind: str, row: int, layout: _FileLayout, rng) -> _Injection:
    """Target file and position: duplicates go after their source, others anywhere."""
    f = int(layout.file_of_row[row])
    size = int(layout.bounds[f + 1] - layout.bounds[f])
    pos = row - int(layout.bounds[f])
    if EVENT_INJECTIONS[kind][2] == "replace":
        return _Injection(number, kind, row, f, pos)
    if kind != "duplicate_event_id":
        return _Injection(number, kind, row, f, int(rng.integers(0, size + 1)))
    if rng.random() < 0.5 and f + 1 < len(layout.names):
        next_size = int(layout.bounds[f + 2] - layout.bounds[f + 1])
        return _Injection(number, kind, row, f + 1, int(rng.integers(0, next_size + 1)))
    return _Injection(number, kind, row, f, int(rng.integers(pos + 1, size + 1)))


def _dumps(obj: dict) -> str:
    """Compact JSON like the good lines."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _as_purchase(src: dict, item: _Injection, catalog: _Catalog) -> dict:
    """A valid-looking purchase built from a good source event (same user and time)."""
    if src["event_type"] == "purchase":
        return dict(src)
    product = src["product_id"] or product_id(item.number % len(catalog.names))
    index = int(product[1:])
    quantity = 1 + item.number % 2
    return dict(
        src,
        event_type="purchase",
        product_id=product,
        category=CATEGORY_NAMES[catalog.category[index]],
        amount=quantity * int(catalog.price_cents[index]) / 100,
        currency="EUR",
        campaign_id=None,
        variant=None,
        properties={"order_id": f"o{item.number:010x}", "quantity": quantity},
    )


def _bad_event(item: _Injection, src_line: str, folder: date, catalog: _Catalog) -> str:
    """The text of one planted line (without newline) derived from a good source line."""
    if item.kind == "duplicate_event_id":
        return src_line
    src = json.loads(src_line)
    bad = dict(src, event_id=item.fresh_id)
    i, kind = item.number, item.kind
    if kind == "invalid_json":
        text = _dumps(bad)
        return text[: len(text) * (3 + i % 5) // 10]
    elif kind == "missing_user_id":
        bad["user_id"] = None if i % 2 else ""
    elif kind == "missing_event_id":
        bad["event_id"] = None if i % 2 else ""
    elif kind == "unknown_event_type":
        bad["event_type"] = _BAD_EVENT_TYPES[i % len(_BAD_EVENT_TYPES)]
    elif kind == "invalid_timestamp":
        bad["timestamp"] = _BAD_TIMESTAMPS[i % len(_BAD_TIMESTAMPS)]
    elif kind == "future_timestamp":
        moment = datetime.combine(folder, datetime.min.time(), UTC) + timedelta(
            days=31 + i % 20, seconds=(i * 7919) % DAY
        )
        bad["timestamp"] = moment.isoformat()
    elif kind in ("invalid_amount", "negative_amount"):
        bad = _as_purchase(bad, item, catalog)
        bad["amount"] = _BAD_AMOUNTS[i % 3] if kind == "invalid_amount" else -19.99
    elif kind == "unknown_product_id":
        if bad["event_type"] not in ("product_view", "purchase"):
            bad = _as_product_view(bad)
        bad["product_id"] = f"p{999999 - i % 1000:06d}x"
    elif kind == "oversize_properties":
        blob = ("debug-" + f"{i:06d}") * (OVERSIZE_BYTES // 12 + 1)
        bad["properties"] = dict(bad["properties"], debug_blob=blob)
    return _dumps(bad)


def _as_product_view(src: dict) -> dict:
    """Recast a good event as a product view (web fields kept where present)."""
    return dict(
        src,
        event_type="product_view",
        amount=None,
        currency=None,
        campaign_id=None,
        variant=None,
        category=src["category"] or CATEGORY_NAMES[0],
        properties={},
    )


def _reformat_good(item: _Injection, line: str) -> str:
    """Kinds that keep the event but change its formatting (accepted by the warehouse)."""
    event = json.loads(line)
    if item.kind == "stray_case_whitespace":
        pad = ("  ", " ", "   ")[item.number % 3]
        event["user_id"] = f"{pad}{event['user_id'].upper()} "
        if event["product_id"] and item.number % 2 == 0:
            event["product_id"] = f" {event['product_id'].upper()}{pad}"
    else:
        offset = timezone(timedelta(minutes=_OFFSETS_MIN[item.number % len(_OFFSETS_MIN)]))
        event["timestamp"] = (
            datetime.fromisoformat(event["timestamp"]).astimezone(offset).isoformat()
        )
    return _dumps(event)


_RENDER_SQL = """
SELECT json_object(
    'event_id', printf('e%012x', eid),
    'user_id', printf('c%07d', cust),
    'event_type', $etypes[etype + 1],
    'timestamp', strftime(make_timestamp(ts * 1000000), '%Y-%m-%dT%H:%M:%S') || '+00:00',
    'product_id', CASE WHEN product >= 0 THEN printf('p%06d', product) END,
    'category', CASE WHEN category >= 0 THEN $categories[category + 1] END,
    'amount', CASE WHEN amount_cents >= 0 THEN amount_cents::DOUBLE / 100 END,
    'currency', CASE WHEN etype = 4 THEN 'EUR' END,
    'session_id', CASE WHEN session >= 0 THEN printf('s%012x', session) END,
    'device', CASE WHEN device >= 0 THEN $devices[device + 1] END,
    'campaign_id', CASE WHEN campaign >= 0 THEN $campaigns[campaign + 1] END,
    'variant', CASE WHEN variant >= 0 THEN $variants[variant + 1] END,
    'properties', CASE
        WHEN etype = 4 THEN json_object('order_id', printf('o%010x', order_no),
                                        'quantity', quantity)
        WHEN etype = 0 THEN json_object('path', $paths[path + 1])
        WHEN etype IN (5, 6, 7) THEN json_object('subject', $subjects[campaign * 2 + variant + 1])
        ELSE '{}'::JSON END
) || chr(10) AS line
FROM events ORDER BY rn
"""


class _EventWriter:
    """Renders good events with DuckDB and splices planted lines into the byte stream."""

    def __init__(self, landing: Path, events, layout: _FileLayout, plan, catalog, window):
        self.landing, self.events, self.layout, self.catalog = landing, events, layout, catalog
        self.by_source: dict[int, list[_Injection]] = {}
        for item in plan:
            self.by_source.setdefault(item.row, []).append(item)
        self.pending: dict[int, list[tuple[_Injection, str]]] = {}
        self.entries: list[dict] = []
        self.extra_lines = 0
        names = _campaigns(window)[1]
        self.params = {
            "etypes": list(EVENT_TYPES),
            "categories": list(CATEGORY_NAMES),
            "devices": list(DEVICES),
            "variants": list(VARIANTS),
            "campaigns": names or [""],
            "paths": list(BASE_PATHS)
            + [f"/c/{c}" for c in CATEGORY_NAMES]
            + [f"/campaign/{c}" for c in names],
            "subjects": _subjects(names) or [""],
        }

    def write_all(self) -> None:
        """Render and write every file, in chunks of about ``_RENDER_ROWS`` events."""
        con = duckdb.connect()
        con.execute("SET threads TO 2")
        bounds, f = self.layout.bounds, 0
        while f < len(self.layout.names):
            g = int(np.searchsorted(bounds, bounds[f] + _RENDER_ROWS, side="right")) - 1
            g = max(g, f + 1)
            self._write_chunk(con, f, g)
            f = g
        con.close()

    def _render(self, con, lo: int, hi: int) -> tuple[pa.Buffer, np.ndarray]:
        """JSON lines (with newlines) for good rows lo:hi as one buffer plus line offsets."""
        cols = {k: v[lo:hi] for k, v in self.events.items()}
        cols["rn"] = np.arange(hi - lo)
        con.register("events", pa.table(cols))
        arr = con.sql(_RENDER_SQL, params=self.params).to_arrow_table().column(0)
        arr = arr.combine_chunks().cast(pa.large_string())
        con.unregister("events")
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
            arr.offset : arr.offset + hi - lo + 1
        ]
        return arr.buffers()[2], offsets

    def _write_chunk(self, con, f_lo: int, f_hi: int) -> None:
        """Render files f_lo:f_hi, build their planted lines, write them."""
        lo, hi = int(self.layout.bounds[f_lo]), int(self.layout.bounds[f_hi])
        data, offsets = self._render(con, lo, hi)
        replaced: dict[int, dict[int, tuple[_Injection, str]]] = {}
        for row in [r for r in self.by_source if lo <= r < hi]:
            start, end = offsets[row - lo], offsets[row - lo + 1]
            line = data[start : end - 1].to_pybytes().decode()
            for item in self.by_source[row]:
                if EVENT_INJECTIONS[item.kind][2] == "replace":
                    replaced.setdefault(item.file, {})[item.pos] = (
                        item,
                        _reformat_good(item, line),
                    )
                else:
                    text = _bad_event(item, line, self.layout.dates[item.file], self.catalog)
                    self.pending.setdefault(item.file, []).append((item, text))
        for f in range(f_lo, f_hi):
            base = int(self.layout.bounds[f]) - lo
            size = int(self.layout.bounds[f + 1] - self.layout.bounds[f])
            self._write_file(f, data, offsets[base : base + size + 1], replaced.get(f, {}))

    def _write_file(self, f: int, data, offsets, replaced) -> None:
        """Write one batch file: good lines with replacements, planted lines inserted."""
        inserts = sorted(self.pending.pop(f, []), key=lambda x: (x[0].pos, x[0].number))
        path = self.landing / self.layout.names[f]
        path.parent.mkdir(parents=True, exist_ok=True)
        cuts = [(item.pos, 0, k, item, t) for k, (item, t) in enumerate(inserts)]
        cuts += [(pos, 1, 0, item, t) for pos, (item, t) in replaced.items()]
        cursor = 0
        tmp = _tmp_path(path)
        with open(tmp, "wb") as out:
            for pos, is_replace, k, item, text in sorted(cuts, key=lambda c: c[:3]):
                out.write(data[int(offsets[cursor]) : int(offsets[pos])].to_pybytes())
                out.write(text.encode() + b"\n")
                cursor = pos + is_replace
                line = pos + (k if not is_replace else _count_before(inserts, pos)) + 1
                self._record(item, f, line)
            out.write(data[int(offsets[cursor]) : int(offsets[-1])].to_pybytes())
        tmp.replace(path)
        self.extra_lines += len(inserts)

    def _record(self, item: _Injection, f: int, line: int) -> None:
        """Add the manifest entry for one planted line."""
        disposition, reason, mode, _ = EVENT_INJECTIONS[item.kind]
        if mode == "replace" or item.kind == "duplicate_event_id":
            event_id = f"e{int(self.events['eid'][item.row]):012x}"
        elif item.kind in ("invalid_json", "missing_event_id"):
            event_id = None
        else:
            event_id = item.fresh_id
        self.entries.append(
            {
                "source": "events",
                "kind": item.kind,
                "file": self.layout.names[f],
                "line": line,
                "event_id": event_id,
                "record_id": event_id,
                "disposition": disposition,
                "reason": reason,
            }
        )


def _count_before(inserts: list[tuple[_Injection, str]], pos: int) -> int:
    """Planted lines inserted before good line ``pos``."""
    return sum(1 for item, _ in inserts if item.pos <= pos)


# --- CSV files ---------------------------------------------------------------------------------


def _customer_rows(cust: _Customers) -> list[list[str]]:
    """The good CRM rows, in customer id order."""
    first = [FIRST_NAMES[i] for i in cust.first.tolist()]
    last = [LAST_NAMES[i] for i in cust.last.tolist()]
    domain = [EMAIL_DOMAINS[i] for i in cust.domain.tolist()]
    city = [CITIES[i] for i in cust.city.tolist()]
    columns = [
        [customer_id(i) for i in range(cust.n)],
        [f"{first[i][1]}.{last[i][1]}{i}@{domain[i]}" for i in range(cust.n)],
        [f[0] for f in first],
        [la[0] for la in last],
        [GENDERS[g] for g in cust.gender.tolist()],
        np.datetime_as_string(cust.birth).tolist(),
        [c[1] for c in city],
        [COUNTRIES[c[0]][0] for c in city],
        np.where(cust.tz_blank, "", np.array(ZONES, dtype=object)[cust.zone]).tolist(),
        np.datetime_as_string((cust.signup_ts // DAY).astype("datetime64[D]")).tolist(),
    ]
    for flag in (cust.email_consent, cust.tracking_consent, cust.unsubscribed):
        columns.append(np.where(flag, "true", "false").tolist())
    return [list(row) for row in zip(*columns, strict=True)]


def _insert_rows(
    rows: list[list[str]], extras: list[tuple[int, str, list[str]]], source: str, file: str
) -> tuple[list[list[str]], list[dict]]:
    """Insert (position, kind, row) extras before good row ``position``; manifest entries."""
    kinds = (
        CUSTOMER_INJECTIONS
        if source == "customers"
        else {"invalid_price": ("quarantined", "invalid_price")}
    )
    ordered = sorted(enumerate(extras), key=lambda e: (e[1][0], e[0]))
    out, entries, cursor = [], [], 0
    for k, (_, (pos, kind, row)) in enumerate(ordered):
        out.extend(rows[cursor:pos])
        cursor = pos
        out.append(row)
        disposition, reason = kinds[kind]
        entries.append(
            {
                "source": source,
                "kind": kind,
                "file": file,
                "line": pos + k + 1,
                "event_id": None,
                "record_id": row[0] or None,
                "disposition": disposition,
                "reason": reason,
            }
        )
    out.extend(rows[cursor:])
    return out, entries


def _customer_extras(rows: list[list[str]], bad_fraction: float, seed: int):
    """Bad CRM rows (fresh ids, a duplicate id) and in-place email case/whitespace noise."""
    n = len(rows)
    if bad_fraction <= 0 or n == 0:
        return []
    rng = _rng(seed, "inject_customers")
    per_kind = max(1, round(bad_fraction * n / 4))
    extras: list[tuple[int, str, list[str]]] = []
    picks = rng.permutation(n)
    fresh = n
    for j in range(per_kind):
        a = rng.integers(0, len(FIRST_NAMES))
        b = rng.integers(0, len(LAST_NAMES))
        template = list(rows[int(rng.integers(0, n))])
        first, last = FIRST_NAMES[a], LAST_NAMES[b]
        template[2], template[3] = first[0], last[0]
        bad_emails = (
            f"{first[1]}.{last[1]}@",
            f"no-at-sign.{first[1]}{fresh}.example.com",
            "@example.com",
        )
        row = [customer_id(fresh), bad_emails[j % 3], *template[2:]]
        extras.append((int(rng.integers(0, n + 1)), "invalid_email", row))
        row = ["", f"{first[1]}.{last[1]}{fresh + 1}@example.net", *template[2:]]
        extras.append((int(rng.integers(0, n + 1)), "missing_customer_id", row))
        fresh += 2
        src = int(picks[2 * j % n])
        row = [rows[src][0], f"{first[1]}.{last[1]}{fresh}@example.org", *template[2:]]
        extras.append((int(rng.integers(src + 1, n + 1)), "duplicate_customer_id", row))
        fresh += 1
    return extras


def _email_noise(rows: list[list[str]], bad_fraction: float, seed: int) -> list[int]:
    """Rewrite a few good emails as `` Jane.Doe123@Example.COM `` (still accepted)."""
    n = len(rows)
    if bad_fraction <= 0 or n == 0:
        return []
    rng = _rng(seed, "inject_customer_emails")
    per_kind = max(1, round(bad_fraction * n / 4))
    picks = rng.choice(n, size=min(per_kind, n), replace=False)
    for k, i in enumerate(sorted(picks.tolist())):
        local, domain = rows[i][1].split("@")
        name, tld = domain.rsplit(".", 1)
        rows[i][1] = f"{' ' * (1 + k % 2)}{local.title()}@{name.capitalize()}.{tld.upper()} "
    return [int(i) for i in sorted(picks.tolist())]


def _write_customers(landing: Path, cust: _Customers, bad_fraction: float, seed: int):
    """Write ``crm/customers.csv``; return (data rows, manifest entries)."""
    rows = _customer_rows(cust)
    noisy = _email_noise(rows, bad_fraction, seed)
    extras = _customer_extras(rows, bad_fraction, seed)
    out, entries = _insert_rows(rows, extras, "customers", CUSTOMERS_FILE)
    shift = sorted(e[0] for e in extras)
    for i in noisy:
        line = i + 1 + int(np.searchsorted(shift, i, side="right"))
        entries.append(
            {
                "source": "customers",
                "kind": "email_case_whitespace",
                "file": CUSTOMERS_FILE,
                "line": line,
                "event_id": None,
                "record_id": rows[i][0],
                "disposition": "accepted",
                "reason": None,
            }
        )
    _write_csv(landing / CUSTOMERS_FILE, CUSTOMER_COLUMNS, out)
    return len(out), entries


def _write_products(landing: Path, catalog: _Catalog, bad_fraction: float, seed: int):
    """Write ``catalog/products.csv``; bad prices only on extra rows with fresh ids."""
    n = len(catalog.names)
    cats, prices = catalog.category.tolist(), catalog.price_cents.tolist()
    stock = np.where(catalog.in_stock, "true", "false").tolist()
    rows = [
        [
            product_id(i),
            catalog.names[i],
            CATEGORY_NAMES[cats[i]],
            _money(prices[i]),
            "EUR",
            stock[i],
        ]
        for i in range(n)
    ]
    extras = []
    if bad_fraction > 0:
        rng = _rng(seed, "inject_products")
        for j in range(max(2, round(bad_fraction * n))):
            src = rows[int(rng.integers(0, n))]
            row = [
                product_id(n + j),
                src[1],
                src[2],
                _BAD_PRICES[j % len(_BAD_PRICES)],
                "EUR",
                src[5],
            ]
            extras.append((int(rng.integers(0, n + 1)), "invalid_price", row))
    out, entries = _insert_rows(rows, extras, "products", PRODUCTS_FILE)
    _write_csv(landing / PRODUCTS_FILE, PRODUCT_COLUMNS, out)
    return len(out), entries


def _money(cents: int) -> str:
    """Cents as a two-decimal string (``1999`` -> ``19.99``)."""
    return f"{cents // 100}.{cents % 100:02d}"


def _write_csv(path: Path, header: Sequence[str], rows: list[list[str]]) -> None:
    """UTF-8 CSV with ``\\n`` line endings and minimal quoting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(path)


def _tmp_path(path: Path) -> Path:
    """Write-then-rename: loaders never read ``*.tmp``, so half-written files stay invisible."""
    return path.with_name(path.name + ".tmp")


_ASSIGNMENT_SQL = """
COPY (
    SELECT campaign_id, customer_id, variant, assigned_at, planned_share FROM (
        SELECT position,
               $campaigns[campaign + 1] AS campaign_id,
               printf('c%07d', cust) AS customer_id,
               $arms[arm + 1] AS variant,
               strftime(make_timestamp(ts * 1000000), '%Y-%m-%dT%H:%M:%S') || '+00:00'
                   AS assigned_at,
               printf('%.4f', $shares[arm + 1]) AS planned_share
        FROM good
        UNION ALL
        SELECT position, campaign_id, customer_id, variant, assigned_at, planned_share FROM bad
    ) ORDER BY position
) TO '{path}' (HEADER, DELIMITER ',')
"""


def _write_assignments(
    landing: Path,
    assign: _Assignments,
    window: _Window,
    model: ResponseModel,
    bad_fraction: float,
    seed: int,
) -> tuple[int, list[dict]]:
    """Write ``experiments/assignments.csv`` (every arm, holdout included) with planted bad rows.

    Rows are in assignment order. Returns the number of data rows and the manifest entries.
    """
    order = np.lexsort((assign.cust, assign.ts))
    n = len(order)
    names = _campaigns(window)[1]
    shares = model.planned_shares()
    extras = _assignment_extras(assign, order, names, model, bad_fraction, seed)
    positions = np.array(sorted(pos for pos, _, _ in extras), dtype=np.int64)
    good_position = np.arange(n) + np.searchsorted(positions, np.arange(n), side="right")
    bad_rows, entries = [], []
    for k, (pos, kind, row) in enumerate(sorted(extras, key=lambda e: e[0])):
        bad_rows.append((pos + k, *row))
        disposition, reason = ASSIGNMENT_INJECTIONS[kind]
        entries.append(
            {
                "source": "assignments",
                "kind": kind,
                "file": ASSIGNMENTS_FILE,
                "line": pos + k + 1,
                "event_id": None,
                "record_id": row[1] or None,
                "disposition": disposition,
                "reason": reason,
            }
        )
    path = landing / ASSIGNMENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.register(
        "good",
        pa.table(
            {
                "position": good_position,
                "campaign": assign.campaign[order],
                "cust": assign.cust[order],
                "arm": assign.arm[order],
                "ts": assign.ts[order],
            }
        ),
    )
    bad_columns = ("position", *ASSIGNMENT_COLUMNS)
    con.register(
        "bad",
        pa.table(
            {
                c: pa.array([r[i] for r in bad_rows], type=pa.int64() if i == 0 else pa.string())
                for i, c in enumerate(bad_columns)
            }
        ),
    )
    params = {
        "campaigns": names or [""],
        "arms": model.arms,
        "shares": [shares[a] for a in model.arms],
    }
    con.execute(_ASSIGNMENT_SQL.format(path=str(tmp).replace("'", "''")), params)
    con.close()
    tmp.replace(path)
    return n + len(bad_rows), entries


def _assignment_extras(assign, order, names, model, bad_fraction: float, seed: int):
    """Bad assignment rows: (insert before good row, kind, CSV row as text)."""
    n = len(order)
    if bad_fraction <= 0 or n == 0:
        return []
    rng = _rng(seed, "inject_assignments")
    per_kind = max(1, round(bad_fraction * n / 40))
    shares = model.planned_shares()
    extras = []
    for kind in ASSIGNMENT_INJECTIONS:
        for _ in range(per_kind):
            src = int(rng.integers(0, n))
            j = order[src]
            arm = model.arms[int(assign.arm[j])]
            row = [
                names[int(assign.campaign[j])],
                customer_id(int(assign.cust[j])),
                arm,
                _iso(int(assign.ts[j])),
                f"{shares[arm]:.4f}",
            ]
            if kind == "missing_customer_id":
                row[1] = ""
                pos = int(rng.integers(0, n + 1))
            elif kind == "invalid_variant":
                row[2] = " "
                pos = int(rng.integers(0, n + 1))
            elif kind == "invalid_assigned_at":
                row[3] = _BAD_TIMESTAMPS[len(extras) % len(_BAD_TIMESTAMPS)]
                pos = int(rng.integers(0, n + 1))
            else:  # the same customer again, later in the file, in another arm: first row wins
                row[2] = model.arms[(int(assign.arm[j]) + 1) % len(model.arms)]
                pos = int(rng.integers(src + 1, n + 1))
            extras.append((pos, kind, row))
    return extras


# --- small simulated campaigns (for ground-truth tests of the analysis) ---------------------------


@dataclass
class SimulatedCampaigns:
    """Warehouse-shaped tables of simulated campaigns with planted effects, and their truth.

    ``events`` has the `fct_events` columns the attribution reads (sends, duplicated opens,
    clicks), ``orders`` the `fct_orders` columns, ``assignments`` the assignment-record columns
    (every arm, holdout included) and ``truth`` the true per-arm rates per campaign, shaped like
    the manifest's ``ground_truth["campaigns"]`` (window ``GROUND_TRUTH_WINDOW_DAYS``).
    """

    events: pd.DataFrame
    orders: pd.DataFrame
    assignments: pd.DataFrame
    truth: dict


def simulate_campaign_responses(
    seed: int,
    *,
    campaigns: int = 1,
    recipients: int = 2000,
    model: ResponseModel = DEFAULT_RESPONSE_MODEL,
    assignment_shares: dict[str, float] | None = None,
    background_orders_per_30d: float = 0.3,
    dropout_share: float = 0.1,
    start: datetime = datetime(2026, 6, 2, 7, tzinfo=UTC),
) -> SimulatedCampaigns:
    """Simulate ``campaigns`` independent campaigns of ``recipients`` customers each.

    The same response model as the sample shop: customers have their own base response
    rate (``RESPONSE_BASE_RATE`` by a random intent), open and click probabilities; arms are
    drawn with ``assignment_shares`` (default: the model's planned shares; pass other shares to
    inject a sample ratio mismatch); each arm multiplies the customer's probabilities by its
    lifts; the holdout gets nothing. Customers also order on their own (Poisson,
    ``background_orders_per_30d`` on average, heavy-tailed), and ``dropout_share`` of them stop
    acting within three days of the send. Fast and vectorised: thousands of campaigns a second.
    """
    rng = np.random.default_rng([seed, zlib.crc32(b"simulated_campaigns")])
    arms = model.arms
    planned = model.planned_shares()
    shares = assignment_shares or planned
    p = np.array([float(shares.get(a, 0.0)) for a in arms])
    n = campaigns * recipients
    camp = np.repeat(np.arange(campaigns), recipients)
    cust = np.arange(n)
    intent = rng.random(n) ** 1.5
    engagement = rng.normal(0, 1, n)
    open_prob = _sigmoid(-0.45 + 0.9 * engagement)
    click_prob = 0.08 + 0.3 * _sigmoid(engagement)
    arm = rng.choice(len(arms), size=n, p=p / p.sum())
    t0 = int(start.timestamp())
    ts = t0 + rng.integers(0, SEND_SPREAD_S, n)
    drops = rng.random(n) < dropout_share
    limit = np.where(drops, ts + rng.integers(0, 3 * DAY, n), NEVER)
    lifts = model.lifts()[arm]
    sent = arm != len(arms) - 1
    open_ts = ts + 30 + rng.exponential(OPEN_DELAY_S, n).astype(np.int64)
    opened = sent & (rng.random(n) < open_prob * lifts[:, 0]) & (open_ts < limit)
    click_ts = open_ts + 5 + rng.exponential(CLICK_DELAY_S, n).astype(np.int64)
    clicked = opened & (rng.random(n) < click_prob * lifts[:, 1]) & (click_ts < limit)
    # responses (pre-drawn for every arm) and the customers' own orders around the send
    base = _base_response_rate(intent)
    respond_at = ts + rng.integers(*RESPONSE_DELAY_S, size=n)
    value_cents = np.round(rng.lognormal(np.log(60) - 0.18, 0.6, n) * 100).astype(np.int64)
    respond_in_time = respond_at + RESPONSE_SESSION_S[-1] < limit
    responded = respond_in_time & (rng.random(n) < np.minimum(1.0, base * lifts[:, 2]))
    rate = rng.gamma(0.6, background_orders_per_30d / 0.6, n)
    n_bg = rng.poisson(rate * 20 / 30)
    bg_cust = np.repeat(cust, n_bg)
    bg_ts = ts[bg_cust] - 10 * DAY + rng.integers(0, 20 * DAY, len(bg_cust))
    keep = bg_ts < limit[bg_cust]
    bg_cust, bg_ts = bg_cust[keep], bg_ts[keep]
    bg_cents = np.round(rng.lognormal(np.log(50) - 0.18, 0.6, len(bg_cust)) * 100)
    background = {
        "etype": np.full(len(bg_cust), PURCHASE),
        "order_no": np.arange(len(bg_cust)),
        "amount_cents": bg_cents.astype(np.int64),
        "cust": bg_cust,
        "ts": bg_ts,
    }
    assign = _Assignments(cust, camp, arm, ts, limit, len(arms))
    truth = _ground_truth(
        model,
        assign,
        base=base,
        respond_in_time=respond_in_time,
        value=value_cents / 100.0,
        background=_orders_in_window(background, assign, GROUND_TRUTH_WINDOW_DAYS * DAY),
        open_prob=open_prob,
        click_prob=click_prob,
        campaign_names=[f"sim_{c:04d}" for c in range(campaigns)],
    )
    ids = pd.Series(cust).map("s{:08d}".format).to_numpy()
    names = np.array([f"sim_{c:04d}" for c in range(campaigns)], dtype=object)
    arm_names = np.array(arms, dtype=object)
    duplicate_open = opened & (rng.random(n) < 0.1)
    blocks = [
        (sent, "email_send", ts),
        (opened, "email_open", open_ts),
        (duplicate_open, "email_open", open_ts + 60),
        (clicked, "email_click", click_ts),
    ]
    events = pd.concat(
        [
            pd.DataFrame(
                {
                    "customer_id": ids[mask],
                    "event_type": kind,
                    "event_ts": pd.to_datetime(times[mask], unit="s"),
                    "campaign_id": names[camp[mask]],
                    "variant": arm_names[arm[mask]],
                }
            )
            for mask, kind, times in blocks
        ],
        ignore_index=True,
    )
    events.insert(0, "event_id", [f"ev{i:09d}" for i in range(len(events))])
    order_cust = np.concatenate([bg_cust, cust[responded]])
    orders = pd.DataFrame(
        {
            "order_id": [f"or{i:09d}" for i in range(len(order_cust))],
            "customer_id": ids[order_cust],
            "ordered_at": pd.to_datetime(
                np.concatenate([bg_ts, respond_at[responded] + RESPONSE_SESSION_S[-1]]), unit="s"
            ),
            "net_amount_base": np.concatenate([bg_cents, value_cents[responded]]) / 100.0,
            "is_cancellation": False,
        }
    )
    assignments = pd.DataFrame(
        {
            "campaign_id": names[camp],
            "customer_id": ids,
            "variant": arm_names[arm],
            "assigned_at": pd.to_datetime(ts, unit="s"),
            "planned_share": np.array([planned[a] for a in arms])[arm],
        }
    )
    return SimulatedCampaigns(events, orders, assignments, truth)


# --- entry points ---------------------------------------------------------------------------------


def _validate(customers, products, days, seed, bad_fraction, files_per_day) -> None:
    """Reject arguments the id formats or the model cannot represent."""
    if not 1 <= customers <= 9_000_000:
        raise ValueError("customers must be between 1 and 9,000,000")
    if not len(CATEGORIES) <= products <= 900_000:
        raise ValueError(f"products must be between {len(CATEGORIES)} and 900,000")
    if days < 1 or files_per_day < 1 or seed < 0:
        raise ValueError("days and files_per_day must be >= 1 and seed >= 0")
    if not 0 <= bad_fraction <= 0.2:
        raise ValueError("bad_fraction must be between 0 and 0.2")


def _clean_previous(landing: Path) -> None:
    """Remove event batches a previous run wrote, so counts always match the files."""
    for old in sorted(landing.glob("events/date=*/events_*.ndjson*")):
        old.unlink()
    for folder in sorted(landing.glob("events/date=*")):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def generate_sample_data(
    landing_dir: Path,
    *,
    customers: int = 5000,
    products: int = 500,
    days: int = 120,
    end_date: date = date(2026, 10, 31),
    seed: int = 42,
    bad_fraction: float = 0.01,
    files_per_day: int = 1,
    response_model: ResponseModel = DEFAULT_RESPONSE_MODEL,
) -> SampleManifest:
    """Write the shop's raw exports and the manifest into ``landing_dir``.

    Same arguments, same bytes. Old event batches from an earlier run are removed first;
    the CSVs and the manifest are overwritten. ``response_model`` plants the newsletters'
    true effects and holdout share; the manifest's ``ground_truth`` holds the resulting true
    rates per campaign and arm.
    """
    _validate(customers, products, days, seed, bad_fraction, files_per_day)
    landing = Path(landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    _clean_previous(landing)
    window = _Window(end_date, days)
    catalog = _build_catalog(products, seed)
    cust = _simulate_customers(customers, window, seed)
    events, assignments, truth = _simulate_events(cust, catalog, window, seed, response_model)
    layout = _layout(events["ts"], window, files_per_day)
    plan = _plan_event_injections(events, layout, bad_fraction, seed)
    writer = _EventWriter(landing, events, layout, plan, catalog, window)
    writer.write_all()
    customer_rows, customer_entries = _write_customers(landing, cust, bad_fraction, seed)
    product_rows, product_entries = _write_products(landing, catalog, bad_fraction, seed)
    assignment_rows, assignment_entries = _write_assignments(
        landing, assignments, window, response_model, bad_fraction, seed
    )
    entries = sorted(writer.entries, key=lambda e: (e["file"], e["line"]))
    entries += sorted(customer_entries, key=lambda e: e["line"])
    entries += sorted(product_entries, key=lambda e: e["line"])
    entries += assignment_entries
    params = {
        "customers": customers,
        "products": products,
        "days": days,
        "end_date": end_date.isoformat(),
        "seed": seed,
        "bad_fraction": bad_fraction,
        "files_per_day": files_per_day,
        "response_model": response_model.to_dict(),
    }
    counts = _counts(
        len(events["ts"]),
        writer.extra_lines,
        len(layout.names),
        customer_rows,
        product_rows,
        entries,
    )
    quarantined = sum(1 for e in assignment_entries if e["disposition"] == "quarantined")
    counts.update(
        assignments_rows=assignment_rows,
        expected_assignments_accepted=assignment_rows - quarantined,
        expected_assignments_quarantined=quarantined,
    )
    ground_truth = {
        "window_days": GROUND_TRUTH_WINDOW_DAYS,
        "response_model": response_model.to_dict(),
        "campaigns": truth,
    }
    manifest = SampleManifest(GENERATOR_VERSION, seed, params, counts, entries, ground_truth)
    tmp = _tmp_path(landing / MANIFEST_NAME)
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    tmp.replace(landing / MANIFEST_NAME)
    return manifest


def _counts(
    good: int, extra: int, files: int, customer_rows: int, product_rows: int, entries
) -> dict:
    """Manifest counts; expected dispositions follow from the planted entries."""

    def tally(source: str, disposition: str) -> int:
        return sum(1 for e in entries if e["source"] == source and e["disposition"] == disposition)

    quarantined, duplicates = tally("events", "quarantined"), tally("events", "duplicate")
    return {
        "event_lines": good + extra,
        "event_files": files,
        "customers_rows": customer_rows,
        "products_rows": product_rows,
        "expected_events_accepted": good + extra - quarantined - duplicates,
        "expected_events_quarantined": quarantined,
        "expected_events_duplicates": duplicates,
        "expected_customers_accepted": customer_rows - tally("customers", "quarantined"),
        "expected_customers_quarantined": tally("customers", "quarantined"),
        "expected_products_accepted": product_rows - tally("products", "quarantined"),
        "expected_products_quarantined": tally("products", "quarantined"),
    }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; explicit flags override the ``--scale`` preset."""
    parser = argparse.ArgumentParser(description="Generate sample landing-zone data.")
    parser.add_argument("--landing-dir", type=Path, default=Path("data/landing"))
    parser.add_argument("--scale", choices=sorted(SCALE_PRESETS), default="demo")
    parser.add_argument("--customers", type=int)
    parser.add_argument("--products", type=int)
    parser.add_argument("--days", type=int)
    parser.add_argument("--end-date", type=date.fromisoformat, default=date(2026, 10, 31))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--files-per-day", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> SampleManifest:
    """CLI entry point: generate the data and print a one-line summary."""
    args = _parse_args(argv)
    sizes = dict(SCALE_PRESETS[args.scale])
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    started = time.perf_counter()
    manifest = generate_sample_data(
        args.landing_dir,
        end_date=args.end_date,
        seed=args.seed,
        bad_fraction=args.bad_fraction,
        files_per_day=args.files_per_day,
        **sizes,
    )
    c = manifest.counts
    print(
        f"sample data: {c['event_lines']} event lines in {c['event_files']} files, "
        f"{c['customers_rows']} customer rows, {c['products_rows']} product rows, "
        f"{len(manifest.injected)} planted issues -> {args.landing_dir} "
        f"({time.perf_counter() - started:.1f}s)"
    )
    return manifest


if __name__ == "__main__":
    main()
