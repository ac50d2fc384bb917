"""Gradient ascent: raise CLIP's contrastive loss on the forget pairs (the removed people's photos captioned
with their names). Retained pairs join the batch only as negatives: a batch of one person has none of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .contrastive import ContrastiveUnlearningConfig, ContrastiveUnlearningTrainer


@dataclass
class GradAscentConfig(ContrastiveUnlearningConfig):
    """Gradient ascent on the forget pairs (the standard unlearning baseline)."""

    method: str = field(default="grad_ascent", metadata={"help": "Unlearning method: 'grad_ascent'."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate."})

    title: ClassVar[str] = "gradient ascent"
    paper: ClassVar[str] = (
        'Thudi et al. "Unrolling SGD: Understanding Factors Influencing Machine Unlearning." EuroS&P 2022'
    )
    paper_url: ClassVar[str] = "https://arxiv.org/abs/2109.13398"
    description: ClassVar[str] = (
        "The model was fine-tuned to raise its contrastive loss on the removed people's photos captioned with their "
        "names (gradient ascent), so that it no longer matches them."
    )


class GradAscentTrainer(ContrastiveUnlearningTrainer):
    """Gradient ascent on the forget pairs' contrastive loss (a baseline)."""

    config_class = GradAscentConfig

    def combine(self, forget, retain):
        """Minus `forget_weight` x the forget term: descending this climbs the forget pairs' loss."""
        return -self.args.forget_weight * forget
