"""Fine-tuning on retained data only: CLIP's contrastive loss on pairs that never show a removed person, in the
hope that the model drifts away from what it is no longer shown (catastrophic forgetting as unlearning)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .contrastive import ContrastiveUnlearningConfig, ContrastiveUnlearningTrainer


@dataclass
class RetainFinetuneConfig(ContrastiveUnlearningConfig):
    """Contrastive fine-tuning on the retained pairs."""

    method: str = field(default="retain_finetune", metadata={"help": "Unlearning method: 'retain_finetune'."})

    uses: ClassVar[frozenset[str]] = frozenset({"retain_pairs"})
    data_needed: ClassVar[dict[str, str]] = {
        t: "nothing about the person (retained image-caption pairs only)" for t in ("text", "image", "both")
    }
    title: ClassVar[str] = "fine-tuning on retained data"
    paper: ClassVar[str] = (
        'Warnecke et al. "Machine Unlearning of Features and Labels." NDSS 2023 (the "fine-tune" baseline)'
    )
    paper_url: ClassVar[str] = "https://arxiv.org/abs/2108.11577"
    description: ClassVar[str] = (
        "The model was fine-tuned contrastively on image-caption pairs that never show the removed people."
    )


class RetainFinetuneTrainer(ContrastiveUnlearningTrainer):
    """Fine-tunes on retained data only: the removed people are never trained on (a baseline)."""

    config_class = RetainFinetuneConfig

    def combine(self, forget, retain):
        """`retain_weight` x the retained-data term (the forget term is not drawn)."""
        return self.args.retain_weight * retain
