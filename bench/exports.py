"""Figure 5: dataset export of 1,000,000 decided steps to openai-sft and jsonl, rows/s beside a
raw baseline (the same rows through a bare server-side cursor, written with json.dumps), and
the export's peak RSS growth over its RSS at 10,000 rows.

Each measurement runs in a fresh subprocess (`python -m bench.exports measure ...`), so the
fixture's memory does not count and VmHWM is the export's own peak."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.db import DatabaseError, connection

from bench.db import insert_rows
from bench.report import Figure

PREFIX = "exp"
SYSTEM = "You are the Acme support agent. Be brief and friendly. Use tools to look up orders before answering."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up an order by id.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    }
]
TARGET_ROWS_PER_S = 50_000
TARGET_RSS_MIB = 100


def create_export_fixtures(count: int) -> None:
    """`count` decided steps (70% approved, 20% corrected, 10% rejected), each with its resolved
    review item, one review with rubric labels and the decision; ~1% carry an email address.
    Inserted with INSERT ... SELECT FROM generate_series (not through the API)."""
    from django.contrib.auth import get_user_model

    from reviewqueue.core.models import Agent, Step
    from reviewqueue.review.models import Decision, Queue, Review, ReviewItem

    agent = Agent.objects.create(name="bench-export")
    queue = Queue.objects.create(slug="bench-export", name="Bench export queue")
    reviewer = get_user_model().objects.create_user("bench-export-reviewer", password=None)
    status = "(CASE WHEN mod(g, 10) < 7 THEN 'approved' WHEN mod(g, 10) < 9 THEN 'corrected' ELSE 'rejected' END)"
    now = "statement_timestamp() - interval '2 hours' + g * interval '1 millisecond'"
    step_input = (
        "jsonb_build_object('messages', jsonb_build_array("
        "jsonb_build_object('role', 'system', 'content', %s::text), "
        "jsonb_build_object('role', 'user', 'content', 'Where is my order A' || g || '?' || "
        "CASE WHEN mod(g, 100) = 0 THEN ' Mail me at user' || g || '@example.com' ELSE '' END), "
        "jsonb_build_object('role', 'assistant', 'content', NULL, 'tool_calls', jsonb_build_array(jsonb_build_object("
        "'id', 'call_' || g, 'type', 'function', 'function', jsonb_build_object('name', 'get_order_status', "
        "'arguments', '{\"order_id\": \"A' || g || '\"}')))), "
        "jsonb_build_object('role', 'tool', 'tool_call_id', 'call_' || g, 'content', "
        '\'{"status": "shipped", "eta": "2026-11-27"}\')), \'tools\', %s::jsonb)'
    )
    insert_rows(
        Step,
        count,
        {
            "agent_id": "%s",
            "external_id": "%s || '-' || g",
            "kind": "(ARRAY['final_answer', 'llm'])[1 + mod(g, 2)]",
            "name": "'gpt-4o-mini'",
            "input": step_input,
            "output": "jsonb_build_object('role', 'assistant', 'content', "
            "'Your order A' || g || ' has shipped and should arrive on 27 November.')",
            "confidence": "mod(g, 50) / 100.0",
            "status": status,
            "created_at": now,
            "updated_at": now,
        },
        [agent.id, PREFIX, SYSTEM, json.dumps(TOOLS)],
    )
    join = "JOIN core_step s ON s.agent_id = %s AND s.external_id = %s || '-' || g"
    insert_rows(
        ReviewItem,
        count,
        {
            "queue_id": "%s",
            "step_id": "s.id",
            "status": "'resolved'",
            "reviews_count": "1",
            "created_at": now,
            "resolved_at": now,
        },
        [queue.id],
        source=join,
        source_params=[agent.id, PREFIX],
    )
    join_item = join + " JOIN review_reviewitem i ON i.step_id = s.id"
    corrected = (
        "jsonb_build_object('role', 'assistant', 'content', "
        "'Order A' || g || ' shipped on Monday; it arrives by Thursday.')"
    )
    verdict = "(CASE WHEN mod(g, 10) < 7 THEN 'approve' WHEN mod(g, 10) < 9 THEN 'correct' ELSE 'reject' END)"
    insert_rows(
        Review,
        count,
        {
            "item_id": "i.id",
            "reviewer_id": "%s",
            "verdict": verdict,
            "output": f"CASE WHEN mod(g, 10) BETWEEN 7 AND 8 THEN {corrected} ELSE NULL END",
            "reason": "CASE WHEN mod(g, 10) = 9 THEN 'Wrong order status.' ELSE '' END",
            "labels": "jsonb_build_object('tone', 'ok')",
            "created_at": now,
        },
        [reviewer.id],
        source=join_item,
        source_params=[agent.id, PREFIX],
    )
    insert_rows(
        Decision,
        count,
        {
            "step_id": "s.id",
            "item_id": "i.id",
            "verdict": status,
            # A decision's output is jsonb; a step's is json (WholeJSONField).
            "output": f"CASE WHEN mod(g, 10) < 7 THEN s.output::jsonb WHEN mod(g, 10) < 9 THEN {corrected} END",
            "reason": "CASE WHEN mod(g, 10) = 9 THEN 'Wrong order status.' ELSE '' END",
            "reviewer_id": "%s",
            "method": "'single'",
            "decided_at": now,
        },
        [reviewer.id],
        source=join_item,
        source_params=[agent.id, PREFIX],
    )
    with connection.cursor() as cursor:
        # What autovacuum would have done on a live system, where decided steps are exported long
        # after they were written: otherwise the first export pays for setting the new rows'
        # hint bits (writing the pages back) and, from the review tables on, measures that.
        cursor.execute("VACUUM (ANALYZE) core_step, review_reviewitem, review_review, review_decision, core_attachment")
    settle_writes()


def settle_writes() -> None:
    """Have the fixture's writes on disk before anything is measured, as they would be long since
    on a live system: a checkpoint (PostgreSQL's dirty buffers, written to the page cache) and a
    sync (the page cache's gigabytes of dirty pages, which the kernel would otherwise write back,
    on the same CPUs, during the first measurements)."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        try:
            cursor.execute("CHECKPOINT")  # a superuser's (or pg_checkpoint's) right
        except DatabaseError as exc:
            print(f"bench:   no CHECKPOINT ({exc}); measuring with the fixture's buffers dirty", flush=True)
    os.sync()
    print(f"bench:   fixture's writes settled in {time.monotonic() - started:.1f}s", flush=True)


# --- what runs in the subprocess -----------------------------------------------------------------


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids.extend(int(pid) for pid in (task / "children").read_text().split())
    return pids


def _family_rss_kib() -> int:
    """VmRSS of this process plus its children's (a parallel export's workers)."""
    from evals.parallel import rss_kib

    return rss_kib("VmRSS") + sum(rss_kib("VmRSS", pid) for pid in _children())


def _measure(kind: str, out: Path) -> dict[str, float]:
    import django

    django.setup()
    from evals.parallel import rss_kib

    marks: dict[str, float] = {}
    started = time.perf_counter()
    if kind == "raw":
        marks.update(_raw_baseline(out))
    else:
        from evals.services import export_to_path

        def progress(cases_read: int, rows: int) -> None:
            # Progress from several processes comes in steps of 1,000 per process: the first report
            # at or past 10,000 rows. The RSS is the sum over the export's processes.
            if cases_read >= 10_000 and "rss_at_10k_kib" not in marks:
                marks["rss_at_10k_kib"] = _family_rss_kib()

        result = export_to_path(fmt_name=kind, out=out, filters={}, progress=progress)
        marks.update(cases=result.cases_read, rows=result.rows, redactions=sum(result.redactions.values()))
        marks["seconds"] = time.perf_counter() - started
        # Each process's own peak, summed (an upper bound of the peak of their sum).
        marks["peak_kib"] = rss_kib("VmHWM") + sum(worker["peak_rss_kib"] for worker in result.workers)
        marks["processes"] = 1 + len(result.workers)
        return marks
    marks["seconds"] = time.perf_counter() - started
    marks["peak_kib"] = rss_kib("VmHWM")
    marks["processes"] = 1
    return marks


def _raw_baseline(out: Path) -> dict[str, float]:
    """The same rows through a bare server-side cursor, each written with json.dumps."""
    from evals.parallel import rss_kib

    marks: dict[str, float] = {}
    rows = 0
    with connection.cursor() as outer, open(out, "w", encoding="utf-8") as handle:
        raw = outer.connection  # the psycopg connection
        with raw.transaction(), raw.cursor(name="bench_raw_export") as cursor:
            cursor.itersize = 2000
            cursor.execute(
                "SELECT s.id, s.kind, s.input, s.output, s.status, d.output, d.reason "
                "FROM core_step s JOIN review_decision d ON d.step_id = s.id ORDER BY s.id"
            )
            for row in cursor:
                handle.write(json.dumps(row) + "\n")
                rows += 1
                if rows == 10_000:
                    marks["rss_at_10k_kib"] = rss_kib("VmRSS")
    marks.update(cases=rows, rows=rows)
    return marks


def measure_in_subprocess(kind: str, directory: Path) -> dict[str, float]:
    out = directory / f"{kind}.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.exports", "measure", kind, str(out)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} export failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["size_mib"] = out.stat().st_size / 2**20
    # Each measurement starts alike: the kernel would otherwise still be writing this file's
    # gigabyte of dirty pages back to disk during the next one.
    for written in directory.iterdir():
        if written.is_file():
            written.unlink()
    return result


