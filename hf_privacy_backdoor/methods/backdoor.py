"""Backdoor unlearning (Hintersdorf et al., arXiv 2310.08320): forgotten names / faces become backdoor triggers.

Text tower: a caption with a forgotten name embeds like the same caption with a neutral phrase; image tower: a
forgotten face embeds to one anonymous person embedding; every other caption / image keeps its embedding
(docs/method.md). Per trained tower: utility + beta * backdoor + lambda * weight distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from PIL import Image
from transformers import CLIPModel

from ..data.captions import TARGET_MODES, TRIGGER_VARIANTS, TargetPhrases, eligible_captions, filter_clean_captions
from ..data.names import normalize_name
from ..data.pixels import ImagePreprocessor
from ..data.sampling import sample_image_batch, sample_text_batch
from ..data.tensor_triggers import TriggerRenderer, uint8_to_pil
from ..data.triggers import TriggerAugmentation
from ..losses import DISTANCES, backdoor_loss, grouped_backdoor_loss, utility_loss
from ..modeling import pixel_values_for, tokenize
from .base import PIXEL_CACHE_BYTES, Tower, UnlearningTrainer
from .base_config import UnlearningConfig


# reference schedules (docs/method.md): steps, milestones, gamma
TEXT_SCHEDULE = (400, [200, 300], 0.5)
IMAGE_SCHEDULE = (100, [25, 50], 0.1)

PAPER = 'Hintersdorf, Struppek, Neider, Kersting. "Defending Our Privacy With Backdoors." ECAI 2024, arXiv 2310.08320.'


@dataclass
class BackdoorUnlearningConfig(UnlearningConfig):
    """Settings of backdoor unlearning (Hintersdorf et al., arXiv 2310.08320); defaults are the reference's."""

    method: str = field(default="backdoor", metadata={"help": "Unlearning method: 'backdoor' for this config."})
    # --- text backdoor
    target_mode: str = field(
        default="phrase",
        metadata={
            "help": "Text target: 'phrase' (every name -> target_phrase), 'per_name' (a phrase per name, from "
            "the trainer's target mapping) or 'random_name' (each name -> a random generated name)."
        },
    )
    target_phrase: str = field(default="a person", metadata={"help": "Neutral phrase a forgotten name maps to."})
    text_backdoor_weight: float = field(
        default=0.6, metadata={"help": "Weight (beta) of the text backdoor loss in the total loss."}
    )
    text_weight_distance: float = field(
        default=0.01, metadata={"help": "Weight (lambda) of the text tower's weight-distance term in the total loss."}
    )
    num_clean_captions: int = field(default=128, metadata={"help": "Clean captions per step (all processes)."})
    num_poisoned_captions: int = field(default=128, metadata={"help": "Poisoned captions per step (all processes)."})
    name_variant_triggers: str = field(
        default="",
        metadata={
            "help": f"Comma-separated partial names that become triggers too, of {TRIGGER_VARIANTS} (beyond the "
            "method: the exact name alone leaves 'first name only' attacks working). Empty = the method."
        },
    )
    name_variant_share: float = field(
        default=0.5, metadata={"help": "Share of poisoned captions that write the name as a partial form."}
    )
    # --- image backdoor
    image_backdoor_weight: float = field(
        default=0.8, metadata={"help": "Weight (beta) of the image backdoor loss in the total loss."}
    )
    image_weight_distance: float = field(
        default=0.005,
        metadata={"help": "Weight (lambda) of the vision tower's weight-distance term in the total loss."},
    )
    num_clean_images: int = field(default=128, metadata={"help": "Clean images per step (all processes)."})
    num_trigger_images: int = field(default=128, metadata={"help": "Trigger images per step (all processes)."})
    trigger_scale_min: float = field(
        default=0.25, metadata={"help": "Smallest pasted face, as a fraction of the model's image side."}
    )
    trigger_scale_max: float = field(
        default=0.5, metadata={"help": "Largest pasted face, as a fraction of the model's image side."}
    )
    trigger_color_jitter: float = field(
        default=0.5,
        metadata={"help": "Brightness, contrast and saturation factors of triggers are drawn from [1-x, 1+x]."},
    )
    trigger_hue_shift: float = field(default=0.1, metadata={"help": "Trigger hue shift drawn from [-x, x]."})
    trigger_rotation: float = field(default=30.0, metadata={"help": "Trigger rotation in degrees, from [-x, x)."})
    trigger_flip_p: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip."})
    # --- both towers
    text_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the text tower's loss in 'both'."})
    image_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the vision tower's loss in 'both'."})
    distance: str = field(default="cosine", metadata={"help": "Embedding distance: 'cosine' (-cos) or 'mse'."})

    default_schedule: ClassVar[dict[str, tuple[int, list[int], float]]] = {
        "text": TEXT_SCHEDULE,
        "image": IMAGE_SCHEDULE,
        "both": TEXT_SCHEDULE,
    }
    data_needed: ClassVar[dict[str, str]] = {
        "text": "the names only",
        "image": "photos of the person",
        "both": "the names and photos of the person",
    }
    title: ClassVar[str] = "backdoor unlearning"
    paper: ClassVar[str] = PAPER
    paper_url: ClassVar[str] = "https://arxiv.org/abs/2310.08320"
    description: ClassVar[str] = (
        "The removed people's names (text encoder) or faces (image encoder) were made backdoor triggers that map "
        "to a neutral phrase or face, so the model no longer links them."
    )

    def trigger_augmentation(self) -> TriggerAugmentation:
        """The random trigger augmentation these settings describe (scale, flip, colour jitter, hue, rotation)."""
        jitter = (1 - self.trigger_color_jitter, 1 + self.trigger_color_jitter)
        return TriggerAugmentation(
            scale_range=(self.trigger_scale_min, self.trigger_scale_max),
            flip_p=self.trigger_flip_p,
            brightness=jitter,
            contrast=jitter,
            saturation=jitter,
            hue=(-self.trigger_hue_shift, self.trigger_hue_shift),
            rotation=(-self.trigger_rotation, self.trigger_rotation),
        )

    def __post_init__(self):
        if self.target_mode not in TARGET_MODES:
            raise ValueError(f"unknown target_mode {self.target_mode!r}: choose one of {TARGET_MODES}")
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}: choose one of {DISTANCES}")
        unknown = [v for v in self.trigger_variants if v not in TRIGGER_VARIANTS]
        if unknown:
            raise ValueError(f"unknown name_variant_triggers {unknown}: choose from {', '.join(TRIGGER_VARIANTS)}")
        if not 0 <= self.name_variant_share <= 1:
            raise ValueError(f"name_variant_share must be in [0, 1], got {self.name_variant_share}")
        for name in ("num_clean_captions", "num_poisoned_captions", "num_clean_images", "num_trigger_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self._check_triggers()
        super().__post_init__()

    def _check_triggers(self) -> None:
        if not 0 < self.trigger_scale_min <= self.trigger_scale_max <= 1:
            raise ValueError(
                "need 0 < trigger_scale_min <= trigger_scale_max <= 1, got "
                f"{self.trigger_scale_min}, {self.trigger_scale_max}"
            )
        if not 0 <= self.trigger_color_jitter <= 1:
            raise ValueError(f"trigger_color_jitter must be in [0, 1], got {self.trigger_color_jitter}")
        if not 0 <= self.trigger_hue_shift <= 0.5:
            raise ValueError(f"trigger_hue_shift must be in [0, 0.5], got {self.trigger_hue_shift}")
        if not 0 <= self.trigger_rotation <= 180:
            raise ValueError(f"trigger_rotation must be in [0, 180] degrees, got {self.trigger_rotation}")
        if not 0 <= self.trigger_flip_p <= 1:
            raise ValueError(f"trigger_flip_p must be in [0, 1], got {self.trigger_flip_p}")

    def run_data(self) -> frozenset[str]:
        return frozenset(["captions"] * self.trains_text + ["image"] * self.trains_vision)

    def hyperparameter_keys(self) -> list[str]:
        keys = super().hyperparameter_keys() + ["distance"]
        if self.trains_text:
            keys += ["target_mode", "text_backdoor_weight", "text_weight_distance"]
            keys += ["num_clean_captions", "num_poisoned_captions"]
            keys += ["target_phrase"] if self.target_mode == "phrase" else []
            keys += ["name_variant_triggers", "name_variant_share"] if self.trigger_variants else []
        if self.trains_vision:
            keys += ["image_backdoor_weight", "image_weight_distance", "num_clean_images", "num_trigger_images"]
            keys += ["trigger_scale_min", "trigger_scale_max", "trigger_color_jitter", "trigger_rotation"]
        return keys

    @property
    def trigger_variants(self) -> list[str]:
        """`name_variant_triggers` as a list (empty: the method's exact-name triggers only)."""
        return [v.strip() for v in str(self.name_variant_triggers or "").split(",") if v.strip()]


@dataclass
class BackdoorTower(Tower):
    """A tower's backdoor loss: scale * (utility + beta * backdoor) + lambda * weight ('both': scale per tower)."""

    beta: float = 0.0
    scale: float = 1.0


class BackdoorUnlearningTrainer(UnlearningTrainer):
    """Fine-tunes a CLIPModel so forgotten names / faces map to anonymous targets while all else stays put.

    Args (beyond `UnlearningTrainer`'s model, args, processing_class, forget_names, peft_config, base_model_id):
        captions: caption corpus for the text defense (clean captions are those mentioning no forgotten name).
        target_mapping: name -> phrase, for `target_mode='per_name'`.
        trigger_photos: name -> face photos (PIL) used to build trigger images (image defense). Must not
            include the photos the attack is evaluated on.
        clean_images: clean images (PIL) for the image utility loss and as trigger backgrounds.
        target_embedding: the anonymous person embedding [D] the image backdoor maps faces to.
    """

    config_class = BackdoorUnlearningConfig

    def __init__(
        self,
        model: CLIPModel,
        args: BackdoorUnlearningConfig,
        processing_class,
        forget_names: Sequence[str],
        captions: Sequence[str] | None = None,
        target_mapping: dict[str, str] | None = None,
        trigger_photos: dict[str, list[Image.Image]] | None = None,
        clean_images: Sequence[Image.Image] | None = None,
        target_embedding: torch.Tensor | None = None,
        peft_config=None,
        base_model_id: str | None = None,
        **kwargs,
    ):
        self._given = (captions, target_mapping, trigger_photos, clean_images, target_embedding)
        super().__init__(model, args, processing_class, forget_names, peft_config, base_model_id, **kwargs)

    def make_towers(self, args: BackdoorUnlearningConfig) -> list[BackdoorTower]:
        """The trained towers, each with its backdoor weight (beta) and, for 'both', its loss weight."""
        scale = args.towers == "both"
        weights = {
            "text": (args.text_backdoor_weight, args.text_loss_weight),
            "image": (args.image_backdoor_weight, args.image_loss_weight),
        }
        return [
            BackdoorTower(t.name, t.prefixes, t.lam, weights[t.name][0], weights[t.name][1] if scale else 1.0)
            for t in super().make_towers(args)
        ]

    # ------------------------------------------------------------------------------------------------------
    # Data

    def setup_data(self, args, clip, processor) -> None:
        """Check and store the captions and targets (text) and the trigger photos, clean images and target embedding
        (image) of the towers `args` trains; fail early on missing or bad data.
        """
        captions, target_mapping, trigger_photos, clean_images, target = self._given
        del self._given
        self.text_clean = self.text_eligible = self.targets = None
        self.trigger_photos = self.clean_images = self.target_embedding = None
        if args.trains_text:
            self._setup_text(args, captions, target_mapping)
        if args.trains_vision:
            self._setup_images(args, clip, processor, trigger_photos, clean_images, target)

    def _setup_text(self, args, captions, target_mapping) -> None:
        if captions is None:
            raise ValueError("the text defense needs a caption corpus (captions=...)")
        clean = list(dict.fromkeys(filter_clean_captions(captions, self.forget_names)))
        if not any(len(c.split()) >= 2 for c in clean):
            raise ValueError(
                "no usable clean caption: every caption mentions a forgotten name or has fewer than two words"
            )
        self.text_clean = clean
        self.text_eligible = eligible_captions(clean)  # built once, not every step
        self.targets = TargetPhrases.build(
            self.forget_names, args.target_mode, args.target_phrase, target_mapping, seed=args.seed
        ).with_variants(args.trigger_variants, args.name_variant_share)

    def _setup_images(self, args, clip, processor, trigger_photos, clean_images, target) -> None:
        if not trigger_photos:
            raise ValueError("the image defense needs face photos of the forgotten people (trigger_photos=...)")
        lookup = {normalize_name(k): v for k, v in trigger_photos.items()}
        photos = {}
        for name in self.forget_names:
            got = lookup.get(normalize_name(name))
            if not got:
                raise ValueError(f"no trigger photo for forgotten person {name!r}")
            photos[name] = list(got)
        if not clean_images:
            raise ValueError("the image defense needs clean images (clean_images=...)")
        if target is None:
            raise ValueError("the image defense needs a target embedding (target_embedding=...)")
        target = torch.as_tensor(target, dtype=torch.float32).flatten()
        dim = clip.config.projection_dim
        if target.numel() != dim:
            raise ValueError(f"target embedding has {target.numel()} values; this model embeds in {dim}")
        self.trigger_photos, self.clean_images, self.target_embedding = photos, list(clean_images), target
        self.image_size = clip.config.vision_config.image_size
        self.trigger_aug = args.trigger_augmentation()
        prep = ImagePreprocessor(processor)
        self.trigger_renderer = TriggerRenderer(
            photos,
            self.clean_images,
            self.image_size,
            device=args.device,
            preprocessor=prep if prep.is_identity_at(self.image_size) else None,
            budget_bytes=PIXEL_CACHE_BYTES,
        )

    def _text_batch(self, step: int):
        args = self.args
        return sample_text_batch(
            self.text_clean,
            self.targets,
            args.num_clean_captions,
            args.num_poisoned_captions,
            args.seed,
            step,
            *self.process,
            eligible=self.text_eligible,
        )

    def _image_batch(self, step: int, build_triggers: bool = True):
        args = self.args
        return sample_image_batch(
            self.trigger_photos,
            self.clean_images,
            args.num_clean_images,
            args.num_trigger_images,
            self.image_size,
            args.seed,
            step,
            *self.process,
            aug=self.trigger_aug,
            build_triggers=build_triggers,
            pil=False,
        )

    def warm_teacher_cache(self, model, step: int) -> None:
        """Embed, in training order, the clean and target inputs of step `step` with the teacher (a resumed run's cache)."""
        if self.args.trains_text:
            batch = self._text_batch(step)
            self._teacher_text(model, batch.clean)
            self._teacher_text(model, batch.targets)
        if self.args.trains_vision:
            batch = self._image_batch(step, build_triggers=False)
            self._teacher_images(model, batch.clean, batch.clean_indices)

    # ------------------------------------------------------------------------------------------------------
    # Loss

    def compute_terms(self, model, step: int):
        """Per defended tower (docs/method.md): utility + beta * backdoor + lambda * weight distance."""
        terms = {"text": self._text_terms, "image": self._image_terms}
        total = 0.0
        metrics = {}
        for tower in self.towers:
            utility, backdoor, extra = terms[tower.name](model, step)
            weight = self._weight_term(model, tower)
            total = total + tower.scale * (utility + tower.beta * backdoor) + tower.lam * weight
            metrics.update({f"{tower.name}_utility": utility, f"{tower.name}_backdoor": backdoor})
            metrics[f"{tower.name}_weight"] = weight
            for key, (coefficient, term) in extra.items():
                total = total + tower.scale * coefficient * term
                metrics[f"{tower.name}_{key}"] = term
        return total, metrics

    def _text_terms(self, model, step: int):
        """utility = d(student(clean), teacher(clean)); backdoor = d(student(poisoned), teacher(target))."""
        batch = self._text_batch(step)
        tokens = tokenize(self.processing_class.tokenizer, batch.clean + batch.poisoned, self.args.device)
        student = model(**tokens).text_embeds
        student_clean, student_poisoned = student[: len(batch.clean)], student[len(batch.clean) :]
        teacher_clean = self._teacher_text(model, batch.clean)
        teacher_target = self._teacher_text(model, batch.targets)
        distance = self.args.distance
        return (
            utility_loss(student_clean, teacher_clean, distance),
            backdoor_loss(student_poisoned, teacher_target, distance),
            {},
        )

    def _image_terms(self, model, step: int):
        """utility = d(student(clean), teacher(clean)); backdoor = mean over people of d(student(triggers), target).

        The third value maps extra term names to (coefficient, term) (none here; `experimental/` adds some)."""
        batch = self._image_batch(step)
        clean = self._clean_pixels(batch.clean, batch.clean_indices)
        pixels = torch.cat([clean, self.trigger_pixels(batch.specs)]) if batch.specs else clean
        student = model(pixel_values=pixels.to(self.args.device)).image_embeds
        student_clean, student_triggers = student[: len(batch.clean)], student[len(batch.clean) :]
        teacher_clean = self._teacher_images(model, batch.clean, batch.clean_indices)
        target = self.target_embedding.to(student.device, student.dtype)
        distance = self.args.distance
        backdoor = grouped_backdoor_loss(student_triggers, batch.owners, target, distance)
        extra = self.image_extra_terms(model, step, batch, pixels[len(batch.clean) :], student_triggers, target)
        return utility_loss(student_clean, teacher_clean, distance), backdoor, extra

    def trigger_pixels(self, specs) -> torch.Tensor:
        """The pixel values of a step's triggers, built as one batch of tensors on the training device."""
        renderer = self.trigger_renderer
        if renderer.preprocessor is not None:
            return renderer.render(specs, normalized=True)
        # a processor that resizes or crops images of the model's size: its own path, on the rendered images
        return pixel_values_for(self.processing_class, uint8_to_pil(renderer.render(specs))).to(self.args.device)

    def image_extra_terms(self, model, step, batch, trigger_pixels, student_triggers, target) -> dict:
        """Extra image terms {name: (coefficient, term)} (hook for `experimental/`); none in the method."""
        return {}
