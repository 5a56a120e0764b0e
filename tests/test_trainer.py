"""The stage-aware trainer (``mmbench.training.trainer``) on a tiny two-stage model defined here.

Resume after a stop is bit-identical to an uninterrupted run; checkpoints of another config are refused;
a NaN loss raises ``TrainingDivergedError`` naming model, stage and step and keeps the last good
checkpoint; a stage with a ``reuse_key`` is trained once and loaded by the next model; the callback sees
train/val metrics; the cosine schedule and warm-up follow their formulas; only the current stage trains.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmbench.contract import MultimodalModel, Stage, StageHParams
from mmbench.data.synthetic import make_patterns
from mmbench.seeding import seed_everything
from mmbench.training import checkpoint as ckpt
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.trainer import (
    TrainerOptions,
    TrainingDivergedError,
    TrainingStopped,
    _make_scheduler,
    _only_stage_trainable,
    stage_progress,
    train_model,
)

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@dataclass(frozen=True)
class TinyConfig:
    steps: int = 6
    head_steps: int = 5
    batch_size: int = 8
    lr: float = 1e-2
    checkpoint_every: int = 2
    nan_at: int = -1  # the training step (of stage "recon") whose loss is NaN; -1 = never
    reuse_key: str | None = None
    ema_decay: float = 0.0  # of stage "recon"
    head_schedule: str = "constant"


class Tiny(MultimodalModel):
    """A noisy linear autoencoder per modality (stage "recon"), then a label head on its codes ("head")."""

    Config = TinyConfig

    def __init__(self, modalities, config: TinyConfig) -> None:
        super().__init__(modalities, config)
        self.ae = nn.ModuleDict(
            {m: nn.Sequential(nn.Flatten(), nn.Linear(147, 4), nn.BatchNorm1d(4), nn.Linear(4, 147)) for m in modalities}
        )
        self.head = nn.Linear(4 * len(modalities), 10)
        self.recon_calls: list[float] = []
        self.head_calls = 0
        self.snapshot: dict[str, torch.Tensor] = {}
        self.param_trace: list[dict[str, torch.Tensor]] = []  # "recon"'s parameters at each of its steps

    def _small(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4)  # 3×7×7 = 147

    def recon_loss(self, batch, labels):
        total = 0.0
        for m, net in self.ae.items():
            x = self._small(batch[m])
            code = net[:3](x)
            code = code + 0.1 * torch.randn_like(code)  # uses the global RNG, so resume must restore it
            total = total + F.mse_loss(net[3](code), x.flatten(1))
        if self.ae.training and len(self.recon_calls) == self.config.nan_at:
            total = total * float("nan")
        if self.ae.training:  # the trainer puts only the stage's module in train mode
            self.recon_calls.append(float(total.detach()))
            self.param_trace.append({k: v.detach().clone() for k, v in self.ae.named_parameters()})
        return {"loss": total, "mse": total.detach() / len(self.ae)}

    def head_loss(self, batch, labels):
        self.head_calls += 1
        codes = torch.cat([net[:3](self._small(batch[m])) for m, net in self.ae.items()], dim=1)
        codes = codes + 0.1 * torch.randn_like(codes)  # the global RNG again
        return {"loss": F.cross_entropy(self.head(codes), labels)}

    def _snapshot(self) -> None:
        self.snapshot = {k: v.clone() for k, v in self.ae.state_dict().items()}

    def stages(self):
        c = self.config
        hp = StageHParams(steps=c.steps, batch_size=c.batch_size, lr=c.lr, checkpoint_every=c.checkpoint_every,
                          ema_decay=c.ema_decay)
        head_hp = StageHParams(steps=c.head_steps, batch_size=c.batch_size, lr=c.lr, checkpoint_every=c.checkpoint_every,
                               lr_schedule=c.head_schedule)
        return [
            Stage("recon", self.ae, self.recon_loss, hp, reuse_key=c.reuse_key, finalize=self._snapshot),
            Stage("head", self.head, self.head_loss, head_hp),
        ]


MODS = ("m0", "m1")


@pytest.fixture(scope="module")
def data():
    return make_patterns(2, n=32, seed=0)  # 4 batches of 8 per epoch


def build(seed: int = 0, **overrides) -> Tiny:
    seed_everything(seed)
    return Tiny(MODS, TinyConfig(**overrides))


def options(workdir, **kw) -> TrainerOptions:
    kw.setdefault("config_hash", "h1")
    return TrainerOptions(workdir=workdir, seed=0, quiet=True, model_name="tiny-model", **kw)


def stop_after(n_checks: int):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > n_checks

    return should_stop


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_stage_progress_is_what_a_rerun_resumes_from(data, tmp_path):
    assert stage_progress(build(), options(tmp_path)) == [("recon", 0, False), ("head", 0, False)]
    with pytest.raises(TrainingStopped):  # stops before recon's 8th step: checkpoint at the stop (7)
        train_model(build(), data, None, options(tmp_path, should_stop=stop_after(7)))
    assert stage_progress(build(), options(tmp_path)) == [("recon", 6, True), ("head", 1, False)]
    train_model(build(), data, None, options(tmp_path))
    assert stage_progress(build(), options(tmp_path)) == [("recon", 6, True), ("head", 5, True)]


def test_stage_progress_counts_a_stored_artifact_as_finished(data, tmp_path):
    store = ArtifactStore(tmp_path / "store")
    train_model(build(reuse_key="k"), data, None, options(tmp_path / "a", artifacts=store))
    assert stage_progress(build(reuse_key="k"), options(tmp_path / "b", artifacts=store))[0] == ("recon", 0, True)


@pytest.mark.parametrize("steps_before_stop", [3, 8])  # inside stage "recon"; inside stage "head"
def test_resume_after_stop_is_bit_identical(data, tmp_path, steps_before_stop):
    reference = build()
    train_model(reference, data, None, options(tmp_path / "a"))
    interrupted = build()
    with pytest.raises(TrainingStopped):
        train_model(interrupted, data, None, options(tmp_path / "b", should_stop=stop_after(steps_before_stop)))
    resumed = build()  # a fresh process builds the same model; the trained state comes from the checkpoint
    train_model(resumed, data, None, options(tmp_path / "b"))
    assert_same_state(resumed, reference)


def test_a_finished_stage_asked_for_more_steps_trains_on_to_the_uninterrupted_state(data, tmp_path):
    """Raising a finished last stage's steps under the same config hash (an extended record) trains the missing
    steps from its checkpoint, bit-identical to training them in one go; earlier stages are not retrained."""
    reference = build(head_steps=9)
    train_model(reference, data, None, options(tmp_path / "a"))
    train_model(build(head_steps=5), data, None, options(tmp_path / "b"))
    assert stage_progress(build(head_steps=9), options(tmp_path / "b")) == [("recon", 6, True), ("head", 5, False)]
    extended = build(head_steps=9)
    train_model(extended, data, None, options(tmp_path / "b"))
    assert (extended.recon_calls, extended.head_calls) == ([], 4)
    assert_same_state(extended, reference)
    again = build(head_steps=9)  # now finished at its steps: loaded, nothing trained
    train_model(again, data, None, options(tmp_path / "b"))
    assert again.head_calls == 0 and stage_progress(again, options(tmp_path / "b"))[1] == ("head", 9, True)


def test_a_finished_cosine_stage_cannot_be_extended(data, tmp_path):
    train_model(build(head_steps=5, head_schedule="cosine"), data, None, options(tmp_path))
    with pytest.raises(ValueError, match="'head' finished at step 5 under a cosine schedule .* new work folder"):
        train_model(build(head_steps=9, head_schedule="cosine"), data, None, options(tmp_path))


def test_each_stage_records_the_code_its_steps_were_trained_with(data, tmp_path):
    """A stage stopped under one code version and finished under another records both, in order, in its
    checkpoint and its stored artifact; a rerun that loads it (checkpoint or store) reports them, so a run
    can say which of its stages were trained with code other than its own."""
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(TrainingStopped):  # stops inside "recon"
        train_model(build(reuse_key="k"), data, None,
                    options(tmp_path / "a", artifacts=store, code_version="c1", should_stop=stop_after(3)))
    reports = train_model(build(reuse_key="k"), data, None, options(tmp_path / "a", artifacts=store, code_version="c2"))
    assert [(r.name, r.code_versions) for r in reports] == [("recon", ("c1", "c2")), ("head", ("c2",))]
    again = train_model(build(reuse_key="k"), data, None, options(tmp_path / "a", artifacts=store, code_version="c3"))
    assert [r.code_versions for r in again] == [("c1", "c2"), ("c2",)]  # loaded from finished checkpoints
    other = train_model(build(reuse_key="k"), data, None, options(tmp_path / "b", artifacts=store, code_version="c3"))
    assert other[0].reused and other[0].code_versions == ("c1", "c2")  # "recon" from the store
    assert other[1].code_versions == ("c3",)
    assert train_model(build(), data, None, options(tmp_path / "c"))[0].code_versions == ()  # none given: none kept


def test_checkpoint_of_another_config_is_refused(data, tmp_path):
    with pytest.raises(TrainingStopped):
        train_model(build(), data, None, options(tmp_path, config_hash="aaaa", should_stop=stop_after(3)))
    with pytest.raises(ckpt.CheckpointMismatchError, match="aaaa.*bbbb.*Delete"):
        train_model(build(), data, None, options(tmp_path, config_hash="bbbb"))


def test_nan_loss_raises_with_model_stage_and_step_and_keeps_last_good_checkpoint(data, tmp_path):
    model = build(nan_at=5)
    with pytest.raises(TrainingDivergedError, match=r"tiny-model.*'recon'.*step 5"):
        train_model(model, data, None, options(tmp_path))
    state = ckpt.load(tmp_path / "checkpoints" / "recon.pt", "h1")
    assert state.step == 4 and not state.done
    assert all(torch.isfinite(v).all() for v in state.module.values() if v.is_floating_point())


def test_stage_with_reuse_key_is_trained_once_then_loaded(data, tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    first = build(reuse_key="shared-recon")
    reports = train_model(first, data, None, options(tmp_path / "one", artifacts=store))
    assert not reports[0].reused and store.has("shared-recon")
    second = build(seed=7, reuse_key="shared-recon")
    reports = train_model(second, data, None, options(tmp_path / "two", artifacts=store))
    assert reports[0].reused and not reports[1].reused
    assert second.recon_calls == []  # stage "recon" was loaded, not trained
    assert_same_state(second.ae, first.ae)
    assert second.snapshot.keys() == first.snapshot.keys()  # finalize ran after loading


def test_artifact_keys_are_file_names_and_their_locks_exclude_per_key(tmp_path):
    """A key names one file in the store's folder (no path separator, not hidden, not empty); its lock
    keeps a second holder of the same key waiting while other keys go ahead; what is saved loads back (onto the
    CPU by default) and its sidecar records the file's sha256 (what a later load verifies)."""
    import hashlib
    import threading

    store = ArtifactStore(tmp_path / "not" / "yet")
    assert store.path("ae-3f2a") == tmp_path / "not" / "yet" / "ae-3f2a.pt"
    assert store.path("a.b") == store.root / "a.b.pt"
    for bad in ("", "ae/m0", "../up", ".hidden", "a/.b"):
        with pytest.raises(ValueError, match=rf"invalid artifact key {re.escape(repr(bad))}"):
            store.path(bad)
    entered, done = threading.Event(), threading.Event()

    def second_holder(key: str) -> None:
        with ArtifactStore(store.root).lock(key):
            entered.set()
        done.set()

    with store.lock("k"):  # creates the missing folders
        other = threading.Thread(target=second_holder, args=("j",))
        other.start()
        assert entered.wait(10), "another key's lock is free"
        other.join(10)
        entered.clear()
        done.clear()
        same = threading.Thread(target=second_holder, args=("k",))
        same.start()
        assert not entered.wait(0.5), "the same key's lock waits for its holder"
    assert entered.wait(10) and done.wait(10)
    same.join(10)
    with store.lock("k"):  # again, with the folder there
        pass

    assert store.load("k") is None and not store.has("k")
    store.save("k", {"w": torch.arange(3.0)}, {"note": "x"})
    state, meta = store.load("k")  # onto the CPU by default
    assert torch.equal(state["w"], torch.arange(3.0)) and meta == {"note": "x"} and store.has("k")
    sidecar = store.path("k").with_name("k.pt.sha256").read_text().split()
    assert sidecar == [hashlib.sha256(store.path("k").read_bytes()).hexdigest(), "k.pt"]


