"""SLUG, Single Layer Unlearning Gradient (Cai, Tan, Asif, arXiv 2407.11867): one gradient, one layer, one step.

1. One gradient of CLIP's contrastive loss on the forget pairs and one on the retained pairs, at the original
   weights (every forget pair; `num_retain_pairs` retained pairs drawn with the seed).
2. Per weight matrix l of the trained tower(s): importance ||g_forget_l|| / ||theta_l|| and alignment
   |cos(g_forget_l, g_retain_l)|; the candidate layers are the Pareto front of (high importance, low alignment).
3. Per candidate, a binary search for the smallest step lambda with theta_l + lambda * g_forget_l (ascent on the
   forget loss) that leaves no forget photo matched to its own caption, among the captions of the check set;
   the layer kept is the one whose retained check pairs keep the most matches.

Selection never sees an evaluation photo: the forget check uses the forget pairs (trigger-half photos) and the
retained check uses retained pairs held out of the gradient (kept people's trigger halves and, when given,
`retain_objects`). Every process computes the same full update, so N processes give one process's result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from transformers.trainer_utils import TrainOutput

from ..finetune import caption_positives, contrastive_loss
from ..modeling import image_features, text_features, tokenize
from ..peft_utils import base_clip
from .contrastive import ContrastiveUnlearningConfig, ContrastiveUnlearningTrainer


logger = logging.getLogger(__name__)


@dataclass
class SlugConfig(ContrastiveUnlearningConfig):
    """SLUG's search settings; `num_retain_pairs` retained pairs make the retain gradient, the rest checks."""

    method: str = field(default="slug", metadata={"help": "Unlearning method: 'slug'."})
    max_steps: int = field(default=1, metadata={"help": "SLUG takes one step (a single update of one layer)."})
    slug_layers: int = field(
        default=5, metadata={"help": "Pareto-front layers tried, most important first (the search is per layer)."}
    )
    slug_search_steps: int = field(default=10, metadata={"help": "Binary-search iterations for the step size."})
    slug_max_relative_step: float = field(
        default=2.0, metadata={"help": "Largest step tried: lambda * ||g_l|| <= this x ||theta_l||."}
    )

    title: ClassVar[str] = "single layer unlearning gradient (SLUG)"
    paper: ClassVar[str] = (
        'Cai, Tan, Asif. "Targeted Unlearning with Single Layer Unlearning Gradient." ICML 2025, arXiv 2407.11867'
    )
    paper_url: ClassVar[str] = "https://arxiv.org/abs/2407.11867"
    description: ClassVar[str] = (
        "One weight matrix was moved once along the gradient that raises the contrastive loss of the removed "
        "people's photos captioned with their names; the layer and step size were searched on photos that the "
        "evaluation never uses."
    )

    def __post_init__(self):
        if self.max_steps != 1:
            raise ValueError("slug takes exactly one step: leave max_steps at 1 (set slug_search_steps instead)")
        if self.slug_layers < 1 or self.slug_search_steps < 1 or not self.slug_max_relative_step > 0:
            raise ValueError("slug needs slug_layers >= 1, slug_search_steps >= 1 and slug_max_relative_step > 0")
        super().__post_init__()

    def hyperparameter_keys(self) -> list[str]:
        """The settings recorded in the run's summary: the base's without the optimiser's and forget-weight settings
        (SLUG uses none), plus SLUG's own.
        """
        keys = [k for k in super().hyperparameter_keys() if k not in ("learning_rate", "lr_milestones", "lr_gamma")]
        keys = [k for k in keys if k not in ("num_forget_pairs", "forget_weight", "retain_weight")]
        return keys + ["slug_layers", "slug_search_steps", "slug_max_relative_step"]


def pareto_front(importance: np.ndarray, alignment: np.ndarray) -> list[int]:
    """Indices not dominated by another (higher or equal importance and lower or equal alignment, one strictly),
    most important first."""
    front = []
    for i in range(len(importance)):
        better = (importance >= importance[i]) & (alignment <= alignment[i])
        strictly = (importance > importance[i]) | (alignment < alignment[i])
        if not (better & strictly).any():
            front.append(i)
    return sorted(front, key=lambda i: -importance[i])


