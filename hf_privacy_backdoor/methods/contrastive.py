"""The shared base of the baselines that train CLIP's own contrastive loss on image-caption pairs.

Forget pairs are the removed people's trigger-half photos captioned with their names; retained pairs are kept
people's photos with their names (and objects with their captions), from `data.retained`. Each step draws
`num_forget_pairs` + `num_retain_pairs` pairs from the step number (`step_rng`), embeds them in one forward
through the wrapped model, and computes the contrastive loss per group (`losses.grouped_contrastive_loss`) over
the *global* batch: under N processes each embeds its shard and the embeddings are all-gathered with their
gradients, so N processes train as one (up to summation order). A method combines the two terms
(`combine`); every image and caption is a negative for the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from PIL import Image

from ..data.sampling import shard_indices, step_rng
from ..losses import grouped_contrastive_loss
from ..modeling import pixel_values_for, tokenize
from ..peft_utils import base_clip
from .base import UnlearningTrainer
from .base_config import UnlearningConfig


FORGET_STREAM, RETAIN_STREAM = 11, 12


@dataclass
class ContrastiveUnlearningConfig(UnlearningConfig):
    """Batch sizes and term weights of the contrastive baselines (not a method itself)."""

    num_forget_pairs: int = field(default=32, metadata={"help": "Forget pairs per step (all processes)."})
    num_retain_pairs: int = field(default=64, metadata={"help": "Retained pairs per step (all processes)."})
    forget_weight: float = field(default=1.0, metadata={"help": "Weight of the forget (ascent) term."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of the retained-data term."})

    uses: ClassVar[frozenset[str]] = frozenset({"forget_pairs", "retain_pairs"})
    default_schedule: ClassVar[dict[str, tuple[int, list[int], float]]] = {
        "text": (100, [], 1.0),
        "image": (100, [], 1.0),
        "both": (100, [], 1.0),
    }
    data_needed: ClassVar[dict[str, str]] = {
        t: "photos of the person (their names in captions), and retained image-caption pairs"
        for t in ("text", "image", "both")
    }

    def __post_init__(self):
        for name in ("num_forget_pairs", "num_retain_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("forget_weight", "retain_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        super().__post_init__()

    def run_data(self) -> frozenset[str]:
        """The pair kinds this method trains on ('forget_pairs', 'retain_pairs'): the config's `uses`."""
        return self.uses

    @property
    def needs_photos(self) -> bool:
        """Whether the method trains on the removed people's photos (it does when it uses forget pairs)."""
        return "forget_pairs" in self.uses

    def hyperparameter_keys(self) -> list[str]:
        """The settings recorded in the run's summary: the base's, plus the weight-distance lambdas and the settings of
        the pair kinds the method uses.
        """
        keys = super().hyperparameter_keys() + ["text_weight_distance"] * self.trains_text
        keys += ["image_weight_distance"] * self.trains_vision
        keys += ["num_forget_pairs", "forget_weight"] if "forget_pairs" in self.uses else []
        return keys + (["num_retain_pairs", "retain_weight"] if "retain_pairs" in self.uses else [])


def gather_rows(tensor: torch.Tensor, num_processes: int) -> torch.Tensor:
    """All processes' rows, in process order, with gradients flowing back to each process's own rows."""
    if num_processes == 1:
        return tensor
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor.contiguous()), dim=0)