def test_a_stage_after_a_loaded_stage_trains_as_after_a_trained_one(data, tmp_path):
    """Each stage starts the RNG from (seed, stage): the head trained after loading "recon" from the store
    equals the head trained after training "recon" in the job (the stream no longer depends on history)."""
    store = ArtifactStore(tmp_path / "artifacts")
    trained_here = build(reuse_key="recon-k")
    train_model(trained_here, data, None, options(tmp_path / "one", artifacts=store))
    loaded = build(reuse_key="recon-k")
    reports = train_model(loaded, data, None, options(tmp_path / "two", artifacts=store))
    assert reports[0].reused and not reports[1].reused
    assert_same_state(loaded.head, trained_here.head)


def test_callback_receives_train_and_val_metrics(data, tmp_path):
    seen: list[tuple[str, int, dict[str, float]]] = []
    model = build()
    val = make_patterns(2, n=16, seed=1)
    train_model(model, data, val, options(tmp_path, log_every=2, callback=lambda s, i, v: seen.append((s, i, v))))
    recon = [(i, v) for s, i, v in seen if s == "recon"]
    train_logs = [(i, v) for i, v in recon if "train/loss" in v]
    assert [i for i, _ in train_logs] == [2, 4, 6]
    assert all(set(v) == {"train/loss", "train/mse"} for _, v in train_logs)
    for i, v in train_logs:  # the mean of the losses since the previous log
        assert v["train/loss"] == pytest.approx(sum(model.recon_calls[i - 2 : i]) / 2, rel=1e-6)
    val_logs = [i for i, v in recon if "val/loss" in v]
    assert val_logs == [4]  # once per epoch (4 batches of 8)
    assert any("val/loss" in v for s, _, v in seen if s == "head")


