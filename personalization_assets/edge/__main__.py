"""`python -m personalization_assets.edge collector|api [--host H] [--port N]` starts a service."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from personalization_assets.edge.settings import load_edge_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m personalization_assets.edge")
    parser.add_argument("service", choices=["collector", "api"])
    parser.add_argument("--host", help="default: edge.yaml")
    parser.add_argument("--port", type=int, help="default: edge.yaml")
    parser.add_argument("--config-dir", type=Path, help="default: PERSONALIZATION_CONFIG_DIR")
    args = parser.parse_args(argv)
    settings = load_edge_settings(args.config_dir)
    section = settings.collector if args.service == "collector" else settings.api
    if args.service == "collector":
        from personalization_assets.edge.collector import create_collector_app

        app = create_collector_app(settings)
    else:
        from personalization_assets.edge.send_time import create_send_time_app

        app = create_send_time_app(settings)
    uvicorn.run(
        app,
        host=args.host or section.host,
        port=args.port if args.port is not None else section.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
