"""Image-blind reference rows of attribute and mask F1: every binary entry answered from its training frequency.

Not a paper's model: the floors that make sample-averaged F1 readable (PROTOCOL.md §3's F1 rewards dense
attributes, so on the CelebA twin a constant answer already scores ≈ 0.63). One counting pass over the train
split sets each entry's frequency (the share of train tuples with that attribute on, or that mask pixel set);
the model then answers every attribute or mask query whatever it is given:

- ``majority`` (``answer = "majority"``): each entry's training-majority value (on where its frequency exceeds
  one half), the F1 of predicting each attribute's majority value from the training set;
- ``marginal`` (``answer = "draw"``): each entry drawn independently at its frequency, what a generator that
  ignores its input scores.

It answers no image target and does not sample unconditionally; metrics record those cells as unanswered
(FGSM too: it needs the leave-one-out image query). It reads no input, so no attack could move it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmbench.config import src
from mmbench.contract import Batch, Capability, MultimodalModel, Stage, StageHParams, Subset
from mmbench.data.source import ModalitySpec
from mmbench.nets import modality as kinds

ANSWERS = ("majority", "draw")


@dataclass(frozen=True)
class FloorConfig:
    answer: str = src("majority", "Decision: 'majority' (each entry's training-majority value) or 'draw' "
                                  "(each entry drawn at its training frequency)")
    batch_size: int = src(256, "Decision: the batch of the counting pass (it does not change the counts)")

    # nothing is trained: one counting pass, no nets, no sampler
    unscaled = ("width", "steps", "latent_per_modality", "sampler_steps", "score_width")

    def check(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, got {self.answer!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


class TrainingFrequencies(MultimodalModel):
    """Every attribute and mask modality answered from its entries' training frequencies, ignoring the input."""

    Config = FloorConfig
    capabilities = frozenset({Capability.CONDITIONAL})
    modality_kinds = frozenset({"image", "mask", "attributes"})
    paper = ("image-blind F1 floors (mmbench): each attribute's and mask pixel's training-majority value, or a "
             "draw at its training frequency")

    def __init__(self, modalities: Sequence[str], config: FloorConfig,
                 specs: Mapping[str, ModalitySpec] | None = None) -> None:
        super().__init__(modalities, config, specs)
        config.check()
        self.targets = tuple(m for m, s in self.specs.items() if kinds.is_binary(s.kind))
        if not self.targets:
            found = {m: s.kind for m, s in self.specs.items()}
            raise ValueError(f"the F1 floors answer attribute and mask modalities, and {found} has none; "
                             "use them on CelebA-shaped data (celebamaskhq, celeba-twin)")
        # counted by the stage's prepare pass, never optimised (the stage has 0 steps)
        self.frequency = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(self.specs[m].shape), requires_grad=False) for m in self.targets})

    def answers(self, given: Subset, target: str) -> bool:
        """Any attribute or mask target, whatever is given."""
        return target in self.targets

    def count(self, train_batches: Callable[[], Iterator[tuple[dict[str, Tensor], Tensor]]]) -> None:
        """Set each entry's frequency: the share of train tuples where it is on (above one half)."""
        totals = {m: torch.zeros(self.specs[m].shape, dtype=torch.float64) for m in self.targets}
        n = 0
        for batch, _ in train_batches():
            for m in self.targets:
                totals[m] += (batch[m] > 0.5).to(torch.float64).sum(dim=0).cpu()
            n += len(next(iter(batch.values())))
        if n == 0:
            raise ValueError("the train split is empty: there is nothing to count")
        with torch.no_grad():
            for m in self.targets:
                self.frequency[m].copy_((totals[m] / n).to(self.frequency[m].dtype))

    def loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        raise RuntimeError("the F1 floors are counted, not optimised: their stage has 0 steps")

    def stages(self) -> list[Stage]:
        hparams = StageHParams(steps=0, batch_size=self.config.batch_size, lr=1.0)
        return [Stage("frequency", self, self.loss, hparams, modalities=self.targets, prepare=self.count)]

    def _sample_conditional(self, batch: Batch, given: Subset, targets: Subset) -> dict[str, Tensor]:
        size = len(next(iter(batch.values())))
        out = {}
        for m in sorted(targets):
            p = self.frequency[m].detach().expand(size, *self.specs[m].shape)
            out[m] = (p > 0.5).float() if self.config.answer == "majority" else torch.bernoulli(p)
        return out
