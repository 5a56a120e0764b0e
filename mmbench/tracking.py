"""Every MLflow call mmbench makes: the store, experiments, parent/child runs, params, metrics, artifacts.

MLflow tracking (Zaharia et al. 2018, ``mlflow/mlflow``). ``mlflow`` is imported lazily (it costs seconds)
and only here. Runs are written through ``MlflowClient`` with explicit run ids, never through the
per-thread active-run stack, so workers in other processes or dask threads link their child runs to
the parent by passing ``parent_run_id`` explicitly (PITFALLS.md, MLflow).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench import paths
from mmbench.locks import file_lock

MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
EXPERIMENT_PREFIX = "mmbench/"
JOB_KIND, PARENT_KIND = "job", "invocation"
FINISHED, FAILED, KILLED, RUNNING, SCHEDULED = "FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED"
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ ]")
HOST_TAG, PID_TAG = "mmbench.host", "mmbench.pid"  # the process that opened a RUNNING run


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or used; the message says what to pass instead."""


def _disable_telemetry() -> None:
    """No telemetry (offline machines) and no artifact-download progress bars in our output."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _mlflow() -> Any:
    _disable_telemetry()
    import mlflow

    return mlflow


# ------------------------------------------------------------------------------------------- the store URI


def resolve_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite store under ``MMBENCH_HOME``; SQLite paths made absolute."""
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()
    if chosen.startswith("sqlite:///"):
        path = Path(chosen[len("sqlite:///") :]).expanduser()
        return f"sqlite:///{path.resolve()}"
    if "://" not in chosen:
        raise TrackingError(
            f"tracking URI {chosen!r} has no scheme; use sqlite:///ABSOLUTE/PATH.db, http://HOST:PORT "
            "(an `mlflow server`) or a database URI such as postgresql://..."
        )
    return chosen


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """An absolute artifact folder beside a SQLite store (None: let a tracking server choose)."""
    db = sqlite_path(uri)
    return str(db.parent / "mlartifacts") if db is not None else None


def _beside_store_root(location: str) -> str | None:
    """``X/mlartifacts`` when ``location`` is ``X/mlartifacts/<one folder>`` (where mmbench puts them), else None."""
    parent = os.path.dirname(location)
    return parent if os.path.basename(parent) == "mlartifacts" and os.path.isabs(location) else None


def reroot_artifacts(db: Path) -> list[str]:
    """Point the artifact locations of a moved or copied SQLite store at the ``mlartifacts`` folder beside it.

    MLflow records absolute artifact locations (per experiment and per run); mmbench always puts them in
    ``<folder of the .db>/mlartifacts/<suite>``. An mmbench experiment whose location is ``<X>/mlartifacts/<suite>``
    with another ``X`` was made in the store's old place: it and its runs are rewritten to the new place, so a
    moved home reports and resumes. Returns the ids of the experiments re-rooted.
    """
    import sqlite3

    if not db.is_file():
        return []
    root = str(db.parent / "mlartifacts")
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        try:
            rows = con.execute("SELECT experiment_id, artifact_location FROM experiments WHERE substr(name, 1, ?) = ?",
                               (len(EXPERIMENT_PREFIX), EXPERIMENT_PREFIX)).fetchall()
        except sqlite3.DatabaseError:
            return []  # not (yet) an MLflow store: MLflow's own error says so
        moved = [(str(exp), old) for exp, location in rows
                 if (old := _beside_store_root(str(location or ""))) is not None and old != root]
        if not moved:
            return []
        try:
            with con:
                for exp, old in moved:
                    for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
                        con.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 (fixed names)
                            f"WHERE experiment_id = ? AND substr({column}, 1, ?) = ?",
                            (root, len(old) + 1, exp, len(old), old),
                        )
        except sqlite3.OperationalError as exc:  # a read-only store
            raise TrackingError(
                f"the store {db} was moved (its artifacts were at {moved[0][1]}, now beside it at {root}) but it "
                f"cannot be updated ({exc}); copy its folder somewhere writable and open it there"
            ) from None
    return [exp for exp, _ in moved]


def check_reachable(uri: str, timeout: float = 5.0, write: bool = True) -> None:
    """Fail fast, with a clear message, when the store at ``uri`` cannot be used (``write``: to log runs)."""
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme == "sqlite":
        _check_sqlite(uri, write)
    elif scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif scheme in ("file", ""):
        raise TrackingError(
            f"tracking URI {uri!r}: MLflow's plain file store is deprecated; use sqlite:///ABSOLUTE/PATH.db"
        )


