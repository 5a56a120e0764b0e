"""The MLflow store: one thin, explicit wrapper around ``MlflowClient`` for every write and read mmbench makes.

MLflow tracking (Zaharia et al. 2018, ``mlflow/mlflow``). ``mlflow`` is imported lazily (it costs seconds)
and only here. Runs are written through ``MlflowClient`` with explicit run ids, never through the
per-thread active-run stack, so workers in other processes or dask threads link their child runs to
the parent by passing ``parent_run_id`` explicitly (PITFALLS.md, MLflow). What the runs are called and
which of them a job or a report wants is :mod:`mmbench.tracking.lookup`'s (names from :mod:`mmbench.records`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mmbench.locks import file_lock
from mmbench.records import Tag
from mmbench.tracking.owner import owner_tags
from mmbench.tracking.record import RUNNING, TERMINAL, RunRecord, to_record
from mmbench.tracking.uri import TrackingError, check_reachable, reroot_artifacts, resolve_uri, sqlite_path

MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ ]")


def _disable_telemetry() -> None:
    """No telemetry (offline machines) and no artifact-download progress bars in our output."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _mlflow() -> Any:
    _disable_telemetry()
    import mlflow

    return mlflow


def metric_key(key: str) -> str:
    """A key MLflow accepts (letters, digits, ``_ - . /`` and space); anything else becomes ``_``."""
    clean = _BAD_KEY_CHARS.sub("_", key).strip("/")
    if not clean:
        raise ValueError(f"metric or param key {key!r} has no usable characters")
    return clean[:250]


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 40] + " …[truncated; see the JSON artifact]"


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowStore:
    """One MLflow tracking store (a URI); every method is a thin, explicit wrapper around ``MlflowClient``."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = resolve_uri(uri)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._open()
        return self._client

    def _open(self) -> Any:
        """The client; a SQLite store is opened under a lock beside it (MLflow creates a fresh store's tables
        on first use, and two processes doing so at once fail with "table ... already exists") and its
        artifact locations are re-rooted when the store was moved or copied (see ``reroot_artifacts``)."""
        db = sqlite_path(self.uri)
        if db is None:
            return _mlflow().MlflowClient(tracking_uri=self.uri)
        with file_lock(db.with_name(db.name + ".lock")):
            client = _mlflow().MlflowClient(tracking_uri=self.uri)
            if db.exists() or os.access(db.parent, os.W_OK):
                client.search_experiments(max_results=1)  # creates a fresh store's tables now, under the lock
            reroot_artifacts(db)
        return client

    def check(self) -> None:
        """Fail fast when the store cannot be reached; creates a fresh SQLite store's tables."""
        check_reachable(self.uri)
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 (any backend error means: unusable store)
            raise TrackingError(f"the MLflow store at {self.uri} cannot be used: {exc}") from None

    # --- runs ----------------------------------------------------------------------------------------
    def create_run(
        self, experiment_id: str, name: str, tags: Mapping[str, Any], parent_run_id: str | None = None,
        status: str = RUNNING, start_time_ms: int | None = None,
    ) -> str:
        all_tags = {k: _text(v, MAX_TAG_VALUE) for k, v in {**owner_tags(), **tags}.items()}
        if parent_run_id:
            all_tags[Tag.PARENT_RUN] = parent_run_id
        head = dict(list(all_tags.items())[:PARAMS_PER_BATCH])
        run = self.client.create_run(experiment_id, start_time=start_time_ms, tags=head, run_name=name)
        run_id = run.info.run_id
        rest = dict(list(all_tags.items())[PARAMS_PER_BATCH:])
        if rest:
            self.set_tags(run_id, rest)
        if status != RUNNING:
            self.client.update_run(run_id, status=status)
        return run_id

    def mark(self, run_id: str, status: str, end_time_ms: int | None = None) -> None:
        """Set a run's status; FINISHED/FAILED/KILLED also record its end time (now unless given)."""
        if status in TERMINAL:
            self.client.set_terminated(run_id, status, end_time=end_time_ms)
        else:
            self.client.update_run(run_id, status=status)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        entity = _mlflow().entities.RunTag
        items = [entity(k, _text(v, MAX_TAG_VALUE)) for k, v in tags.items()]
        for chunk in _chunks(items, PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        entity = _mlflow().entities.Param
        items = [entity(metric_key(k), _text(v, MAX_PARAM_VALUE)) for k, v in sorted(params.items())]
        for chunk in _chunks(items, PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)

    def log_metrics(self, run_id: str, values: Iterable[tuple[str, float, int]], timestamp_ms: int) -> None:
        """Log ``(key, value, step)`` triples, all at ``timestamp_ms``, in batches of at most 1000."""
        self.log_metric_entries(run_id, [(metric_key(k), v, step, timestamp_ms) for k, v, step in values])

    def log_metric_entries(self, run_id: str, entries: Iterable[tuple[str, float, int, int]]) -> None:
        """Log ``(key, value, step, timestamp_ms)`` entries as they are (a copied run keeps its history)."""
        entity = _mlflow().entities.Metric
        items = [entity(key, float(value), int(timestamp), int(step)) for key, value, step, timestamp in entries]
        for chunk in _chunks(items, METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, folder: str | Path) -> None:
        """Every file under ``folder``, at the same relative paths in the run's artifacts."""
        self.client.log_artifacts(run_id, str(folder))

    def log_json(self, run_id: str, obj: Any, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / name
            file.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
            self.log_artifact(run_id, file, artifact_path)

    # --- reading -------------------------------------------------------------------------------------
    def runs(self, experiment_id: str, filter_string: str = "") -> list[RunRecord]:
        """Every run of an experiment matching ``filter_string`` (all pages)."""
        out: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
            out.extend(to_record(run) for run in page)
            token = page.token
            if not token:
                return out

    def run(self, run_id: str) -> RunRecord:
        return to_record(self.client.get_run(run_id))

    def artifact_names(self, run_id: str, path: str | None = None) -> list[str]:
        return [f.path for f in self.client.list_artifacts(run_id, path)]

    def download(self, run_id: str, path: str, dst: str | Path) -> Path:
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    def read_json(self, run_id: str, path: str) -> Any:
        """A run's JSON artifact; a missing or unreadable one is a TrackingError naming the run and the fix."""
        fix = (f"delete that run (`mlflow runs delete --run-id {run_id}` with MLFLOW_TRACKING_URI={self.uri}) "
               "and run `mmbench run` again to redo its job")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                text = self.download(run_id, path, tmp).read_text()
            except Exception as exc:  # noqa: BLE001 (MLflow raises its own exception types for a missing file)
                raise TrackingError(f"run {run_id} has no readable artifact {path} ({_first_line(exc)}); {fix}") from None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise TrackingError(f"run {run_id}'s artifact {path} is corrupt (not JSON: {exc}); {fix}") from None

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def metric_entries(self, run_id: str, key: str) -> list[tuple[str, float, int, int]]:
        """Every logged value of ``key``: ``(key, value, step, timestamp_ms)``."""
        return [(key, m.value, m.step, m.timestamp) for m in self.client.get_metric_history(run_id, key)]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class MetricBuffer:
    """Collects ``(key, value, step)`` triples and writes them in batches (fewer SQLite transactions)."""

    def __init__(self, store: MlflowStore, run_id: str, flush_every: int = 200) -> None:
        self.store, self.run_id, self.flush_every = store, run_id, flush_every
        self._pending: list[tuple[str, float, int]] = []

    def add(self, values: Mapping[str, float], step: int) -> None:
        self._pending.extend((k, float(v), step) for k, v in values.items())
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            import time

            self.store.log_metrics(self.run_id, self._pending, int(time.time() * 1000))
            self._pending = []


