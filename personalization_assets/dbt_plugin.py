"""dbt-duckdb profile plugin: the pseudonym key's HMAC pads as DuckDB variables.

Registered in `dbt_project/profiles.yml` (`plugins: - module: personalization_assets.dbt_plugin`).
dbt-duckdb calls `configure_connection` for the connection it opens and `configure_cursor` for
every cursor it runs a model on (DuckDB variables do not carry over to cursors), so the
`customer_key(...)` macro can compute `pseudonym.customer_hash` in SQL while the key itself
never appears in compiled SQL, `target/` files or logs. The key comes from the environment
(`PERSONALIZATION_PSEUDONYM_KEY`), read when dbt opens the connection.
"""

from dbt.adapters.duckdb.plugins import BasePlugin

from personalization_assets.defs.privacy import pseudonym


class Plugin(BasePlugin):
    def configure_connection(self, conn) -> None:
        pseudonym.configure_duckdb(conn)

    def configure_cursor(self, cursor) -> None:
        pseudonym.configure_duckdb(cursor)
