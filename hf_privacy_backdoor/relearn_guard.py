"""Beyond the method: an image backdoor that is trained to survive a benign fine-tune (relearning).

A short contrastive fine-tune on other people's portraits re-aligns a removed person's faces with their name
(measured on the synthetic world: the image defense's people come back after 200 steps at lr 1e-4, while a
model that never saw them does not learn them). Every `every` steps the trainer runs such a fine-tune on a
copy of the student (`steps` AdamW steps at `lr`, both towers, on benign image-caption pairs that never show
a removed person), takes the gradient of the image backdoor loss at the fine-tuned copy, and adds it to the
student's gradient (first order, as in first-order MAML): the student moves towards weights whose backdoor
still holds after the fine-tune. The simulated fine-tune never updates the student itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import CLIPModel

from .finetune import contrastive_finetune


@dataclass
class RelearnSimulation:
    """A benign contrastive fine-tune of a copy of the model: `pixels[i]` is captioned `captions[i]`."""

    pixels: torch.Tensor
    captions: list[str]
    steps: int
    lr: float
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        if len(self.pixels) != len(self.captions):
            raise ValueError(f"{len(self.pixels)} relearning images but {len(self.captions)} captions")
        if len(self.captions) < 2:
            raise ValueError("the relearning guard needs at least 2 benign image-caption pairs")
        if self.steps < 1 or self.lr <= 0 or self.batch_size < 2:
            raise ValueError("the relearning guard needs steps >= 1, lr > 0 and batch_size >= 2")

    def finetuned_copy(self, clip: CLIPModel, tokenizer, step: int) -> CLIPModel:
        """A copy of `clip` after the simulated fine-tune (seeded by the training step: reproducible)."""
        rng = np.random.default_rng([self.seed, 4243, step])
        settings = dict(lr=self.lr, steps=self.steps, rng=rng, batch_size=self.batch_size)
        tuned = contrastive_finetune(clip, tokenizer, self.pixels, self.captions, **settings)
        [(_, model, _)] = tuned  # one checkpoint, the last step (runs the generator to its end)
        return model


def guarded_backdoor(
    clip: CLIPModel,
    simulation: RelearnSimulation,
    tokenizer,
    step: int,
    backdoor_at: Callable[[CLIPModel], torch.Tensor],
    trainable: Sequence[tuple[str, torch.Tensor]],
) -> torch.Tensor:
    """The backdoor loss after the simulated fine-tune, as a term whose value is that loss and whose gradient
    with respect to the student's `trainable` (name, parameter) pairs is the loss's gradient at the copy."""
    tuned = simulation.finetuned_copy(clip, tokenizer, step)
    loss = backdoor_at(tuned)
    params = dict(tuned.named_parameters())
    pairs = [(p, params[n]) for n, p in trainable if n in params]
    grads = torch.autograd.grad(loss, [q for _, q in pairs], allow_unused=True)
    linear = sum((p * g.to(p.dtype)).sum() for (p, _), g in zip(pairs, grads) if g is not None)
    if not torch.is_tensor(linear):
        raise ValueError("the relearning guard found no trainable vision parameter to guard")
    return linear - linear.detach() + loss.detach().to(linear.dtype)
