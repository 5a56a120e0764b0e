"""Which runs are which: the suite's experiment, a budget's job runs, finished jobs, unfinished attempts,
runs left RUNNING by a process that is gone. Every name comes from :mod:`mmbench.records`."""

from __future__ import annotations

from mmbench.records import Kind, Tag, experiment_name
from mmbench.tracking.owner import abandoned, machine_id
from mmbench.tracking.record import FINISHED, KILLED, RUNNING, RunRecord
from mmbench.tracking.store import MlflowStore
from mmbench.tracking.uri import TrackingError, artifact_root


class Store(MlflowStore):
    """The MLflow store read and written in mmbench's record layout (one experiment per suite, a parent run
    per invocation, a child run per job)."""

    # --- the suite's experiment ----------------------------------------------------------------------
    def experiment_id(self, suite: str, create: bool = True) -> str | None:
        """The id of the suite's experiment, created (with an absolute artifact location) if asked."""
        name = experiment_name(suite)
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
            return self.client.create_experiment(name, artifact_location=location, tags={Tag.SUITE: suite})
        except Exception:  # noqa: BLE001 (lost a creation race: read the winner's)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # --- job runs ------------------------------------------------------------------------------------
    def job_runs(self, experiment_id: str, budget: str | None = None, status: str | None = None) -> list[RunRecord]:
        clauses = [_tag_is(Tag.KIND, Kind.JOB)]
        if budget is not None:
            clauses.append(_tag_is(Tag.BUDGET, budget))
        if status is not None:
            clauses.append(_status_is(status))
        return self.runs(experiment_id, " and ".join(clauses))

    def finished_jobs(self, experiment_id: str, budget: str) -> dict[str, str]:
        """job id -> run id of the latest FINISHED run of each job."""
        done: dict[str, tuple[int, str]] = {}
        for run in self.job_runs(experiment_id, budget, FINISHED):
            job = run.tags.get(Tag.JOB_ID)
            if job and (job not in done or run.start_time > done[job][0]):
                done[job] = (run.start_time, run.run_id)
        return {job: run_id for job, (_, run_id) in done.items()}

    def finished_run(self, experiment_id: str, job_id: str) -> str | None:
        """The run id of a FINISHED run of the job (the latest), or None."""
        clauses = " and ".join((_tag_is(Tag.KIND, Kind.JOB), _tag_is(Tag.JOB_ID, job_id), _status_is(FINISHED)))
        runs = sorted(self.runs(experiment_id, clauses), key=lambda r: r.start_time)
        return runs[-1].run_id if runs else None

    def unfinished_attempts(self, experiment_id: str, budget: str) -> dict[str, str]:
        """job id -> run id of the latest attempt that did not finish (failed, killed or abandoned)."""
        latest: dict[str, tuple[int, str]] = {}
        for run in self.job_runs(experiment_id, budget):
            job = run.tags.get(Tag.JOB_ID)
            if run.status != FINISHED and job and (job not in latest or run.start_time > latest[job][0]):
                latest[job] = (run.start_time, run.run_id)
        return {job: run_id for job, (_, run_id) in latest.items()}

    def budgets(self, experiment_id: str) -> list[str]:
        """The budgets with at least one finished job run."""
        return sorted({r.tags.get(Tag.BUDGET, "") for r in self.job_runs(experiment_id, status=FINISHED)} - {""})

    def running_children(self, experiment_id: str, parent_run_id: str) -> list[RunRecord]:
        """The child runs of an invocation that are still RUNNING."""
        return self.runs(experiment_id, f"{_tag_is(Tag.PARENT_RUN, parent_run_id)} and {_status_is(RUNNING)}")

    # --- abandoned runs ------------------------------------------------------------------------------
    def reap_abandoned(self, experiment_id: str) -> list[str]:
        """Mark KILLED the RUNNING runs whose process ended without closing them (a SIGKILL, a power cut):
        only runs opened on this machine (same host and boot) by a process that no longer exists; a run
        of another machine, or of a live process, is left alone. Returns the run ids marked."""
        reaped = []
        for run in self.runs(experiment_id, f"{_status_is(RUNNING)} and {_tag_is(Tag.HOST, machine_id())}"):
            if abandoned(run.tags):
                pid = run.tags[Tag.PID]
                self.set_tags(run.run_id, {Tag.ERROR: f"abandoned: process {pid} ended without closing the run (killed?)"})
                self.mark(run.run_id, KILLED)
                reaped.append(run.run_id)
        return reaped


def _tag_is(tag: str, value: str) -> str:
    """An MLflow search clause: tag ``tag`` equals ``value`` (backquoted name: tags may hold dots)."""
    return f"tags.`{tag}` = '{_quote(value)}'"


def _status_is(status: str) -> str:
    return f"attributes.status = '{status}'"


def _quote(text: str) -> str:
    return text.replace("'", "\\'")
