"""The stage-aware trainer: loops over a model's stages, never over model names.

Each stage trains ``stage.module`` by Adam on ``stage.loss``. Batches come straight from the in-memory
dataset in a per-epoch permutation seeded by (seed, stage, epoch), so an interrupted stage resumes at
the same batch with the same RNG state and ends with the same weights as an uninterrupted run. Each stage
starts torch's RNG from (seed, stage name), so what a stage draws does not depend on whether the stages
before it were trained in this job or loaded from the artifact store (nor on job order).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmbench import atomic
from mmbench.contract import MultimodalModel, Stage
from mmbench.data.dataset import MultimodalDataset
from mmbench.progress import progress_bar
from mmbench.seeding import derive_seed
from mmbench.training import checkpoint as ckpt
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.device import autocast, needs_grad_scaler
from mmbench.training.ema import ParameterEMA, copy_average, track

# (stage name, step, {metric: value}) -> None; keys are flat "train/..." or "val/..." names.
MetricCallback = Callable[[str, int, dict[str, float]], None]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingStopped(RuntimeError):
    """A stop flag was raised between steps; the last checkpoint is kept and the run can resume."""


@dataclass
class TrainerOptions:
    workdir: Path  # checkpoints go to workdir/checkpoints/<stage>.pt
    config_hash: str  # checkpoints written by another config are refused
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = False  # mixed precision (CUDA only; ignored on CPU)
    compile: bool = False  # torch.compile the stage module
    quiet: bool = False  # no progress bars
    log_every: int = 50
    callback: MetricCallback | None = None
    artifacts: ArtifactStore | None = None
    should_stop: Callable[[], bool] | None = None  # checked between steps (no signal handlers here)
    model_name: str = "model"
    progress_label: str | None = None  # names the progress lines (default: model_name); parallel jobs differ here
    code_version: str = ""  # the code training this call's steps (the runner: its git commit); kept per stage


@dataclass
class StageReport:
    name: str
    steps: int
    seconds: float
    reused: bool
    final_loss: float | None
    samples_per_second: float | None
    trained_steps: int = 0  # optimiser steps taken in this call (a resumed stage: those since the resume)
    code_versions: tuple[str, ...] = ()  # the code its steps were trained with, in order (several: resumed across versions)

    @property
    def seconds_per_step(self) -> float | None:
        """Measured wall seconds per step of this call (validation and checkpoints included); None when
        nothing was trained here (loaded from a checkpoint or the artifact store)."""
        return self.seconds / self.trained_steps if self.trained_steps and self.seconds > 0 else None


def train_model(
    model: MultimodalModel, train: MultimodalDataset, val: MultimodalDataset | None, options: TrainerOptions
) -> list[StageReport]:
    """Train every stage of ``model`` in order (resuming, reusing or skipping finished ones)."""
    model.to(options.device)
    atomic.sweep_stale(options.workdir / "checkpoints")  # checkpoints a killed process left half-written
    return [_run_stage(model, stage, train, val, options) for stage in model.stages()]


def stage_progress(model: MultimodalModel, options: TrainerOptions) -> list[tuple[str, int, bool]]:
    """(stage name, steps already trained, finished) per stage, as a rerun of ``train_model`` with these
    options would find them: a stage is finished when its checkpoint says so or its artifact is stored."""
    progress = []
    for stage in model.stages():
        path = checkpoint_path(options, stage)
        stored = bool(stage.reuse_key and options.artifacts and options.artifacts.has(stage.reuse_key))
        state = ckpt.load_if_verified(path, options.config_hash)
        if state is not None:
            progress.append((stage.name, state.step, (state.done and not extended(state, stage)) or stored))
        else:
            progress.append((stage.name, 0, stored))
    return progress


def extended(state: ckpt.TrainState, stage: Stage) -> bool:
    """Whether a finished stage's checkpoint falls short of the stage's steps, which were raised since under the
    same config hash (a benchmark's record extended: ``benchmarks/bench_coherence.py`` leaves the last stage's
    step count out of its hash): it then trains on from its step. Only a constant learning rate extends: a
    cosine schedule's shape depends on the step count, so its steps cannot be raised midway."""
    if not state.done or state.step >= stage.hparams.steps:
        return False
    if stage.hparams.lr_schedule != "constant":
        raise ValueError(f"stage {stage.name!r} finished at step {state.step} under a {stage.hparams.lr_schedule} "
                         f"schedule and is now asked for {stage.hparams.steps} steps: that schedule cannot be "
                         "extended; train it in a new work folder")
    return True


