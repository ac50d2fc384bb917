"""Gradient difference (NegGrad+ / GradDiff): ascent on the forget pairs plus descent on the retained pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .contrastive import ContrastiveUnlearningConfig, ContrastiveUnlearningTrainer


@dataclass
class GradDiffConfig(ContrastiveUnlearningConfig):
    """-forget_weight x forget term + retain_weight x retained term."""

    method: str = field(default="grad_diff", metadata={"help": "Unlearning method: 'grad_diff'."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate."})

    title: ClassVar[str] = "gradient difference"
    paper: ClassVar[str] = 'Liu et al. "Continual Learning and Private Unlearning." CoLLAs 2022'
    paper_url: ClassVar[str] = "https://arxiv.org/abs/2203.12817"
    description: ClassVar[str] = (
        "The model was fine-tuned to raise its contrastive loss on the removed people's photos captioned with their "
        "names while keeping it low on retained pairs (gradient difference)."
    )


class GradDiffTrainer(ContrastiveUnlearningTrainer):
    """Gradient difference: ascent on the forget pairs, descent on the retained pairs (a baseline)."""

    config_class = GradDiffConfig

    def combine(self, forget, retain):
        """Minus `forget_weight` x the forget term plus `retain_weight` x the retained-data term."""
        return -self.args.forget_weight * forget + self.args.retain_weight * retain