def _check_sqlite(uri: str, write: bool) -> None:
    db = sqlite_path(uri)
    assert db is not None
    if write:
        _check_sqlite_writable(db)
    if db.is_dir():
        raise TrackingError(f"{db} is a folder, not a SQLite store; pass --tracking-uri sqlite:///{db}/mlflow.db")
    if db.exists():
        if not os.access(db, os.R_OK):
            raise TrackingError(f"the SQLite tracking store {db} is not readable (its permissions); chmod u+r it")
        with open(db, "rb") as fh:
            head = fh.read(16)
        if head and not head.startswith(b"SQLite format 3"):
            raise TrackingError(f"{db} exists but is not a SQLite database; pass another --tracking-uri")


def _check_sqlite_writable(db: Path) -> None:
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"cannot create the folder of the SQLite tracking store {db}: {exc}") from None
    if not os.access(db.parent, os.W_OK):
        raise TrackingError(f"the folder of the SQLite tracking store {db} is not writable (SQLite writes its journal "
                            "beside the store); make it writable or pass another --tracking-uri")
    if db.exists() and not os.access(db, os.W_OK):
        raise TrackingError(f"the SQLite tracking store {db} is read-only; make it writable (chmod u+w {db}) "
                            "or pass another --tracking-uri")


def _check_http(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (user-given tracking URI)
            if response.status >= 400:
                raise TrackingError(f"MLflow server at {uri} answered {response.status} on /health")
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}). Start it (`mmbench ui` or "
            "`mlflow server`), or pass --tracking-uri sqlite:///PATH.db to use a local store."
        ) from None


# ----------------------------------------------------------------------------------------------- helpers


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


