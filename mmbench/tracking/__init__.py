"""Every MLflow call mmbench makes, in four rooms: where the store is and whether it can be used
(:mod:`~mmbench.tracking.uri`), the store's writes and reads (:mod:`~mmbench.tracking.store`), which runs are
which in mmbench's record layout (:mod:`~mmbench.tracking.lookup`; names from :mod:`mmbench.records`) and the
MLflow UI (:mod:`~mmbench.tracking.ui`). Importing this package does not import mlflow.
"""

from mmbench.tracking.lookup import Store
from mmbench.tracking.owner import machine_id, owner_tags, process_alive
from mmbench.tracking.record import FAILED, FINISHED, KILLED, RUNNING, SCHEDULED, RunRecord
from mmbench.tracking.store import (
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    METRICS_PER_BATCH,
    PARAMS_PER_BATCH,
    MetricBuffer,
    MlflowStore,
    metric_key,
)
from mmbench.tracking.ui import port_free, serve_ui, ui_command
from mmbench.tracking.uri import (
    TrackingError,
    artifact_root,
    check_reachable,
    reroot_artifacts,
    resolve_uri,
    sqlite_path,
)

__all__ = [
    "FAILED", "FINISHED", "KILLED", "MAX_PARAM_VALUE", "MAX_TAG_VALUE", "METRICS_PER_BATCH",
    "PARAMS_PER_BATCH", "RUNNING", "SCHEDULED", "MetricBuffer", "MlflowStore", "RunRecord", "Store",
    "TrackingError", "artifact_root", "check_reachable", "machine_id", "metric_key", "owner_tags", "port_free",
    "process_alive", "reroot_artifacts", "resolve_uri", "serve_ui", "sqlite_path", "ui_command",
]
