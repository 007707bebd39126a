"""Flow: import a labels CSV (from a local file or from the store) into the database."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.common import opened_workspace
from mlc_core.jobs.labels_import import LabelImportReport, import_labels


@flow(name="mlc-import-labels")
def import_labels_flow(
    path: str | None = None, store_key: str | None = None, key_prefix: str = ""
) -> LabelImportReport:
    """Import labels from a local CSV ``path`` or a CSV at ``store_key`` in the object store."""
    logger = get_run_logger()
    with opened_workspace() as workspace:
        if (path is None) == (store_key is None):
            raise ValueError("give exactly one of path (a local file) or store_key (in the store)")
        data = Path(path).read_bytes() if path else workspace.store.get(store_key or "")
        source = Path(path).name if path else f"store:{store_key}"
        with workspace.transaction() as session:
            report = import_labels(
                session, workspace.store, data, source=source, key_prefix=key_prefix
            )
    for problem in report.problems:
        logger.warning("%s", problem)
    logger.info(
        "imported labels for %d of %d rows (%d problems)",
        report.imported_images,
        report.rows,
        len(report.problems),
    )
    return report
