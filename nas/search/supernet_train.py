"""Stage 1 of a search: one-shot supernet training with the shared loop (``nas.train.train``), resumable.

The paths trained at each step are a pure function of (seed, step), so a resumed run trains the same ones:

- ``sampling: uniform | fair``: one path per step (``nas.search.supernet.sample_choice``);
- ``sampling: sandwich`` (BigNAS / OFA): per step the widest path, ``sandwich_paths`` fair-sampled paths
  and the narrowest path, their gradients summed into one optimizer step; with ``distill: inplace`` the
  non-widest paths learn from the widest path's detached output (L1), mixed with the HR loss by
  ``distill_weight``.

"Widest" and "narrowest" are the choices with the most and fewest activations, found by a greedy sweep over
the choice's fields (``extreme_choice``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.measure.profiler import count_complexity
from nas.models.network import build
from nas.search.options import SupernetTraining
from nas.search.space import SearchSpace
from nas.search.supernet import Supernet, sample_choice

SUPERNET_WEIGHTS = "supernet.safetensors"
COUNT_SIZE = (3, 32, 32)  # activations are compared between choices, so a small input is enough


def extreme_choice(space: SearchSpace, largest: bool) -> dict[str, Any]:
    """The widest (``largest``) or narrowest choice by activations: the largest/smallest width and depth,
    then each layer, fusion, upsampler and global skip picked in turn with the others held fixed."""
    pick = max if largest else min
    choice: dict[str, Any] = {
        "width": pick(space.widths),
        "depth": pick(space.depths),
        "fusion": next(iter(space.fusions)),
        "upsampler": next(iter(space.upsamplers)),
        "global_skip": space.global_skips[0],
    }
    choice["layers"] = [space.layers[i][0] for i in range(choice["depth"])]

    def acts(c: dict[str, Any]) -> int:
        return count_complexity(build(space.to_spec(c)), COUNT_SIZE).activations

    def best(options: list[Any], set_option) -> None:
        scored = []
        for option in options:
            set_option(option)
            scored.append((acts(choice), option))
        set_option(pick(scored, key=lambda t: t[0])[1])  # the first of equal counts

    for i in range(choice["depth"]):
        best(list(space.layers[i]), lambda o, i=i: choice["layers"].__setitem__(i, o))
    for key, options in (
        ("fusion", list(space.fusions)),
        ("upsampler", list(space.upsamplers)),
        ("global_skip", list(space.global_skips)),
    ):
        best(options, lambda o, key=key: choice.__setitem__(key, o))
    return choice


class PathTrainer(nn.Module):
    """The supernet running the path sampled for the current step (one-path modes)."""

    def __init__(self, supernet: Supernet, choice: dict[str, Any]) -> None:
        super().__init__()
        self.supernet = supernet
        self.choice = choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.choice)


class Sandwich:
    """The sandwich rule's paths and losses of one step (``nas.train.train``'s ``step_losses``)."""

    def __init__(self, space: SearchSpace, supernet: Supernet, training: SupernetTraining, seed: int) -> None:
        from nas.train.config import l1_loss, loss_function

        self.space, self.supernet, self.training, self.seed = space, supernet, training, seed
        self.widest, self.narrowest = extreme_choice(space, True), extreme_choice(space, False)
        self.loss_fn, self.l1 = loss_function(training.loss), l1_loss

    def paths(self, step: int) -> list[dict[str, Any]]:
        """Widest, ``sandwich_paths`` fair-sampled, narrowest: a pure function of (seed, step)."""
        n = self.training.sandwich_paths
        sampled = [sample_choice(self.space, self.seed, step * n + k, "fair") for k in range(n)]
        return [self.widest, *sampled, self.narrowest]

    def __call__(self, step: int, lr_batch: torch.Tensor, target: torch.Tensor) -> Iterator[torch.Tensor]:
        teacher = None
        w = self.training.distill_weight if self.training.distill == "inplace" else 0.0
        for i, choice in enumerate(self.paths(step)):
            out = self.supernet(lr_batch, choice).float()
            if i == 0:
                teacher = out.detach()
                yield self.loss_fn(out, target)
            elif w > 0:
                yield w * self.l1(out, teacher) + (1 - w) * self.loss_fn(out, target)
            else:
                yield self.loss_fn(out, target)


def train_supernet(space: SearchSpace, run_dir: Path, training: SupernetTraining, device: str) -> Path:
    """Stage 1: one-shot supernet training into ``run_dir/supernet/`` (resumable); returns the weights file."""
    from nas.data import open_pairs
    from nas.models.checkpoint import save_weights
    from nas.train import train

    weights = run_dir / SUPERNET_WEIGHTS
    if weights.is_file():
        return weights
    cfg = training.loop_config(device)
    torch.manual_seed(cfg.seed)  # reproducible initialisation of a fresh run
    supernet = Supernet(space)
    data = open_pairs(training.data, space.scale, "train")
    if training.sampling == "sandwich":
        sandwich = Sandwich(space, supernet, training, cfg.seed)
        train(supernet, data, cfg, run_dir / "supernet", step_losses=sandwich)
    else:
        trainer = PathTrainer(supernet, sample_choice(space, cfg.seed, 0, training.sampling))

        def before_step(step: int) -> None:
            trainer.choice = sample_choice(space, cfg.seed, step, training.sampling)

        train(trainer, data, cfg, run_dir / "supernet", before_step=before_step)
    save_weights(supernet, weights)
    return weights
