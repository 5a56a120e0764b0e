"""Evaluation progress: sample generation is counted per metric with the time left, as plain lines."""

from __future__ import annotations

import re

import pytest

from mmbench import progress
from mmbench.progress import CountLines

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

LINE = re.compile(r"^\[eval\] (?P<phase>.+): generat(?:ing|ed) (?P<done>\d+)/(?P<total>\d+) (?P<noun>[\w ,]*samples)")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_count_lines_start_a_phase_extrapolate_its_rate_and_wait_their_interval():
    clock, said = Clock(), []
    lines = CountLines(said.append, interval=10.0, clock=clock)
    lines("coherence", 0, 5000)
    clock.now = 5.0
    lines("coherence", 1000, 5000)  # within the interval: nothing
    clock.now = 12.0
    lines("coherence", 1200, 5000)  # 100 samples/s so far: 3800 left take 38 s
    clock.now = 13.0
    lines("coherence", 1300, 5000)
    clock.now = 20.0
    lines("coherence", 5000, 5000)  # the end of a phase is always said
    assert said == [
        "coherence: generating 5000 samples",
        "coherence: generating 1200/5000 samples, ~38s left",
        "coherence: generated 5000/5000 samples in 20s",
    ]
    lines("fid", 0, 30, "unconditional samples")  # a new phase restarts the rate's clock
    clock.now = 50.0
    lines("fid", 10, 30, "unconditional samples")
    assert said[-2:] == ["fid: generating 30 unconditional samples", "fid: generating 10/30 unconditional samples, ~1m00s left"]


def test_an_evaluation_prints_counted_generation_per_metric_without_carriage_returns(
        patterns3, patterns_classifier, tmp_path, tmp_path_factory, capsys, monkeypatch):
    from classifiers.store import save_classifier
    from mmbench.dummy import DummyConfig, DummyModel
    from mmbench.metrics import EvalSettings, evaluate

    monkeypatch.setattr(progress, "COUNT_INTERVAL_S", 0.0)  # every count, so a tiny evaluation shows them
    path = str(save_classifier(patterns_classifier, "patterns3-eval", {}, tmp_path_factory.mktemp("clf")).path)
    _, test = patterns3
    model = DummyModel(test.modalities, DummyConfig())
    settings = EvalSettings(n_conditional=30, n_unconditional=40, batch_size=10, generation_batch=25,
                            classifier=path, substitute=path, kid_subsets=5, grid_size=0)
    evaluate(model, test, ["coherence", "unconditional_coherence", "fgsm"], settings, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    counted: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for line in err.splitlines():
        if m := LINE.match(line):
            counted.setdefault((m["phase"], m["noun"]), []).append((int(m["done"]), int(m["total"])))
    assert set(counted) >= {("coherence, fgsm", "samples"), ("unconditional_coherence", "unconditional samples"),
                            ("fgsm", "loo_fgsm samples")}
    for phase, counts in counted.items():
        done = [d for d, _ in counts]
        assert done == sorted(set(done)) and len(done) >= 2, (phase, counts)  # strictly increasing
        assert done[-1] == counts[0][1]  # ends at the total
        assert f"[eval] {phase[0]}: generating {counts[0][1]} {phase[1]}" in err.splitlines()  # the phase's start
    assert counted[("unconditional_coherence", "unconditional samples")] == [(10, 40), (20, 40), (30, 40), (40, 40)]
    assert re.search(r"^\[eval\] unconditional_coherence: generating 10/40 unconditional samples, ~(\d+m)?\d+s left$",
                     err, re.M)
