"""Copy finished job runs between MLflow stores: a bundle folder (run records, metric histories, artifacts,
a checksummed manifest) that ``import_bundle`` turns back into runs of the same suite experiment.

What it is for: moving a budget's results from a cluster node or a GPU machine into the store a report
is made from, publishing the runs behind a report beside it, and keeping finished work when a machine's
store is lost. A copied run keeps its tags (``job_id`` included, so ``mmbench run`` counts its job as
done), params, every logged metric value with its step and time, its start and end times and its
artifacts; it gains the tag ``imported_from`` (its run id in the exported store). Nothing in a bundle is
trusted unchecked: ``import_bundle`` verifies every file against the manifest before writing a run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmbench.atomic import atomic_path
from mmbench.hashing import sha256_file
from mmbench.records import Kind, Tag
from mmbench.tracking.lookup import Store
from mmbench.tracking.record import FAILED, FINISHED, RunRecord
from mmbench.tracking.uri import TrackingError

FORMAT = "mmbench-runs/1"
MANIFEST = "manifest.json"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
ARTIFACTS = "artifacts"
ATTACHED = "attached"  # files the runs need beside them (the classifiers that scored them), by relative name


class BundleError(TrackingError):
    """A bundle that cannot be written or read (missing, altered, of another format or suite)."""


@dataclass(frozen=True)
class Transfer:
    """What an export or an import did: the runs copied and those left as they were (with why)."""

    copied: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


# -------------------------------------------------------------------------------------------------- export


def finished_runs(store: Store, suite: str, budget: str) -> list[RunRecord]:
    """The FINISHED job runs of ``suite`` at ``budget``, oldest first: what a bundle of them holds."""
    experiment = store.experiment_id(suite, create=False)
    runs = store.job_runs(experiment, budget, FINISHED) if experiment is not None else []
    return sorted(runs, key=lambda r: r.start_time)


def export_bundle(store: Store, suite: str, budget: str, out: Path, attach: Mapping[str, Path] | None = None) -> Transfer:
    """Write every FINISHED job run of ``suite`` at ``budget`` in ``store`` to the bundle folder ``out``
    (replaced whole, atomically; an existing folder that is not a bundle is refused), with the files ``attach``
    names (relative name -> file) under ``attached/``, checksummed like the rest."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise BundleError(f"{out} exists and is not a runs bundle; give a new or empty folder (or a bundle to replace)")
    runs = finished_runs(store, suite, budget)
    if not runs:
        raise BundleError(f"the store {store.uri} has no finished runs of suite {suite!r} at budget {budget!r}")
    attach = dict(attach or {})
    with atomic_path(out) as tmp:
        for run in runs:
            _export_run(store, run, tmp / run.run_id)
        for name, path in attach.items():
            (tmp / ATTACHED / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / ATTACHED / name)
        manifest = {"format": FORMAT, "suite": suite, "budget": budget, "exported": _now(),
                    "runs": [r.run_id for r in runs], "attached": sorted(attach), "files": _checksums(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return Transfer(tuple(manifest["runs"]))


def _export_run(store: Store, run: RunRecord, folder: Path) -> None:
    folder.mkdir(parents=True)
    record = {"run_id": run.run_id, "status": run.status, "start_time": run.start_time, "end_time": run.end_time,
              "name": run.tags.get(Tag.RUN_NAME, run.run_id), "params": run.params,
              "tags": {k: v for k, v in run.tags.items() if not k.startswith(Tag.MLFLOW_PREFIX)},  # not MLflow's own
              "latest_metrics": run.metrics}
    (folder / RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    history = [list(entry) for key in sorted(run.metrics) for entry in store.metric_entries(run.run_id, key)]
    (folder / METRICS_FILE).write_text(json.dumps(history) + "\n")
    artifacts = folder / ARTIFACTS
    artifacts.mkdir()
    for name in store.artifact_names(run.run_id):
        store.download(run.run_id, name, artifacts)


def _checksums(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------------------- import


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, after checking that its files are exactly those listed, unaltered."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not a runs bundle (no {MANIFEST}); make one with `mmbench store export`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path} is corrupt (not JSON: {exc}); export the bundle again") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path} has format {manifest.get('format')!r}; this mmbench reads {FORMAT!r}")
    found = {k: v for k, v in _checksums(bundle).items() if k != MANIFEST}
    listed = manifest.get("files", {})
    problems = ([f"{name}: missing" for name in sorted(set(listed) - set(found))]
                + [f"{name}: not in the manifest" for name in sorted(set(found) - set(listed))]
                + [f"{name}: altered (sha256 differs)" for name in sorted(set(found) & set(listed))
                   if found[name] != listed[name]])
    if problems:
        raise BundleError(f"the bundle {bundle} does not match its manifest ({'; '.join(problems[:5])}"
                          f"{f'; and {len(problems) - 5} more' if len(problems) > 5 else ''}); export it again")
    return manifest


def attached_files(bundle: Path) -> dict[str, Path]:
    """The files attached to a bundle (relative name -> path), after checking the whole bundle against its manifest."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    names = manifest.get("attached", [])
    unlisted = [name for name in names if f"{ATTACHED}/{name}" not in manifest["files"]]
    if unlisted:
        raise BundleError(f"the bundle {bundle} attaches files its manifest does not list: {unlisted[:3]}")
    return {name: bundle / ATTACHED / name for name in names}


def import_bundle(store: Store, bundle: Path) -> Transfer:
    """Copy the bundle's runs into ``store`` under the suite's experiment; a run already there (its own id,
    or a copy of it) is left as it was, so importing twice copies nothing twice."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    experiment = store.experiment_id(manifest["suite"])
    present = _present(store, experiment)
    copied, skipped = [], []
    for run_id in manifest["runs"]:
        if run_id in present:
            skipped.append((run_id, f"already in the store as run {present[run_id]}"))
            continue
        copied.append(_import_run(store, experiment, bundle / run_id))
    return Transfer(tuple(copied), tuple(skipped))


def _present(store: Store, experiment: str) -> dict[str, str]:
    """Original run id -> run id in the store, for every job run there (copies by their ``imported_from``)."""
    out = {}
    for run in store.job_runs(experiment):
        out[run.run_id] = run.run_id
        if run.tags.get(Tag.IMPORTED_FROM):
            out[run.tags[Tag.IMPORTED_FROM]] = run.run_id
    return out


def _import_run(store: Store, experiment: str, folder: Path) -> str:
    record = json.loads((folder / RUN_FILE).read_text())
    if record["tags"].get(Tag.KIND) != Kind.JOB or record["status"] != FINISHED:
        raise BundleError(f"{folder / RUN_FILE} is not a finished job run; export the bundle again")
    tags = {**record["tags"], Tag.IMPORTED_FROM: record["run_id"]}
    run_id = store.create_run(experiment, record["name"], tags, start_time_ms=record["start_time"])
    try:
        store.log_params(run_id, record["params"])
        store.log_metric_entries(run_id, [tuple(e) for e in json.loads((folder / METRICS_FILE).read_text())])
        if any((folder / ARTIFACTS).iterdir()):
            store.log_artifacts(run_id, folder / ARTIFACTS)
        _check_copy(store.run(run_id), record)
    except BaseException:
        store.mark(run_id, FAILED)  # a half-copied run never counts as finished
        raise
    store.mark(run_id, FINISHED, end_time_ms=record["end_time"])
    return run_id


def _check_copy(copy: RunRecord, record: dict[str, Any]) -> None:
    """The copy reads back with the original's latest metric values and params."""
    if copy.metrics != record["latest_metrics"] or copy.params != record["params"]:
        differs = sorted(k for k in set(copy.metrics) | set(record["latest_metrics"])
                         if copy.metrics.get(k) != record["latest_metrics"].get(k))
        raise BundleError(f"run {record['run_id']} did not copy faithfully (metrics {differs[:3]} or params differ)")


def describe(transfer: Transfer, verb: str) -> str:
    """``copied 3 runs; left 1 as it was (run a: already in the store as run b)``."""
    text = f"{verb} {len(transfer.copied)} run{'s' if len(transfer.copied) != 1 else ''}"
    if transfer.skipped:
        text += f"; left {len(transfer.skipped)} as they were (" + "; ".join(
            f"run {run}: {why}" for run, why in transfer.skipped[:3]) + ")"
    return text


__all__ = ["FORMAT", "BundleError", "Transfer", "attached_files", "describe", "export_bundle", "finished_runs",
           "import_bundle", "read_manifest"]