def _stage_with(hparams: StageHParams) -> tuple[Stage, torch.optim.Optimizer]:
    module = nn.Linear(2, 2)
    stage = Stage("s", module, lambda b, y: {}, hparams)
    return stage, torch.optim.Adam(module.parameters(), lr=hparams.lr)


def test_cosine_schedule_and_warmup_follow_their_formulas():
    stage, opt = _stage_with(StageHParams(steps=10, lr=0.1, lr_schedule="cosine"))
    sched = _make_scheduler(stage, opt)
    for t in range(12):
        expected = 0.1 * 0.5 * (1 + math.cos(math.pi * min(1.0, t / 10)))
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12)
        opt.step()
        sched.step()
    stage, opt = _stage_with(StageHParams(steps=10, lr=0.1, warmup_steps=4))
    sched = _make_scheduler(stage, opt)
    for t in range(6):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * min(1.0, (t + 1) / 4))
        opt.step()
        sched.step()
    stage, opt = _stage_with(StageHParams(steps=10, lr_schedule="linear"))
    with pytest.raises(ValueError, match="lr_schedule"):
        _make_scheduler(stage, opt)


class Counted(MultimodalModel):
    """One stage of 0 steps whose prepare pass sets a buffer to the mean pixel of m0 (nothing to optimise)."""

    Config = TinyConfig

    def __init__(self, modalities, config: TinyConfig) -> None:
        super().__init__(modalities, config)
        self.register_buffer("mean", torch.zeros(()))
        self.prepared = 0

    def count(self, batches) -> None:
        total, n = 0.0, 0
        for batch, _ in batches():
            total, n = total + float(batch["m0"].sum()), n + batch["m0"].numel()
        self.mean.fill_(total / n)
        self.prepared += 1

    def stages(self) -> list[Stage]:
        return [Stage("count", self, self._no_loss, StageHParams(steps=self.config.steps, batch_size=8),
                      prepare=self.count)]

    def _no_loss(self, batch, labels):
        raise AssertionError("a stage of 0 steps is never optimised")

    def _sample_conditional(self, batch, given, targets):
        raise AssertionError("the counting test model is trained only, never sampled")