class ContrastiveUnlearningTrainer(UnlearningTrainer):
    """Trains `combine(forget term, retain term)` + lambda * weight distance (see the module docstring).

    Args (beyond `UnlearningTrainer`'s): forget_pairs / retain_pairs: (images, captions), as the method uses.
    """

    config_class = ContrastiveUnlearningConfig

    def __init__(
        self,
        model,
        args: ContrastiveUnlearningConfig,
        processing_class,
        forget_names: Sequence[str],
        forget_pairs: tuple[Sequence[Image.Image], Sequence[str]] | None = None,
        retain_pairs: tuple[Sequence[Image.Image], Sequence[str]] | None = None,
        peft_config=None,
        base_model_id: str | None = None,
        **kwargs,
    ):
        self._given = {"forget_pairs": forget_pairs, "retain_pairs": retain_pairs}
        super().__init__(model, args, processing_class, forget_names, peft_config, base_model_id, **kwargs)

    def combine(self, forget: torch.Tensor | None, retain: torch.Tensor | None) -> torch.Tensor:
        """The method's objective from the two contrastive terms (None where the method draws no such pair)."""
        raise NotImplementedError

    def setup_data(self, args, clip, processor) -> None:
        """Check and store the (images, captions) pairs of each kind the method uses; fail early on empty or uneven pairs,
        on a batch size the processes cannot share, and on retained captions that name a forgotten person.
        """
        from ..data.retained import refuse_forgotten_captions

        given, self._given = self._given, None
        self.pairs = {}
        for kind, size in (("forget_pairs", args.num_forget_pairs), ("retain_pairs", args.num_retain_pairs)):
            if kind not in args.uses:
                continue
            images, captions = given[kind] or ([], [])
            if not images or len(images) != len(captions):
                raise ValueError(f"method {args.method!r} needs {kind}=(images, captions) of equal, non-zero length")
            if size % max(1, args.world_size):
                raise ValueError(f"{'num_' + kind} ({size}) must be a multiple of the number of processes")
            self.pairs[kind] = (list(images), list(captions))
        if "retain_pairs" in self.pairs:
            refuse_forgotten_captions(self.pairs["retain_pairs"][1], self.forget_names, "retain_pairs")

    def _sample(self, kind: str, step: int) -> list[int]:
        """This process's shard of step `step`'s global draw of `kind` pairs."""
        stream, size = (
            (FORGET_STREAM, self.args.num_forget_pairs)
            if kind == "forget_pairs"
            else (RETAIN_STREAM, self.args.num_retain_pairs)
        )
        n = len(self.pairs[kind][0])
        drawn = step_rng(self.args.seed, stream, step).choice(n, size, replace=n < size)
        return [int(i) for i in drawn[shard_indices(size, *self.process)]]

    def compute_terms(self, model, step: int):
        """The step's loss, `combine(forget, retain)` plus the weight distance, and its named terms, for sampler step `step`."""
        images, captions, keys, forget_rows = [], [], [], []
        for kind in ("forget_pairs", "retain_pairs"):
            if kind in self.pairs:
                idx = self._sample(kind, step)
                images += [self.pairs[kind][0][i] for i in idx]
                captions += [self.pairs[kind][1][i] for i in idx]
                keys += [(kind, i) for i in idx]
                forget_rows += [kind == "forget_pairs"] * len(idx)
        forget, retain = self._contrastive_terms(model, images, captions, keys, forget_rows)
        total = self.combine(forget, retain)
        metrics = {k: v for k, v in (("forget", forget), ("retain", retain)) if v is not None}
        for tower in self.towers:
            weight = self._weight_term(model, tower)
            total = total + tower.lam * weight
            metrics[f"{tower.name}_weight"] = weight
        return total, metrics

    def _contrastive_terms(self, model, images, captions, keys, forget_rows):
        """(forget term, retain term) of the global batch; each process contributes its shard's embeddings."""
        num = self.accelerator.num_processes
        tokens = tokenize(self.processing_class.tokenizer, captions, self.args.device)
        pixels = self._clean_pixels(images, keys).to(self.args.device)
        out = model(**tokens, pixel_values=pixels)
        image_embeds, text_embeds = gather_rows(out.image_embeds, num), gather_rows(out.text_embeds, num)
        all_captions = self._gather_objects(captions)
        group = torch.tensor(self._gather_objects(forget_rows), device=image_embeds.device)
        positives = torch.tensor([[c == u for u in all_captions] for c in all_captions], device=group.device)
        scale = base_clip(self.accelerator.unwrap_model(model)).logit_scale
        terms = grouped_contrastive_loss(image_embeds, text_embeds, positives, scale.detach(), group, group)
        return terms.get(True), terms.get(False)

    def _gather_objects(self, values: list) -> list:
        if self.accelerator.num_processes == 1:
            return list(values)
        from accelerate.utils import gather_object

        return list(gather_object(list(values)))

    def _clean_pixels(self, images, keys):
        return super()._clean_pixels(images, keys) if images else pixel_values_for(self.processing_class, images)
