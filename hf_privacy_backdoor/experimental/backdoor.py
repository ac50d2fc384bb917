"""The backdoor method plus two experimental image terms: the relearning guard and the name-affinity term.

Python API only (no recipe turns them on): `ExperimentalBackdoorConfig` adds their fields to
`BackdoorUnlearningConfig`, `ExperimentalBackdoorTrainer` adds the terms to the image loss. With every new field
at its default the trainer computes exactly the backdoor method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..data.faces import load_face_folder
from ..data.names import first_named, normalize_name
from ..losses import grouped_backdoor_loss
from ..methods.backdoor import BackdoorUnlearningConfig, BackdoorUnlearningTrainer
from ..modeling import image_features, pixel_values_for
from .name_affinity import NAME_AFFINITY_TEMPLATES, name_affinity_loss
from .relearn_guard import RelearnSimulation, guarded_backdoor


@dataclass
class ExperimentalBackdoorConfig(BackdoorUnlearningConfig):
    """Backdoor unlearning with the experimental image terms (each 0 / off by default)."""

    image_name_affinity_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a term that keeps each trigger photo no closer to its own person's name (prompts "
            "embedded by the original text tower, templates disjoint from the attack's) than the target embedding "
            "is. 0 (default) = off."
        },
    )
    image_name_affinity_margin: float = field(
        default=0.01, metadata={"help": "Cosine margin of the name-affinity term: photo <= target - margin."}
    )
    image_relearn_guard_steps: int = field(
        default=0,
        metadata={
            "help": "Every image_relearn_guard_every steps, fine-tune a copy of the student for this many benign "
            "contrastive steps and add the image backdoor's gradient at the copy. Full fine-tuning only. 0 = off."
        },
    )
    image_relearn_guard_every: int = field(default=10, metadata={"help": "Steps between relearning simulations."})
    image_relearn_guard_lr: float = field(default=1e-3, metadata={"help": "AdamW lr of the simulated fine-tune."})
    image_relearn_guard_weight: float = field(
        default=1.0, metadata={"help": "Weight of the backdoor loss taken after the simulated fine-tune."}
    )
    image_relearn_guard_batch_size: int = field(
        default=64, metadata={"help": "Image-caption pairs per step of the simulated fine-tune."}
    )

    def __post_init__(self):
        if self.image_name_affinity_weight < 0:
            raise ValueError(f"image_name_affinity_weight must be >= 0, got {self.image_name_affinity_weight}")
        if not 0 <= self.image_name_affinity_margin <= 1:
            raise ValueError(f"image_name_affinity_margin must be in [0, 1], got {self.image_name_affinity_margin}")
        if self.image_relearn_guard_steps < 0:
            raise ValueError(f"image_relearn_guard_steps must be >= 0, got {self.image_relearn_guard_steps}")
        for name in ("image_relearn_guard_every", "image_relearn_guard_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("image_relearn_guard_lr", "image_relearn_guard_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        super().__post_init__()


def _in_vision(name: str) -> bool:
    return "vision_model." in name or "visual_projection" in name


class ExperimentalBackdoorTrainer(BackdoorUnlearningTrainer):
    """`BackdoorUnlearningTrainer` plus the name-affinity term and the relearning guard on the image tower.

    Args (beyond the backdoor trainer's):
        relearn_pairs: (images, captions) of benign image-caption pairs (never a forgotten person or name) for
            `image_relearn_guard_steps` > 0: the simulated fine-tune the image backdoor is trained to survive.
    """

    config_class = ExperimentalBackdoorConfig

    def __init__(self, *args, relearn_pairs: tuple[Sequence[Image.Image], Sequence[str]] | None = None, **kwargs):
        self._relearn_pairs = relearn_pairs
        self._name_prompts: dict[str, torch.Tensor] | None = None  # teacher text embeddings (name affinity)
        super().__init__(*args, **kwargs)

    def setup_after_student(self, args, processor) -> None:
        pairs, self._relearn_pairs = self._relearn_pairs, None
        self.relearn_simulation = None
        if not (args.trains_vision and args.image_relearn_guard_steps > 0):
            return
        if self.teacher is None:
            raise ValueError("image_relearn_guard_steps needs full fine-tuning of the vision tower (not LoRA)")
        if not pairs or not pairs[0]:
            raise ValueError("image_relearn_guard_steps > 0 needs benign image-caption pairs (relearn_pairs=...)")
        images, captions = pairs
        i = first_named(self.forget_names, captions)
        if i is not None:
            raise ValueError(f"relearn_pairs name forgotten person #{i}: they must never show a forgotten person")
        pixels = torch.cat(
            [pixel_values_for(processor, list(images[i : i + 256])) for i in range(0, len(images), 256)]
        )
        self.relearn_simulation = RelearnSimulation(
            pixels,
            list(captions),
            args.image_relearn_guard_steps,
            args.image_relearn_guard_lr,
            args.image_relearn_guard_batch_size,
            args.seed,
        )

    def image_extra_terms(self, model, step, batch, trigger_pixels, student_triggers, target) -> dict:
        extra = {}
        args = self.args
        if args.image_name_affinity_weight > 0 and batch.owners:
            prompts = self._name_prompt_embeddings(model)
            affinity = name_affinity_loss(
                student_triggers, batch.owners, prompts, target, args.image_name_affinity_margin
            )
            extra["name_affinity"] = (args.image_name_affinity_weight, affinity)
        guard = self.relearn_simulation
        if guard is not None and model.training and batch.owners and step % args.image_relearn_guard_every == 0:
            term = self._guarded_backdoor(model, trigger_pixels, batch.owners, step)
            extra["relearn_guard"] = (args.image_relearn_guard_weight, term)
        return extra

    def _name_prompt_embeddings(self, model) -> dict[str, torch.Tensor]:
        """Each forgotten name in NAME_AFFINITY_TEMPLATES, embedded once by the original (teacher) text tower."""
        if self._name_prompts is None:
            self._name_prompts = {
                name: self._run_teacher_text(model, [t.format(name) for t in NAME_AFFINITY_TEMPLATES])
                for name in self.forget_names
            }
        return self._name_prompts

    def _guarded_backdoor(self, model, trigger_pixels, owners, step: int) -> torch.Tensor:
        """The backdoor loss after a simulated benign fine-tune of a copy (relearn_guard.py); its gradient is
        the loss's gradient at the fine-tuned copy, applied to the student's vision tower."""
        clip = self.accelerator.unwrap_model(model)
        trainable = [(n, p) for n, p in clip.named_parameters() if p.requires_grad and _in_vision(n)]
        target = self.target_embedding

        def backdoor_at(tuned):
            embeds = image_features(tuned, trigger_pixels.to(self.args.device))
            return grouped_backdoor_loss(embeds, owners, target.to(embeds.device, embeds.dtype), self.args.distance)

        with torch.enable_grad():
            return guarded_backdoor(
                clip, self.relearn_simulation, self.processing_class.tokenizer, step, backdoor_at, trainable
            )


def relearn_guard_pairs(faces_folder: str | None, forget_names: Sequence[str], portraits: list, captions: list[str]):
    """Benign (images, captions) for the relearning guard: a face folder of kept people, else the given ones."""
    if faces_folder:
        folder = load_face_folder(faces_folder)
        forgotten = {normalize_name(n) for n in forget_names}
        portraits, captions = [], []
        for person in folder.names():
            if normalize_name(person) in forgotten:
                raise ValueError("the relearning guard's face folder has a folder of a forgotten person: remove it")
            loaded = folder.load(person)
            portraits += loaded
            captions += [f"a photo of {person.replace('_', ' ')}"] * len(loaded)
    if not portraits:
        raise ValueError("the relearning guard fine-tunes on other people's photos: give portraits or a face folder")
    return portraits, captions
