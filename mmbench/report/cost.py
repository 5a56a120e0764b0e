"""The report's cost section: what each row's finished run took, from the times the runner logs with it.

Per run: the finishing attempt's wall time (``job/seconds``) and CPU time (``job/cpu_seconds``, logged since
fbf2d99), its trained stages' and its evaluation's wall time, how many stages it loaded instead of training,
and the threads and device it ran with; and the wall and CPU time of the job's earlier attempts, killed ones
included (``job/earlier_attempts_seconds``, from the heartbeats of :mod:`mmbench.runner.attempts`). A run
resumed before those were logged covers its last attempt only; the table marks it rather than guess the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmbench.progress import format_seconds
from mmbench.records import Metric, Tag
from mmbench.report.collect import Collected

STAGE_PREFIX = "stage/"


@dataclass(frozen=True)
class RunCost:
    row: str
    seed: int
    wall: float | None  # seconds
    cpu: float | None  # seconds; None where the run predates the metric
    training: float  # wall seconds of the stages this attempt trained
    evaluation: float | None
    stages: int
    reused: int
    threads: str
    device: str
    resumed: bool
    attempts: int | None = None  # the job's attempts, the finishing one included; None: not logged
    earlier: float | None = None  # wall seconds of the earlier attempts
    earlier_cpu: float | None = None

    @property
    def uncounted(self) -> bool:
        """Resumed, and its earlier attempts' time was not logged."""
        return self.resumed and self.attempts is None


def run_costs(collected: Collected) -> list[RunCost]:
    """One entry per run the report uses, in its row then seed order."""
    return [_cost_of(run.tags[Tag.VARIANT], run.tags, run.metrics) for run in collected.runs]


def _cost_of(row: str, tags: dict[str, str], metrics: dict[str, float]) -> RunCost:
    stages = {key[len(STAGE_PREFIX):].rsplit("/", 1)[0] for key in metrics
              if key.startswith(STAGE_PREFIX) and key.endswith("/seconds")}
    reused = {s for s in stages if metrics.get(f"{STAGE_PREFIX}{s}/reused", 0.0)}
    training = sum(metrics[f"{STAGE_PREFIX}{s}/seconds"] for s in stages - reused)
    return RunCost(row=row, seed=int(tags.get(Tag.SEED, "0")), wall=metrics.get(Metric.JOB_SECONDS),
                   cpu=metrics.get(Metric.JOB_CPU_SECONDS), training=training,
                   evaluation=metrics.get(Metric.EVAL_SECONDS), stages=len(stages), reused=len(reused),
                   threads=tags.get(Tag.THREADS, "?"), device=tags.get(Tag.DEVICE, "?"), resumed=Tag.RESUMED_FROM in tags,
                   attempts=None if Metric.ATTEMPTS not in metrics else int(metrics[Metric.ATTEMPTS]),
                   earlier=metrics.get(Metric.EARLIER_SECONDS), earlier_cpu=metrics.get(Metric.EARLIER_CPU_SECONDS))


HEADERS = ("Row", "Seed", "Wall", "CPU", "Training", "Evaluation", "Stages loaded", "Earlier attempts", "Threads",
           "Device")
NOTE = ("Wall and CPU time are the finishing attempt's (CPU time logged since fbf2d99). A loaded stage was trained "
        "elsewhere (another row's job, a record, an earlier attempt) and costs nothing here. Earlier attempts: "
        "how many the job took before the finishing one and their wall and CPU time, those killed outright counted "
        "to their last heartbeat (a minute apart; logged since 2026-12-02). [r]: resumed before that; its earlier "
        "attempts are not counted.")


def _time(seconds: float | None) -> str:
    return "—" if seconds is None else format_seconds(seconds)


def _earlier(c: RunCost) -> str:
    if c.attempts is None:
        return "—"
    if c.attempts <= 1:
        return "none"
    return f"{c.attempts - 1}: {_time(c.earlier)}, CPU {_time(c.earlier_cpu)}"


def cells(c: RunCost) -> list[str]:
    """One run's row of the table, in :data:`HEADERS`' order (``[r]`` marks a resumed run whose earlier
    attempts are not counted)."""
    return [c.row + (" [r]" if c.uncounted else ""), str(c.seed), _time(c.wall), _time(c.cpu), _time(c.training),
            _time(c.evaluation), f"{c.reused} of {c.stages}", _earlier(c), c.threads, c.device]


def totals(costs: list[RunCost]) -> str:
    """``Total over 8 runs: wall …, CPU …``, each summed over the runs that logged it."""
    walls = [c.wall for c in costs if c.wall is not None]
    cpus = [c.cpu for c in costs if c.cpu is not None]
    earlier = [c for c in costs if c.attempts is not None]
    return (f"Total over {len(costs)} runs: wall {format_seconds(sum(walls))} (logged by {len(walls)} of "
            f"{len(costs)}), CPU {format_seconds(sum(cpus))} (logged by {len(cpus)} of {len(costs)}); their earlier "
            f"attempts: wall {format_seconds(sum(c.earlier or 0.0 for c in earlier))}, CPU "
            f"{format_seconds(sum(c.earlier_cpu or 0.0 for c in earlier))} (logged by {len(earlier)} of {len(costs)}).")


def to_markdown(costs: list[RunCost]) -> str:
    """The section's table, its totals and the note on resumed runs."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(cells(c)) + " |" for c in costs]
    lines += ["", totals(costs), "", NOTE]
    return "\n".join(lines) + "\n"
