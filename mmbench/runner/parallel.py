"""Executing independent jobs: in process, through joblib's ``loky`` processes, or on a dask cluster.

joblib (``Parallel(batch_size=1, return_as="generator_unordered")``) hands back outcomes as jobs end,
so the parent prints one line per job as it finishes. The dask backend uses joblib's ``dask`` backend
on a ``dask.distributed`` client: an existing scheduler (``--scheduler ADDRESS``) or a LocalCluster of
``n_jobs`` single-threaded worker processes. Workers log to MLflow themselves, with the parent run id
passed explicitly (the active-run stack is per thread).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence

from mmbench.runner.job import CLAIMED, JobContext, JobOutcome, execute_job, job_claim
from mmbench.runner.plan import Job

BACKENDS = ("loky", "dask")
SCHEDULER_PROBE_S = 5.0  # how long to try reaching a dask scheduler before giving up


class BackendError(RuntimeError):
    """The execution backend cannot be used (an unreachable scheduler, a missing package); says what to do."""
Task = tuple[Job, str | None]  # (job, the run id of its last unfinished attempt)


def threads_per_job(n_jobs: int) -> int:
    """CPU threads for torch in each worker, so that ``n_jobs`` workers do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, n_jobs))


def job_threads(threads: int | None, n_jobs: int, backend: str) -> int | None:
    """torch CPU threads each job of a run gets: ``threads`` when given, else torch's default (None) for jobs
    run one at a time in process, else :func:`threads_per_job`."""
    if threads:
        return threads
    return None if n_jobs == 1 and backend == "loky" else threads_per_job(n_jobs)


def execute(
    tasks: Sequence[Task], ctx: JobContext, backend: str, n_jobs: int, scheduler: str | None,
    on_start: Callable[[Job], None], on_done: Callable[[JobOutcome], None],
) -> list[JobOutcome]:
    """Run every task and return the outcomes (in completion order)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if not tasks:
        return []
    if backend == "loky" and (n_jobs == 1 or len(tasks) == 1):
        return _sequential(tasks, ctx, on_start, on_done)
    stream = _loky(tasks, ctx, n_jobs) if backend == "loky" else _dask(tasks, ctx, n_jobs, scheduler)
    outcomes = []
    by_id = {job.job_id: job for job, _ in tasks}
    with StartWatcher([job for job, _ in tasks], ctx.invocation, on_start), stream as results:
        for outcome in results:
            if outcome.status != CLAIMED:
                on_start(by_id[outcome.job_id])  # ended before the watcher saw it start (on_start says it once)
            on_done(outcome)
            outcomes.append(outcome)
    return outcomes


class StartWatcher:
    """Reports a job as started when a worker of this invocation takes its claim (the claim file names
    the invocation), polling every ``poll_s`` seconds in a thread: workers of other processes or machines
    (sharing the home) need no channel back to the parent."""

    def __init__(self, jobs: Sequence[Job], invocation: str, on_start: Callable[[Job], None], poll_s: float = 0.5) -> None:
        self.pending = {job.job_id: job for job in jobs}
        self.invocation, self.on_start, self.poll_s = invocation, on_start, poll_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="mmbench-job-starts", daemon=True)

    def __enter__(self) -> StartWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _watch(self) -> None:
        while self.pending and not self.stop.is_set():
            for job_id, job in list(self.pending.items()):
                holder = job_claim(job).holder()
                if holder is not None and holder.invocation == self.invocation:
                    del self.pending[job_id]
                    self.on_start(job)
            self.stop.wait(self.poll_s)


def _sequential(tasks: Sequence[Task], ctx: JobContext, on_start: Callable[[Job], None],
                on_done: Callable[[JobOutcome], None]) -> list[JobOutcome]:
    outcomes = []
    for job, previous in tasks:
        on_start(job)
        outcome = execute_job(job, ctx, previous)
        on_done(outcome)
        outcomes.append(outcome)
    return outcomes


@contextlib.contextmanager
def _loky(tasks: Sequence[Task], ctx: JobContext, n_jobs: int) -> Iterator[Iterator[JobOutcome]]:
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=n_jobs, backend="loky", batch_size=1, return_as="generator_unordered")
    yield parallel(delayed(execute_job)(job, ctx, previous) for job, previous in tasks)


@contextlib.contextmanager
def _dask(tasks: Sequence[Task], ctx: JobContext, n_jobs: int, scheduler: str | None) -> Iterator[Iterator[JobOutcome]]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise BackendError("the dask backend needs dask.distributed: pip install 'mmbench[dask]'") from None
    from joblib import Parallel, delayed, parallel_config

    with contextlib.ExitStack() as stack:
        if scheduler:
            stack.enter_context(Client(scheduler, timeout="30s"))
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=max(1, n_jobs), threads_per_worker=1, processes=True, dashboard_address=None,
            ))
            stack.enter_context(Client(cluster))
        stack.enter_context(parallel_config(backend="dask", wait_for_workers_timeout=60))
        parallel = Parallel(n_jobs=-1, batch_size=1, return_as="generator_unordered")
        yield parallel(delayed(execute_job)(job, ctx, previous) for job, previous in tasks)


def check_scheduler(address: str, timeout: float = SCHEDULER_PROBE_S) -> None:
    """Fail in seconds, with one line, when nothing listens at a dask scheduler's TCP address.

    ``tcp://host:port``, ``tls://host:port`` or ``host:port`` (dask's default port 8786 when none is given);
    other protocols (``inproc://``, ``ucx://``) are left to dask.
    """
    import socket
    import urllib.parse

    parsed = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    if parsed.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parsed.hostname or "", parsed.port or 8786
    except ValueError:
        raise BackendError(f"--scheduler {address!r} is not an address; pass e.g. tcp://HOST:8786") from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise BackendError(
            f"cannot reach the dask scheduler at {address} ({exc.strerror or exc}); start it (`dask scheduler`) "
            "or leave --scheduler out to use a LocalCluster of --n-jobs workers"
        ) from None


def describe_backend(backend: str, n_jobs: int, scheduler: str | None) -> str:
    if backend == "dask":
        return f"dask on {scheduler}" if scheduler else f"dask LocalCluster ({n_jobs} single-threaded workers)"
    return "in process" if n_jobs == 1 else f"loky ({n_jobs} processes)"
