"""The landing-zone data contract shared by the generator, the loaders and the rule language.

The JSON Schema of one event line is `contracts/event.schema.json`; the dbt project repeats the
event types in its `event_types` var (dbt cannot import Python), and a test keeps them equal.
"""

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "add_to_cart",
    "checkout",
    "purchase",
    "email_send",
    "email_open",
    "email_click",
    "unsubscribe",
    "preference_update",
)

CUSTOMER_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "gender",
    "birth_date",
    "city",
    "country",
    "timezone",
    "signup_date",
    "email_consent",
    "tracking_consent",
    "unsubscribed",
)

PRODUCT_COLUMNS: tuple[str, ...] = (
    "product_id",
    "name",
    "category",
    "price",
    "currency",
    "in_stock",
)