def test_a_stage_of_0_steps_needs_no_trainable_parameter_and_is_loaded_when_done(data, tmp_path):
    """A counting stage (the F1 floors' kind) trains without an optimiser: its prepare pass is the stage, its
    checkpoint holds the count and no optimiser state, and a rerun loads it instead of counting again. A stage
    that is to take steps with nothing to optimise is refused, naming the stage."""
    model = Counted(MODS, TinyConfig(steps=0))
    (report,) = train_model(model, data, None, options(tmp_path))
    expected = float(data.images["m0"].astype("float64").mean() / 255.0)
    assert report.steps == 0 and not report.reused and model.prepared == 1
    assert float(model.mean) == pytest.approx(expected, rel=1e-5)
    state = ckpt.load_or_recover(tmp_path / "checkpoints" / "count.pt", "h1")
    assert state is not None and state.done and state.optimizer is None and state.scheduler is None
    again = Counted(MODS, TinyConfig(steps=0))
    (report,) = train_model(again, data, None, options(tmp_path))
    assert report.reused and again.prepared == 0 and float(again.mean) == float(model.mean)
    with pytest.raises(ValueError, match="stage 'count' has no trainable parameters to take its 3 steps"):
        train_model(Counted(MODS, TinyConfig(steps=3)), data, None, options(tmp_path / "other"))


