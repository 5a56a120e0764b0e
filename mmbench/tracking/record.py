"""One run as read back from the store, and MLflow's run statuses (plain data: no mlflow import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FINISHED, FAILED, KILLED, RUNNING, SCHEDULED = "FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED"
TERMINAL = (FINISHED, FAILED, KILLED)  # statuses that record an end time


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


def to_record(run: Any) -> RunRecord:
    """A :class:`RunRecord` from an ``mlflow.entities.Run``."""
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
