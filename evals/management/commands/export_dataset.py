"""`manage.py export_dataset --format F --out PATH [--dataset NAME | --version ID] [filters]`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evals import selectors, services
from evals.exporting import manifest_path_for
from evals.formats import NAMES
from evals.models import Dataset, DatasetVersion, VersionStatus


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int | None, stream: Any) -> None:
        self.total, self.stream = total, stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.started = time.monotonic()

    def __call__(self, cases_read: int, rows: int) -> None:
        if not self.enabled:
            return
        rate = cases_read / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            done = min(cases_read / self.total, 1.0)
            bar = "#" * int(done * 30)
            line = f"\r[{bar:<30}] {done:6.1%} {cases_read:,}/{self.total:,} read, {rows:,} written, {rate:,.0f}/s"
        else:
            line = f"\r{cases_read:,} read, {rows:,} written, {rate:,.0f}/s"
        self.stream.write(line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


class Command(BaseCommand):
    help = "Export decided steps (a dataset version, or an ad-hoc filter) in one format, with a manifest."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # `--version ID` is the documented option: it replaces Django's own --version.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", required=True, choices=NAMES)
        parser.add_argument("--out", required=True, help="data file to write (the manifest goes beside it)")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--dataset", help="export this dataset's latest version (frozen now if it has none)")
        source.add_argument("--version", type=int, help="export this DatasetVersion id")
        parser.add_argument("--freeze", action="store_true", help="with --dataset: freeze a new version first")
        parser.add_argument("--queue", action="append", default=[], help="queue slug (repeatable)")
        parser.add_argument("--agent", action="append", default=[], help="agent name (repeatable)")
        parser.add_argument("--since", help="decided on or after (ISO date or date-time)")
        parser.add_argument("--until", help="decided on or before (ISO date or date-time)")
        parser.add_argument("--split", choices=services.SPLITS, default="all")
        parser.add_argument("--include-auto-approved", action="store_true", help="add auto-approved steps, marked")
        parser.add_argument("--no-redact", action="store_true", help="do not redact PII (ad-hoc exports)")
        parser.add_argument("--manifest", help="manifest path (default: <out stem>.manifest.jsonl)")

    def handle(self, *args: Any, **options: Any) -> None:
        version = self._version(options)
        filters: dict[str, Any] = {}
        if version is None:
            raw = {
                "queues": options["queue"],
                "agents": options["agent"],
                "since": options["since"],
                "until": options["until"],
                "include_auto_approved": options["include_auto_approved"],
            }
            try:
                filters = selectors.clean_filters(raw)
            except selectors.FilterError as exc:
                raise CommandError(f"bad filter: {exc}") from None
        elif any(options[k] for k in ("queue", "agent", "since", "until", "include_auto_approved")):
            raise CommandError("--queue/--agent/--since/--until/--include-auto-approved apply to ad-hoc exports only")
        total = version.case_count if version else selectors.decided_steps(filters=filters).count()
        progress = Progress(total, sys.stderr)
        out = Path(options["out"])
        try:
            result = services.export_to_path(
                fmt_name=options["format"],
                out=out,
                version=version,
                filters=filters,
                split=options["split"],
                redact=not options["no_redact"],
                manifest=Path(options["manifest"]) if options["manifest"] else None,
                progress=progress,
            )
        except (ValueError, OSError) as exc:  # a bad --out or --manifest, a full disk: nothing is left behind
            raise CommandError(str(exc)) from None
        progress.finish()
        manifest = Path(options["manifest"]) if options["manifest"] else manifest_path_for(out)
        skipped = sum(result.skipped.values())
        self.stdout.write(
            f"wrote {result.rows:,} {options['format']} records to {out} "
            f"({result.cases_read:,} cases read, {result.duplicates_removed:,} duplicates removed, "
            f"{skipped:,} skipped); manifest {manifest}"
        )
        for reason, count in sorted(result.skipped.items()):
            self.stdout.write(f"  skipped {count:,}: {reason}")
        if result.redactions:
            self.stdout.write("  redacted: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.redactions.items())))
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")

    def _version(self, options: dict[str, Any]) -> DatasetVersion | None:
        if options["version"] is not None:
            version = DatasetVersion.objects.select_related("dataset").filter(pk=options["version"]).first()
            if version is None:
                raise CommandError(f"no dataset version with id {options['version']}")
            if version.status != VersionStatus.READY:
                raise CommandError(f"{version} is {version.status}, not ready: {services.version_problem(version)}")
            return version
        if options["dataset"]:
            dataset = Dataset.objects.filter(name=options["dataset"]).first()
            if dataset is None:
                raise CommandError(f"no dataset named {options['dataset']!r}")
            version = None if options["freeze"] else services.latest_ready_version(dataset)
            if version is None:
                version = services.freeze_version(dataset=dataset)
                self.stderr.write(f"froze {dataset.name} v{version.number} ({version.case_count:,} cases)")
            return version
        if options["freeze"]:
            raise CommandError("--freeze needs --dataset")
        return None