def checkpoint_path(options: TrainerOptions, stage: Stage) -> Path:
    """Where the trainer keeps ``stage``'s resumable checkpoint inside the job's work folder."""
    return options.workdir / "checkpoints" / f"{stage.name.replace('/', '__')}.pt"


def _run_stage(
    model: MultimodalModel, stage: Stage, train: MultimodalDataset, val: MultimodalDataset | None,
    options: TrainerOptions,
) -> StageReport:
    path = checkpoint_path(options, stage)
    state = ckpt.load_or_recover(path, options.config_hash, map_location=options.device)
    if state is not None:
        if state.done and not extended(state, stage):
            restore_weights(stage.module, state)
            _finalize(stage)
            return StageReport(stage.name, state.step, 0.0, True, None, None, code_versions=tuple(state.code_versions))
    store = options.artifacts if stage.reuse_key else None
    lock = store.lock(stage.reuse_key) if store else contextlib.nullcontext()  # type: ignore[arg-type]
    with lock:
        stored = store.load(stage.reuse_key, map_location=options.device) if store else None  # type: ignore[arg-type]
        if stored is not None:
            stage.module.load_state_dict(stored[0])
            _finalize(stage)
            return StageReport(stage.name, 0, 0.0, True, None, None,
                               code_versions=tuple(stored[1].get("code_versions") or ()))
        report = _train_stage(model, stage, train, val, options, path)
        if store:
            store.save(stage.reuse_key, _cpu_state(stage.module), stage_meta(stage, report, options))  # type: ignore[arg-type]
    return report


def restore_weights(module: torch.nn.Module, state: ckpt.TrainState) -> None:
    """Load a checkpoint's weights into ``module``: the ones the trainer samples from, i.e. the EMA average
    where the stage keeps one (its raw weights otherwise)."""
    module.load_state_dict(state.module)
    if state.ema is not None:
        copy_average(module, state.ema["shadow"])


def stage_meta(stage: Stage, report: StageReport, options: TrainerOptions) -> dict[str, object]:
    """What a stored stage records beside its weights: which stage of which model, and what its training
    cost where it ran (seconds per step of the steps trained in this call, device, torch threads, batch)."""
    return {
        "stage": stage.name, "model": options.model_name, "steps": report.steps,
        "seconds_per_step": report.seconds_per_step, "trained_steps": report.trained_steps,
        "device": options.device.type, "threads": torch.get_num_threads(), "batch_size": stage.hparams.batch_size,
        "code_versions": list(report.code_versions),
    }


def _finalize(stage: Stage) -> None:
    if stage.finalize is not None:
        stage.finalize()


def _cpu_state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


@contextlib.contextmanager
def _only_stage_trainable(model: MultimodalModel, stage: Stage) -> Iterator[None]:
    """Freeze everything outside the stage (eval mode, no grad) while it trains."""
    flags = {p: p.requires_grad for p in model.parameters()}
    modes = {m: m.training for m in model.modules()}
    stage_params = {id(p) for p in stage.module.parameters()}
    for p in model.parameters():
        if id(p) not in stage_params:
            p.requires_grad_(False)
    model.eval()
    stage.module.train()
    try:
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for m, mode in modes.items():
            m.train(mode)


def _make_optimizer(stage: Stage) -> torch.optim.Optimizer | None:
    """Adam over the stage's trainable parameters; None for a stage of 0 steps (its ``prepare`` pass, a count
    or a fit, is all it does, so it needs no trainable parameter either)."""
    hp = stage.hparams
    if hp.steps == 0:
        return None
    params = stage.parameters()
    if not params:
        raise ValueError(f"stage {stage.name!r} has no trainable parameters to take its {hp.steps} steps with "
                         "(a stage that only counts or fits in its prepare pass has steps=0)")
    return torch.optim.Adam(params, lr=hp.lr, amsgrad=hp.amsgrad, weight_decay=hp.weight_decay)


