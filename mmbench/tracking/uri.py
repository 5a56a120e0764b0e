"""Where the tracking store is and whether it can be used: URI resolution, fail-fast checks, artifact roots.

A SQLite store keeps its artifacts in the ``mlartifacts`` folder beside it (absolute paths, re-rooted when
the store is moved); an ``http(s)://`` store is an ``mlflow server`` whose ``/health`` must answer.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mmbench import paths
from mmbench.records import EXPERIMENT_PREFIX


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or used; the message says what to pass instead."""


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
