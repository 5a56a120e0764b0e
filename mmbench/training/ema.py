"""An exponential moving average (EMA) of a module's parameters, for stages that sample from it.

Sources: Song et al. 2021 (``yang-song/score_sde_pytorch`` ``models/ema.py``: the decay is warmed up as
``min(decay, (1 + n) / (10 + n))`` after n updates, so the average does not remember the random
initialisation for thousands of steps); the SBM reference (``rooshenasgroup/sbmae`` ``utils.update_ema``:
parameters only, decay 0.999, its CelebA score model samples from the average) and MLD's reference (EMA
0.999 of the score net, sampled from).

Only parameters are averaged (buffers such as BatchNorm statistics keep their trained values), as both
references do. A stage asks for it with ``StageHParams.ema_decay``; the trainer keeps the average in the
stage's checkpoints and, when the stage is finished, copies it into the module, so everything after the
stage (later stages, sampling, the artifact store) sees the averaged weights.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn


class ParameterEMA:
    """The running average ``θ̄ ← d·θ̄ + (1 − d)·θ`` of a module's parameters, with score_sde's warm-up."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"an EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, Tensor] = {name: p.detach().clone() for name, p in module.named_parameters()}

    def rate(self) -> float:
        """The decay of the next update (the warm-up of score_sde's ``num_updates``)."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.rate()
        self.updates += 1
        for name, p in module.named_parameters():
            self.shadow[name].lerp_(p.detach().to(self.shadow[name].dtype), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's parameters with the average."""
        copy_average(module, self.shadow)

    @contextlib.contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[None]:
        """The module holds the average inside the block and its own parameters again after it."""
        own = {name: p.detach().clone() for name, p in module.named_parameters()}
        self.copy_to(module)
        try:
            yield
        finally:
            copy_average(module, own)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": torch.tensor(self.updates), "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"EMA state has decay {state['decay']}, this stage asks for {self.decay}")
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the module's parameters: {sorted(missing)[:5]}")
        self.updates = int(state["updates"])
        self.shadow = {k: v.detach().clone().to(self.shadow[k].device) for k, v in state["shadow"].items()}


@torch.no_grad()
def copy_average(module: nn.Module, averaged: dict[str, Tensor]) -> None:
    """Copy ``averaged`` (parameter name → tensor) into the module's parameters in place."""
    for name, p in module.named_parameters():
        p.copy_(averaged[name].to(p.device, p.dtype))


_TRAINING: weakref.WeakKeyDictionary[nn.Module, ParameterEMA] = weakref.WeakKeyDictionary()


def track(module: nn.Module, ema: ParameterEMA | None) -> None:
    """Make ``ema`` the average that :func:`averaged_weights` swaps into ``module`` (None: forget it)."""
    if ema is None:
        _TRAINING.pop(module, None)
    else:
        _TRAINING[module] = ema


@contextlib.contextmanager
def averaged_weights(model: nn.Module) -> Iterator[None]:
    """Inside the block, every submodule of ``model`` whose stage is training with an EMA holds its
    average (what sampling will use once the stage is finished); e.g. for evaluations during training."""
    with contextlib.ExitStack() as stack:
        for sub in model.modules():
            ema = _TRAINING.get(sub)
            if ema is not None:
                stack.enter_context(ema.swapped_in(sub))
        yield