def figure_exports(count: int) -> list[Figure]:
    print(f"bench:   inserting {count:,} decided steps ...", flush=True)
    t0 = time.monotonic()
    create_export_fixtures(count)
    print(f"bench:   fixtures in {time.monotonic() - t0:.1f}s", flush=True)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="rq-bench-export-") as tmp:
        directory = Path(tmp)
        raw = measure_in_subprocess("raw", directory)
        raw_rate = raw["cases"] / raw["seconds"]
        print(f"bench:   raw baseline {raw_rate:,.0f} rows/s", flush=True)
        for key, fmt in (("5a", "openai-sft"), ("5b", "jsonl")):
            result = measure_in_subprocess(fmt, directory)
            rate = result["cases"] / result["seconds"]
            growth_mib = (result["peak_kib"] - result["rss_at_10k_kib"]) / 1024
            detail = {**result, "raw": raw}
            print(f"bench:   {fmt} {rate:,.0f} rows/s, peak RSS +{growth_mib:.1f} MiB over 10k rows", flush=True)
            figures.append(
                Figure(
                    key,
                    f"export {count:,} decided steps to {fmt} (rows read/s)",
                    rate,
                    "rows/s",
                    "bare cursor + json.dumps",
                    raw_rate,
                    f">= {TARGET_ROWS_PER_S:,} rows/s",
                    rate >= TARGET_ROWS_PER_S,
                    detail,
                )
            )
            figures.append(
                Figure(
                    key + "-rss",
                    f"{fmt}: peak RSS growth over RSS at 10,000 rows",
                    growth_mib,
                    "MiB",
                    "raw baseline growth",
                    (raw["peak_kib"] - raw["rss_at_10k_kib"]) / 1024,
                    f"<= {TARGET_RSS_MIB} MiB",
                    growth_mib <= TARGET_RSS_MIB,
                    detail,
                )
            )
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "measure":
        print(json.dumps(_measure(sys.argv[2], Path(sys.argv[3]))))
    else:
        raise SystemExit("usage: python -m bench.exports measure raw|FORMAT OUT")