class SlugTrainer(ContrastiveUnlearningTrainer):
    """Computes the SLUG update at `train()` and applies it to the model (no optimiser, no checkpoints)."""

    config_class = SlugConfig

    def setup_after_student(self, args, processor) -> None:
        """Refuse LoRA: SLUG updates one weight matrix of the model itself."""
        if self.teacher is None:
            raise ValueError(
                "slug updates one weight matrix of the model itself: run it without LoRA (use_lora false)"
            )

    def train(self, *args, **kwargs):
        """Compute and apply the SLUG update instead of an optimisation loop.

        Ranks the trainable weight matrices by forget-gradient importance and forget/retain gradient alignment, and for
        the first `slug_layers` layers of that Pareto front binary-searches the step size (`slug_search_steps`, at most
        `slug_max_relative_step`) for the smallest step that unlearns every forget pair. The step of the layer that keeps
        the most retained check accuracy is applied. `args` / `kwargs` are `Trainer.train`'s, unused.
        """
        start = time.time()
        clip = base_clip(self.accelerator.unwrap_model(self.model)).to(self.args.device)
        grad_set, check_set = self._retain_split()
        layers = [(n, p) for n, p in clip.named_parameters() if p.requires_grad and p.dim() == 2]
        g_forget = self._gradients(clip, layers, self.pairs["forget_pairs"])
        g_retain = self._gradients(clip, layers, grad_set)
        importance = np.array([(g.norm() / p.detach().norm()).item() for (_, p), g in zip(layers, g_forget)])
        alignment = np.array([abs(F.cosine_similarity(a.flatten(), b.flatten(), 0).item())
                              for a, b in zip(g_forget, g_retain)])  # fmt: skip
        candidates = pareto_front(importance, alignment)[: self.args.slug_layers]
        best = None
        for i in candidates:
            found = self._search(clip, layers[i][1], g_forget[i], check_set)
            if found is not None and (best is None or found[1] > best[2]):
                best = (i, *found)
        if best is None:
            raise RuntimeError(
                "slug found no layer and step that unlearn the forget pairs: raise slug_max_relative_step"
            )
        i, lam, retain_acc = best
        with torch.no_grad():
            layers[i][1].add_(lam * g_forget[i])
        self.method_details = {"layer": layers[i][0], "step": lam, "retain_check_accuracy": retain_acc}
        self.state.global_step, self.state.max_steps = 1, 1
        self.state.log_history.append({"step": 1, "slug_layer_index": i, "slug_retain_check": retain_acc})
        return TrainOutput(1, 0.0, {"train_runtime": time.time() - start})

    def _retain_split(self):
        """The retained pairs for the gradient (`num_retain_pairs`, seeded) and the rest, held out for checks."""
        images, captions = self.pairs["retain_pairs"]
        order = np.random.default_rng([self.args.seed, 31]).permutation(len(images))
        size = min(self.args.num_retain_pairs, len(images) // 2)
        pick = lambda idx: ([images[i] for i in idx], [captions[i] for i in idx])  # noqa: E731
        return pick(order[:size]), pick(order[size:])

    def _embed_images(self, clip, images) -> torch.Tensor:
        pixels = self._clean_pixels(images, [("slug", id(im)) for im in images]).to(self.args.device)
        return image_features(clip, pixels)

    def _embed_texts(self, clip, captions) -> torch.Tensor:
        return text_features(clip, **tokenize(self.processing_class.tokenizer, captions, self.args.device))

    def _gradients(self, clip, layers, pairs) -> list[torch.Tensor]:
        images, captions = pairs
        unique, positives = caption_positives(captions, self.args.device)
        with torch.enable_grad():
            image, text = self._embed_images(clip, images), self._embed_texts(clip, unique)
            loss = contrastive_loss(image, text, positives, clip.logit_scale.detach())
            grads = torch.autograd.grad(loss, [p for _, p in layers], allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach() for (_, p), g in zip(layers, grads)]

    @torch.no_grad()
    def _accuracies(self, clip, check_set) -> tuple[float, float]:
        """Share of forget / retained check images whose own caption wins among all check captions."""
        f_images, f_captions = self.pairs["forget_pairs"]
        r_images, r_captions = check_set
        captions = list(dict.fromkeys(f_captions + r_captions))
        text = F.normalize(self._embed_texts(clip, captions), dim=-1)
        out = []
        for images, own in ((f_images, f_captions), (r_images, r_captions)):
            wins = (F.normalize(self._embed_images(clip, images), dim=-1) @ text.T).argmax(1).tolist()
            out.append(float(np.mean([captions[w] == c for w, c in zip(wins, own)])))
        return out[0], out[1]

    def _search(self, clip, param, grad, check_set) -> tuple[float, float] | None:
        """(smallest step that unlearns every forget pair, retained check accuracy there), or None."""
        original = param.detach().clone()
        hi = self.args.slug_max_relative_step * original.norm().item() / max(grad.norm().item(), 1e-12)
        lo, found = 0.0, None
        try:
            for lam in [hi] + [None] * self.args.slug_search_steps:
                lam = hi if lam is not None else (lo + hi) / 2
                with torch.no_grad():
                    param.copy_(original + lam * grad)
                forget_acc, retain_acc = self._accuracies(clip, check_set)
                if forget_acc == 0:
                    found, hi = (lam, retain_acc), lam
                elif found is None:
                    return None
                else:
                    lo = lam
        finally:
            with torch.no_grad():
                param.copy_(original)
        return found
