"""django-q2 task functions for datasets.

`run_export` is queued by `services.create_export`. If the worker dies mid-export, django-q2
delivers the task again (Q_CLUSTER "retry"); the retry sees a `running` export whose heartbeat
has stopped, removes the dead attempt's temporary files and starts over. An export that raises
is marked `failed` with the error and never leaves a file under its real name.

`run_freeze` is queued by `services.start_freeze`. A freeze is one transaction: a killed
worker's attempt leaves nothing, and the retry freezes again; an error marks the version
`failed`."""

from __future__ import annotations

from evals import services


def run_export(export_id: int) -> dict[str, object] | None:
    export = services.run_export(export_id=export_id)
    if export is None:
        return None
    return {"id": export.pk, "status": export.status, "rows": export.rows}


def run_freeze(version_id: int) -> dict[str, object] | None:
    version = services.run_freeze(version_id=version_id)
    if version is None:
        return None
    return {"id": version.pk, "status": version.status, "cases": version.case_count}