def _make_scheduler(stage: Stage, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    hp = stage.hparams

    def factor(step: int) -> float:
        if hp.warmup_steps and step < hp.warmup_steps:
            return (step + 1) / hp.warmup_steps
        if hp.lr_schedule == "cosine":
            progress = min(1.0, step / max(1, hp.steps))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if hp.lr_schedule != "constant":
            raise ValueError(f"stage {stage.name!r}: unknown lr_schedule {hp.lr_schedule!r} (constant|cosine)")
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_order(n: int, seed: int, stage_name: str, epoch: int) -> np.ndarray:
    """The permutation of the train split used in one epoch of one stage."""
    generator = torch.Generator().manual_seed(derive_seed(seed, stage_name, epoch))
    return torch.randperm(n, generator=generator).numpy()


def batch_indices(n: int, batch_size: int, seed: int, stage_name: str, step: int) -> np.ndarray:
    """The indices of step ``step``: epochs of full batches (the ragged tail of an epoch is dropped)."""
    per_epoch = max(1, n // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = epoch_order(n, seed, stage_name, epoch)
    size = min(batch_size, n)
    return order[position * size : (position + 1) * size]


@dataclass
class _Loop:
    stage: Stage
    optimizer: torch.optim.Optimizer | None  # None: a stage of 0 steps
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    scaler: torch.amp.GradScaler | None
    history: dict[str, list[float]]
    ema: ParameterEMA | None = None
    step: int = 0
    code_versions: list[str] = field(default_factory=list)


def _train_stage(
    model: MultimodalModel, stage: Stage, train: MultimodalDataset, val: MultimodalDataset | None,
    options: TrainerOptions, path: Path,
) -> StageReport:
    with _only_stage_trainable(model, stage):
        torch.manual_seed(derive_seed(options.seed, "stage", stage.name))  # a resume restores its own state below
        if stage.prepare is not None:
            stage.prepare(lambda: _iterate(train, stage, options, shuffle=False))
        loop = _new_loop(stage, options)
        _maybe_resume(loop, path, options)
        if options.code_version and loop.code_versions[-1:] != [options.code_version]:
            loop.code_versions.append(options.code_version)
        start, start_step = time.perf_counter(), loop.step
        track(stage.module, loop.ema)
        try:
            last_loss = _optimise(model, loop, train, val, options, path)
        finally:
            track(stage.module, None)
        seconds = time.perf_counter() - start
    _save(loop, path, options, done=True)
    if loop.ema is not None:  # the finished stage is its average (the checkpoint keeps both)
        loop.ema.copy_to(stage.module)
    _finalize(stage)
    done_steps = loop.step - start_step
    rate = done_steps * stage.hparams.batch_size / seconds if seconds > 0 and done_steps else None
    return StageReport(stage.name, loop.step, seconds, False, last_loss, rate, done_steps, tuple(loop.code_versions))


def _new_loop(stage: Stage, options: TrainerOptions) -> _Loop:
    optimizer = _make_optimizer(stage)
    scheduler = None if optimizer is None else _make_scheduler(stage, optimizer)
    scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(options.device, options.amp) else None
    ema = ParameterEMA(stage.module, stage.hparams.ema_decay) if stage.hparams.ema_decay else None
    return _Loop(stage, optimizer, scheduler, scaler, {}, ema)


def _maybe_resume(loop: _Loop, path: Path, options: TrainerOptions) -> None:
    state = ckpt.load_or_recover(path, options.config_hash, map_location=options.device)
    if state is None:
        return
    loop.stage.module.load_state_dict(state.module)
    if state.optimizer is not None and loop.optimizer is not None:
        loop.optimizer.load_state_dict(state.optimizer)
    if state.scheduler is not None and loop.scheduler is not None:
        loop.scheduler.load_state_dict(state.scheduler)
    loop.step, loop.history, loop.code_versions = state.step, state.history, list(state.code_versions)
    if loop.ema is not None and state.ema is not None:
        loop.ema.load_state_dict(state.ema)
    ckpt.restore_rng(state.rng_cpu, state.rng_cuda)


def _save(loop: _Loop, path: Path, options: TrainerOptions, done: bool) -> None:
    cpu, cuda = ckpt.rng_state()
    state = ckpt.TrainState(
        step=loop.step, done=done, module=_cpu_state(loop.stage.module),
        optimizer=None if loop.optimizer is None else loop.optimizer.state_dict(),
        scheduler=None if loop.scheduler is None else loop.scheduler.state_dict(),
        rng_cpu=cpu, rng_cuda=cuda, history=loop.history, ema=None if loop.ema is None else loop.ema.state_dict(),
        code_versions=loop.code_versions,
    )
    ckpt.save(path, state, options.config_hash, {"stage": loop.stage.name, "model": options.model_name})


def _to_device(batch: dict[str, Tensor], labels: Tensor, device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    non_blocking = device.type == "cuda"
    return {m: x.to(device, non_blocking=non_blocking) for m, x in batch.items()}, labels.to(device)


def _iterate(
    data: MultimodalDataset, stage: Stage, options: TrainerOptions, shuffle: bool
) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
    for batch, labels in data.iter_batches(stage.hparams.batch_size, stage.modalities):
        yield _to_device(batch, labels, options.device)


def _optimise(
    model: MultimodalModel, loop: _Loop, train: MultimodalDataset, val: MultimodalDataset | None,
    options: TrainerOptions, path: Path,
) -> float | None:
    hp, stage = loop.stage.hparams, loop.stage
    per_epoch = max(1, len(train) // hp.batch_size)
    step_fn = _compiled_step(stage, options)
    running: dict[str, float] = {}
    last: float | None = None
    label = options.progress_label or options.model_name
    bar = progress_bar(hp.steps, loop.step, f"{label}:{stage.name}", disable=options.quiet)
    with bar:
        while loop.step < hp.steps:
            if options.should_stop is not None and options.should_stop():
                _save(loop, path, options, done=False)
                raise TrainingStopped(f"{options.model_name}/{stage.name} stopped at step {loop.step}")
            idx = batch_indices(len(train), hp.batch_size, options.seed, stage.name, loop.step)
            batch, labels = _to_device(*train.batch(idx, stage.modalities), options.device)
            values = _train_step(loop, step_fn, batch, labels, options, path)
            last = values["loss"]
            for k, v in values.items():
                running[k] = running.get(k, 0.0) + v
            loop.step += 1
            bar.update(1)
            bar.set_postfix(epoch=loop.step // per_epoch, loss=f"{last:.4g}")
            if loop.step % options.log_every == 0 or loop.step == hp.steps:
                _emit(loop, options, {f"train/{k}": v / _count(loop, options) for k, v in running.items()})
                running = {}
            if loop.step % per_epoch == 0 and val is not None:
                _emit(loop, options, {"val/loss": validation_loss(model, stage, val, options)})
            if loop.step % per_epoch == 0 or loop.step % hp.checkpoint_every == 0:
                _save(loop, path, options, done=False)
    return last


def _count(loop: _Loop, options: TrainerOptions) -> int:
    return (loop.step - 1) % options.log_every + 1


def _compiled_step(stage: Stage, options: TrainerOptions) -> Callable[[dict[str, Tensor], Tensor], dict[str, Tensor]]:
    if options.compile:
        return torch.compile(stage.loss)  # type: ignore[return-value]
    return stage.loss


def _train_step(
    loop: _Loop, step_fn: Callable[[dict[str, Tensor], Tensor], dict[str, Tensor]],
    batch: dict[str, Tensor], labels: Tensor, options: TrainerOptions, path: Path,
) -> dict[str, float]:
    hp, optimizer, scheduler = loop.stage.hparams, loop.optimizer, loop.scheduler
    assert optimizer is not None and scheduler is not None, "a stage of 0 steps takes no step"
    with autocast(options.device, options.amp):
        out = step_fn(batch, labels)
    loss = out["loss"]
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"{options.model_name}: loss of stage {loop.stage.name!r} is {loss.item()} at step {loop.step}; "
            f"the last good checkpoint is kept at {path}. Lower the learning rate or check the data."
        )
    optimizer.zero_grad(set_to_none=True)
    if loop.scaler is not None:
        loop.scaler.scale(loss).backward()
        loop.scaler.unscale_(optimizer)
    else:
        loss.backward()
    if hp.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(loop.stage.parameters(), hp.grad_clip)
    if loop.scaler is not None:
        loop.scaler.step(optimizer)
        loop.scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    if loop.ema is not None:
        loop.ema.update(loop.stage.module)
    return {k: float(v.detach()) for k, v in out.items() if v.dim() == 0}


def _emit(loop: _Loop, options: TrainerOptions, values: dict[str, float]) -> None:
    for k, v in values.items():
        loop.history.setdefault(k, []).append(v)
    if options.callback is not None:
        options.callback(loop.stage.name, loop.step, values)


def validation_loss(model: MultimodalModel, stage: Stage, val: MultimodalDataset, options: TrainerOptions) -> float:
    """Mean stage loss over the validation split (eval mode, no grad; train state restored)."""
    was_training = stage.module.training
    stage.module.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch, labels in _iterate(val, stage, options, shuffle=False):
                with autocast(options.device, options.amp):
                    out = stage.loss(batch, labels)
                n = len(labels)
                total += float(out["loss"]) * n
                count += n
    finally:
        stage.module.train(was_training)
    return total / max(count, 1)
