"""An export's files go with its row: deleted on its own (the admin), or with its version or
dataset (`services.delete_dataset`), once the deletion commits (a rollback keeps both)."""

from __future__ import annotations

import shutil
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from evals.models import Export


@receiver(post_delete, sender=Export, dispatch_uid="evals.remove_export_files")
def remove_export_files(sender: Any, *, instance: Export, **kwargs: Any) -> None:
    from evals.services import export_directory

    transaction.on_commit(partial(shutil.rmtree, export_directory(instance.pk), ignore_errors=True))
