"""`python -m bench [--quick] [--only 1,2,3,4,5,6,7]`: every figure beside its baseline, on PostgreSQL.

Recreates the database named by DATABASE_URL (default postgres://postgres@127.0.0.1:5432/rq_bench),
migrates it, starts gunicorn on 127.0.0.1, measures, prints a table and writes
bench/results/latest.json. See bench/README.md."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable

from bench.db import database_url, migrate, recreate_database
from bench.report import Figure, render_table, write_json

SIZES = {
    "full": {
        "batch_steps": 40_000,
        "batch_connections": 3,
        "single_requests": 1000,
        "depth": 100_000,
        "small_depth": 1_000,
        "reviewers": 8,
        "review_seconds": 20.0,
        "think_ms": 50.0,
        "depth_rounds": 150,
        "page_requests": 200,
        "export_rows": 1_000_000,
        "waiters": 1000,
        "otlp_traces": 2000,
    },
    "quick": {
        "batch_steps": 10_000,
        "batch_connections": 3,
        "single_requests": 300,
        "depth": 100_000,
        "small_depth": 1_000,
        "reviewers": 8,
        "review_seconds": 6.0,
        "think_ms": 50.0,
        "depth_rounds": 50,
        "page_requests": 60,
        "export_rows": 100_000,
        "waiters": 1000,
        "otlp_traces": 500,
    },
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 2 minutes)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="comma-separated figure numbers (default: all)")
    parser.add_argument(
        "--workers", type=int, default=4, help="gunicorn workers (default 4, as the README's production command)"
    )
    parser.add_argument("--settings", default="bench.settings", help="Django settings module (default bench.settings)")
    return parser.parse_args(argv)


def failed_figure(key: str, title: str, error: BaseException) -> Figure:
    return Figure(key, f"{title}: ERROR {type(error).__name__}: {error}"[:110], math.nan, "", "", math.nan, "", False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = SIZES["quick" if args.quick else "full"]
    only = {part.strip() for part in args.only.split(",")}
    url = database_url()
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production-use-0123456789")
    os.environ["DEBUG"] = "0"
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1"

    started = time.monotonic()
    print(f"bench: recreating {url.rsplit('/', 1)[-1]} and migrating ...", flush=True)
    recreate_database(url)
    import django

    django.setup()
    migrate()

    from bench import agents, ingest, review, ui
    from bench.server import Gunicorn

    agents.raise_open_files_limit()

    figures: list[Figure] = []

    def measure(key: str, title: str, run: Callable[[], list[Figure]]) -> None:
        print(f"bench: {title} ...", flush=True)
        t0 = time.monotonic()
        try:
            figures.extend(run())
        except Exception as error:  # one missing piece must not hide the other figures
            traceback.print_exc()
            figures.append(failed_figure(key, title, error))
        print(f"bench:   done in {time.monotonic() - t0:.1f}s", flush=True)

    ingest.create_routing_config()
    with Gunicorn(database_url=url, workers=args.workers) as server:
        port = server.port
        if "1" in only:
            measure(
                "1",
                "batch ingest",
                lambda: ingest.figure_batch_ingest(
                    port, total_steps=sizes["batch_steps"], concurrency=sizes["batch_connections"]
                ),
            )
        if "2" in only:
            measure(
                "2", "single-step ingest", lambda: ingest.figure_single_ingest(port, requests=sizes["single_requests"])
            )
        if "3" in only or "4" in only:
            print(f"bench: creating {sizes['depth']:,} + {sizes['small_depth']:,} queued items ...", flush=True)
            t0 = time.monotonic()
            fixtures = review.create_review_fixtures(
                depth=sizes["depth"], small_depth=sizes["small_depth"], reviewers=sizes["reviewers"]
            )
            print(f"bench:   done in {time.monotonic() - t0:.1f}s", flush=True)
            if "3" in only:
                measure(
                    "3",
                    "claim + review",
                    lambda: review.figure_claim_review(
                        port,
                        fixtures,
                        seconds=sizes["review_seconds"],
                        depth_rounds=sizes["depth_rounds"],
                        think_ms=sizes["think_ms"],
                    ),
                )
            if "4" in only:
                measure(
                    "4",
                    "review page",
                    lambda: ui.figure_review_page(port, fixtures, requests=sizes["page_requests"]),
                )
        if "7" in only:
            measure(
                "7",
                "OTLP ingest vs REST batch",
                lambda: agents.figure_otlp(port, traces=sizes["otlp_traces"], connections=sizes["batch_connections"]),
            )
    if "6" in only:
        measure("6", "1,000 long-polling agents", lambda: agents.figure_long_poll(url, waiters=sizes["waiters"]))

    if "5" in only:
        from bench import exports

        measure("5", "dataset exports", lambda: exports.figure_exports(sizes["export_rows"]))

    elapsed = time.monotonic() - started
    print()
    print(render_table(figures))
    settings = {
        "mode": "quick" if args.quick else "full",
        "gunicorn_workers": args.workers,
        **sizes,
        "seconds": elapsed,
    }
    path = write_json(figures, settings=settings)
    print(f"\nbench: {elapsed:.0f}s in all; results in {path}")
    return 0 if all(fig.passed is not False for fig in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