def test_only_the_current_stage_trains(data, tmp_path):
    model = build()
    head_stage = model.stages()[1]
    model.train()
    with _only_stage_trainable(model, head_stage):
        assert not any(p.requires_grad for p in model.ae.parameters())
        assert all(p.requires_grad for p in model.head.parameters())
        assert not any(m.training for m in model.ae.modules()) and model.head.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    train_model(model, data, None, options(tmp_path))
    assert model.head_calls == 5
    after = model.ae.state_dict()  # the head stage left the autoencoder (incl. batch-norm stats) alone
    assert all(torch.equal(after[k], v) for k, v in model.snapshot.items())


# --- EMA of a stage's parameters ---------------------------------------------------------------------------
def test_an_ema_stage_finishes_with_the_average_of_its_steps(data, tmp_path):
    """The finished module holds score_sde's warmed-up average of the parameters after every step (computed
    here independently from the parameters seen at each step); the checkpoint keeps the raw weights too."""
    model = build(ema_decay=0.9)
    train_model(model, data, None, options(tmp_path))
    raw = ckpt.load(tmp_path / "checkpoints" / "recon.pt", "h1").module
    after_each_step = model.param_trace[1:] + [{k: raw[k] for k in model.param_trace[0]}]
    expected = dict(model.param_trace[0])
    for n, params in enumerate(after_each_step, start=1):
        decay = min(0.9, (1 + n) / (10 + n))
        expected = {k: decay * expected[k] + (1 - decay) * params[k] for k in expected}
    for name, p in model.ae.named_parameters():
        torch.testing.assert_close(p, expected[name], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(p, raw[name]), "the average differs from the last step's weights"
    buffers = dict(model.ae.named_buffers())
    assert torch.equal(buffers["m0.2.running_mean"], raw["m0.2.running_mean"]), "buffers are not averaged"


def test_an_ema_stage_resumes_to_the_same_average(data, tmp_path):
    whole = build(ema_decay=0.9)
    train_model(whole, data, None, options(tmp_path / "a"))
    with pytest.raises(TrainingStopped):
        train_model(build(ema_decay=0.9), data, None, options(tmp_path / "b", should_stop=stop_after(3)))
    resumed = build(ema_decay=0.9)
    train_model(resumed, data, None, options(tmp_path / "b"))
    assert_same_state(whole, resumed)


def test_a_finished_ema_stage_loads_its_average_from_the_checkpoint(data, tmp_path):
    trained = build(ema_decay=0.9)
    train_model(trained, data, None, options(tmp_path))
    again = build(seed=5, ema_decay=0.9)
    train_model(again, data, None, options(tmp_path))  # both stages done: loaded, not trained
    assert again.recon_calls == []
    assert_same_state(trained, again)


def test_the_ema_decay_is_part_of_the_reuse_key():
    hp = StageHParams(steps=1)
    plain = Stage("s", nn.Linear(1, 1), lambda b, y: {}, hp, reuse_key="k")
    averaged = Stage("s", nn.Linear(1, 1), lambda b, y: {}, StageHParams(steps=1, ema_decay=0.999), reuse_key="k")
    other = Stage("s", nn.Linear(1, 1), lambda b, y: {}, StageHParams(steps=1, ema_decay=0.99), reuse_key="k")
    assert plain.reuse_key == "k"
    assert len({plain.reuse_key, averaged.reuse_key, other.reuse_key}) == 3


def test_averaged_weights_shows_the_average_during_training(data, tmp_path):
    """What an evaluation during training sees inside ``averaged_weights`` is what the finished stage holds."""
    from mmbench.training.ema import averaged_weights

    model = build(ema_decay=0.9)
    seen: dict[str, torch.Tensor] = {}

    def callback(stage: str, step: int, values: dict) -> None:
        if stage == "recon" and step == 6 and "val/loss" not in values:
            raw = {k: v.clone() for k, v in model.ae.named_parameters()}
            with averaged_weights(model):
                seen.update({k: v.clone() for k, v in model.ae.named_parameters()})
            for k, v in model.ae.named_parameters():
                assert torch.equal(v, raw[k]), "the raw weights are back after the block"

    train_model(model, data, None, options(tmp_path, callback=callback, log_every=1))
    for k, v in model.ae.named_parameters():
        assert torch.equal(v, seen[k])


def test_ema_decay_bounds_and_a_mismatched_state_are_refused_by_name():
    """The decay lies in the open interval (0, 1): 0 (no averaging) and 1 (no update) are refused, as is a
    stored average of another decay or of other parameters (the message names what differs, at most 5)."""
    from mmbench.training.ema import ParameterEMA

    module = nn.Linear(2, 3)
    for decay in (0.0, 1.0, 1.5, -0.5):
        with pytest.raises(ValueError, match=rf"an EMA decay must lie in \(0, 1\), got {decay}"):
            ParameterEMA(module, decay)
    for decay in (1e-9, 0.5, 1 - 1e-9):
        assert ParameterEMA(module, decay).decay == decay
    ema = ParameterEMA(module, 0.9)
    with pytest.raises(ValueError, match="EMA state has decay 0.99, this stage asks for 0.9"):
        ema.load_state_dict(ParameterEMA(module, 0.99).state_dict())
    other = ParameterEMA(nn.Sequential(*(nn.Linear(1, 1) for _ in range(3))), 0.9).state_dict()
    expected = sorted(set(ema.shadow) ^ set(other["shadow"]))  # 2 of ours + 6 of theirs
    assert len(expected) == 8
    with pytest.raises(ValueError, match="does not match the module's parameters") as refused:
        ema.load_state_dict(other)
    assert str(refused.value).endswith(str(expected[:5]))
    ema.update(module)
    ema.load_state_dict(ParameterEMA(module, 0.9).state_dict())  # the same parameters and decay: taken
    assert ema.updates == 0


def test_progress_on_a_non_terminal_is_plain_lines(data, tmp_path, capsys):
    """Piped output (pytest's capture is not a terminal) gets lines, never a bar's carriage returns."""
    train_model(build(), data, None, TrainerOptions(workdir=tmp_path, config_hash="h1", seed=0, model_name="tiny-model"))
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "tiny-model:recon: 6/6 (100 %)" in err and "tiny-model:head: 5/5 (100 %)" in err