def machine_id() -> str:
    """This machine: its host name and, on Linux, its boot id (a pid means nothing across either)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}:{boot}" if boot else socket.gethostname()


def owner_tags() -> dict[str, str]:
    return {HOST_TAG: machine_id(), PID_TAG: str(os.getpid())}


def process_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) is not a probe elsewhere: never call a run abandoned there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class RunRecord:
    """One run as read back from the store (plain data; the report builds its tables from these)."""

    run_id: str
    status: str
    start_time: int
    end_time: int | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str


class Store:
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

    # --- experiments ---------------------------------------------------------------------------------
    @staticmethod
    def experiment_name(suite: str) -> str:
        return f"{EXPERIMENT_PREFIX}{suite}"

    def experiment_id(self, suite: str, create: bool = True) -> str | None:
        """The id of the suite's experiment, created (with an absolute artifact location) if asked."""
        name = self.experiment_name(suite)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise TrackingError(f"experiment {name!r} is deleted in {self.uri}; restore it in the UI or use another store")
            return found.experiment_id
        if not create:
            return None
        root = artifact_root(self.uri)
        location = f"{root}/{suite}" if root else None
        try:
            return self.client.create_experiment(name, artifact_location=location, tags={"suite": suite})
        except Exception:  # noqa: BLE001 (lost a creation race: read the winner's)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # --- runs ----------------------------------------------------------------------------------------
    def create_run(
        self, experiment_id: str, name: str, tags: Mapping[str, Any], parent_run_id: str | None = None,
        status: str = RUNNING,
    ) -> str:
        all_tags = {k: _text(v, MAX_TAG_VALUE) for k, v in {**owner_tags(), **tags}.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        head = dict(list(all_tags.items())[:PARAMS_PER_BATCH])
        run = self.client.create_run(experiment_id, tags=head, run_name=name)
        run_id = run.info.run_id
        rest = dict(list(all_tags.items())[PARAMS_PER_BATCH:])
        if rest:
            self.set_tags(run_id, rest)
        if status != RUNNING:
            self.client.update_run(run_id, status=status)
        return run_id

    def reap_abandoned(self, experiment_id: str) -> list[str]:
        """Mark KILLED the RUNNING runs whose process ended without closing them (a SIGKILL, a power cut):
        only runs opened on this machine (same host and boot) by a process that no longer exists; a run
        of another machine, or of a live process, is left alone. Returns the run ids marked."""
        host, reaped = machine_id(), []
        for run in self.runs(experiment_id, f"attributes.status = '{RUNNING}' and tags.`{HOST_TAG}` = '{_quote(host)}'"):
            pid = run.tags.get(PID_TAG, "")
            if pid.isdigit() and not process_alive(int(pid)):
                self.set_tags(run.run_id, {"error": f"abandoned: process {pid} ended without closing the run (killed?)"})
                self.mark(run.run_id, KILLED)
                reaped.append(run.run_id)
        return reaped

    def mark(self, run_id: str, status: str) -> None:
        """Set a run's status; FINISHED/FAILED/KILLED also record its end time."""
        if status in (FINISHED, FAILED, KILLED):
            self.client.set_terminated(run_id, status)
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
        """Log ``(key, value, step)`` triples in batches of at most 1000."""
        entity = _mlflow().entities.Metric
        items = [entity(metric_key(k), float(v), timestamp_ms, int(step)) for k, v, step in values]
        for chunk in _chunks(items, METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

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
            out.extend(_record(run) for run in page)
            token = page.token
            if not token:
                return out

    def job_runs(self, experiment_id: str, budget: str | None = None, status: str | None = None) -> list[RunRecord]:
        clauses = [f"tags.kind = '{JOB_KIND}'"]
        if budget is not None:
            clauses.append(f"tags.budget = '{_quote(budget)}'")
        if status is not None:
            clauses.append(f"attributes.status = '{status}'")
        return self.runs(experiment_id, " and ".join(clauses))

    def finished_jobs(self, experiment_id: str, budget: str) -> dict[str, str]:
        """job id -> run id of the latest FINISHED run of each job."""
        done: dict[str, tuple[int, str]] = {}
        for run in self.job_runs(experiment_id, budget, FINISHED):
            job = run.tags.get("job_id")
            if job and (job not in done or run.start_time > done[job][0]):
                done[job] = (run.start_time, run.run_id)
        return {job: run_id for job, (_, run_id) in done.items()}

    def finished_run(self, experiment_id: str, job_id: str) -> str | None:
        """The run id of a FINISHED run of the job (the latest), or None."""
        clauses = (f"tags.kind = '{JOB_KIND}' and tags.job_id = '{_quote(job_id)}' "
                   f"and attributes.status = '{FINISHED}'")
        runs = sorted(self.runs(experiment_id, clauses), key=lambda r: r.start_time)
        return runs[-1].run_id if runs else None

    def unfinished_attempts(self, experiment_id: str, budget: str) -> dict[str, str]:
        """job id -> run id of the latest attempt that did not finish (failed, killed or abandoned)."""
        latest: dict[str, tuple[int, str]] = {}
        for run in self.job_runs(experiment_id, budget):
            job = run.tags.get("job_id")
            if run.status != FINISHED and job and (job not in latest or run.start_time > latest[job][0]):
                latest[job] = (run.start_time, run.run_id)
        return {job: run_id for job, (_, run_id) in latest.items()}

    def budgets(self, experiment_id: str) -> list[str]:
        return sorted({r.tags.get("budget", "") for r in self.job_runs(experiment_id, status=FINISHED)} - {""})

    def run(self, run_id: str) -> RunRecord:
        return _record(self.client.get_run(run_id))

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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        end_time=run.info.end_time,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        artifact_uri=run.info.artifact_uri,
    )


class MetricBuffer:
    """Collects ``(key, value, step)`` triples and writes them in batches (fewer SQLite transactions)."""

    def __init__(self, store: Store, run_id: str, flush_every: int = 200) -> None:
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


# ------------------------------------------------------------------------------------------------- the UI


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """``mlflow server`` on the store at ``uri`` (artifacts of new experiments beside a SQLite store)."""
    import sys

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    root = artifact_root(uri)
    if root is not None:
        cmd += ["--artifacts-destination", root]
    return cmd


def serve_ui(uri: str | None, host: str, port: int, say: Callable[[str], None]) -> int:
    """Run the MLflow UI in the foreground until Ctrl-C or SIGTERM; stops its whole process group."""
    import signal
    import subprocess
    import threading

    uri = resolve_uri(uri)
    check_reachable(uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(f"no store at {db} yet; run `mmbench run` first or pass --tracking-uri")
    if not port_free(host, port):
        raise TrackingError(f"port {port} on {host} is in use; pass another --port")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(ui_command(uri, host, port), env=env, start_new_session=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    say(f"MLflow UI for {uri} at http://{host}:{port}  (Ctrl-C stops it)")
    try:
        return proc.wait()
    except KeyboardInterrupt:
        say("stopping the MLflow UI")
        return 0
    finally:
        _stop_group(proc)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_group(proc: Any) -> None:
    """SIGTERM the server's process group (started as its own process group leader, so only ours), SIGKILL if it lingers."""
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
