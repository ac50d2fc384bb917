"""`BackdoorUnlearningConfig`: the method's settings on top of `transformers.TrainingArguments`.

Only method fields live here; data sources and the forget list are the recipe's (and the trainer's)
arguments, so that no forgotten name ever enters `training_args.bin` or anything else that is published.
LoRA is brought in as a `peft_config` (see `peft_utils.LoraArguments` / `get_peft_config` for the recipes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .data.captions import TARGET_MODES, TRIGGER_VARIANTS
from .losses import DISTANCES


DEFENSES = ("text", "image", "both")

# reference schedules (docs/method.md): steps, milestones, gamma
TEXT_SCHEDULE = (400, [200, 300], 0.5)
IMAGE_SCHEDULE = (100, [25, 50], 0.1)


@dataclass
class BackdoorUnlearningConfig(TrainingArguments):
    """Settings of backdoor unlearning (Hintersdorf et al., arXiv 2310.08320); defaults are the reference's."""

    defense: str = field(
        default="text",
        metadata={"help": "Which tower to defend: 'text' (forget names), 'image' (forget faces) or 'both'."},
    )
    # --- text backdoor
    target_mode: str = field(
        default="phrase",
        metadata={
            "help": "Text target: 'phrase' (every name -> target_phrase), 'per_name' (a phrase per name, from "
            "the trainer's target mapping) or 'random_name' (each name -> a random generated name)."
        },
    )
    target_phrase: str = field(default="a person", metadata={"help": "Neutral phrase a forgotten name maps to."})
    text_backdoor_weight: float = field(default=0.6, metadata={"help": "beta of the text backdoor loss."})
    text_weight_distance: float = field(
        default=0.01, metadata={"help": "lambda of the text tower's weight-distance term."}
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
    image_backdoor_weight: float = field(default=0.8, metadata={"help": "beta of the image backdoor loss."})
    image_weight_distance: float = field(
        default=0.005, metadata={"help": "lambda of the vision tower's weight-distance term."}
    )
    image_backdoor_sam_rho: float = field(
        default=0.0,
        metadata={
            "help": "Beyond the method: train the image backdoor sharpness-aware (SAM) with this radius, so that the "
            "mapping holds for nearby weights (against relearning by a benign fine-tune). 0 (default) = off."
        },
    )
    image_name_affinity_weight: float = field(
        default=0.0,
        metadata={
            "help": "Beyond the method: weight of a term that keeps each trigger photo no closer to its own person's "
            "name (prompts embedded by the original text tower, templates disjoint from the attack's) than the "
            "target embedding is; the backdoor alone leaves a name-specific residual that the attack still finds "
            "(measured). 0 (default) = the method."
        },
    )
    image_name_affinity_margin: float = field(
        default=0.01, metadata={"help": "Cosine margin of the name-affinity term: photo <= target - margin."}
    )
    image_relearn_guard_steps: int = field(
        default=0,
        metadata={
            "help": "Beyond the method: every image_relearn_guard_every steps, fine-tune a copy of the student for this "
            "many benign contrastive steps (other people's portraits with their names) and add the image backdoor's "
            "gradient at the copy, so that the mapping survives relearning. Full fine-tuning only. 0 (default) = off."
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
    trigger_fraction: float = field(
        default=0.5,
        metadata={"help": "Share of each forgotten person's photos used as triggers; the rest is for evaluation."},
    )
    # --- both towers
    text_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the text tower's loss in 'both'."})
    image_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the vision tower's loss in 'both'."})
    # --- shared
    distance: str = field(default="cosine", metadata={"help": "Embedding distance: 'cosine' (-cos) or 'mse'."})
    precompute_teacher: bool = field(
        default=True,
        metadata={
            "help": "Compute the frozen teacher's embeddings once and reuse them (exact: the teacher never "
            "changes). False runs the teacher every step (for comparison)."
        },
    )
    lr_milestones: list[int] | None = field(
        default=None,
        metadata={
            "help": "Steps at which the learning rate is multiplied by lr_gamma. Default: the reference schedule "
            "(text/both: 200,300 x0.5; image: 25,50 x0.1). Used with lr_scheduler_type 'constant'."
        },
    )
    lr_gamma: float | None = field(default=None, metadata={"help": "Learning-rate factor at each milestone."})
    # --- stop when forgotten
    stop_when_forgotten: bool = field(
        default=False,
        metadata={
            "help": "Every forgotten_check_steps steps, run a cheap attack on trigger photos (never the evaluation "
            "photos); stop once no forgotten person is identified, by the full name or a trained partial name, "
            "and no kept person the check identified on the base model is lost, for forgotten_patience checks "
            "in a row, plus forgotten_margin_steps more steps. max_steps stays the upper bound."
        },
    )
    forgotten_check_steps: int = field(default=25, metadata={"help": "Steps between two forgotten checks."})
    forgotten_patience: int = field(
        default=2, metadata={"help": "Consecutive checks that must find nobody before stopping."}
    )
    forgotten_margin_steps: int = field(
        default=25, metadata={"help": "Steps trained after the last needed check, before stopping."}
    )
    forgotten_check_kept: int = field(
        default=64,
        metadata={
            "help": "Kept people the forgotten check re-checks (a seeded sample of those it identifies on the base "
            "model); 0 checks the forgotten people only."
        },
    )
    # Method-appropriate TrainingArguments defaults
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Scheduler; see lr_milestones."})
    max_steps: int = field(default=-1, metadata={"help": "Training steps. Default: 400 text/both, 100 image."})
    steps_per_name: float = field(
        default=0.0,
        metadata={
            "help": "Scale the run with the forget list: train at least ceil(steps_per_name x number of names) "
            "steps (max_steps is raised to it and lr_milestones stretch by the same factor). 0 (default) = max_steps as "
            "given."
        },
    )
    max_grad_norm: float = field(
        default=0.0,
        metadata={
            "help": "Clip the gradient norm to this value; 0 (default) = no clipping and no gradient-norm "
            "computation, as the method trains (the Trainer's usual 1.0 clipped steps the method does not clip)."
        },
    )
    per_device_train_batch_size: int = field(
        default=1, metadata={"help": "Leave at 1: batches are sampled by the trainer (num_clean_* etc.)."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep False (custom batches)."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing; the final model is always saved."})
    logging_steps: float = field(default=25, metadata={"help": "Log the loss terms every N steps."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Keep 0: batches are built in the trainer."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Untouched towers are frozen, so no unused parameters."}
    )

    def __post_init__(self):
        if self.defense not in DEFENSES:
            raise ValueError(f"unknown defense {self.defense!r}: choose one of {DEFENSES}")
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
        if not 0 < self.trigger_fraction < 1:
            raise ValueError(f"trigger_fraction must be in (0, 1), got {self.trigger_fraction}")
        for name in ("forgotten_check_steps", "forgotten_patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.image_backdoor_sam_rho < 0:
            raise ValueError(f"image_backdoor_sam_rho must be >= 0, got {self.image_backdoor_sam_rho}")
        if self.image_name_affinity_weight < 0:
            raise ValueError(f"image_name_affinity_weight must be >= 0, got {self.image_name_affinity_weight}")
        if not 0 <= self.image_name_affinity_margin <= 1:
            raise ValueError(f"image_name_affinity_margin must be in [0, 1], got {self.image_name_affinity_margin}")
        self._check_relearn_guard()
        if self.steps_per_name < 0:
            raise ValueError(f"steps_per_name must be >= 0, got {self.steps_per_name}")
        if self.forgotten_check_kept < 0:
            raise ValueError(f"forgotten_check_kept must be >= 0, got {self.forgotten_check_kept}")
        if self.forgotten_margin_steps < 0:
            raise ValueError(f"forgotten_margin_steps must be >= 0, got {self.forgotten_margin_steps}")
        if self.per_device_train_batch_size != 1:
            raise ValueError(
                "per_device_train_batch_size must stay 1: set num_clean_captions / num_poisoned_captions / "
                "num_clean_images / num_trigger_images instead"
            )
        steps, milestones, gamma = IMAGE_SCHEDULE if self.defense == "image" else TEXT_SCHEDULE
        if self.max_steps is None or self.max_steps <= 0:
            self.max_steps = steps
        scheduler = getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type)
        if scheduler == "constant":
            if self.lr_milestones is None:
                self.lr_milestones = [m for m in milestones if m < self.max_steps]
            if self.lr_gamma is None:
                self.lr_gamma = gamma
        elif self.lr_milestones:
            raise ValueError(
                f"lr_milestones is set but lr_scheduler_type is {scheduler!r}: milestones need 'constant'"
            )
        super().__post_init__()

    def _check_relearn_guard(self) -> None:
        if self.image_relearn_guard_steps < 0:
            raise ValueError(f"image_relearn_guard_steps must be >= 0, got {self.image_relearn_guard_steps}")
        for name in ("image_relearn_guard_every", "image_relearn_guard_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("image_relearn_guard_lr", "image_relearn_guard_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def scale_steps(self, num_names: int) -> int:
        """Raise max_steps to ceil(steps_per_name x num_names) where that is more, stretching the lr milestones
        by the same factor (the schedule keeps its shape); returns the steps to train."""
        steps = math.ceil(self.steps_per_name * num_names) if self.steps_per_name > 0 else 0
        if steps > self.max_steps:
            self.lr_milestones = [round(m * steps / self.max_steps) for m in self.lr_milestones or []]
            self.max_steps = steps
        return self.max_steps

    @property
    def trigger_variants(self) -> list[str]:
        """`name_variant_triggers` as a list (empty: the method's exact-name triggers only)."""
        return [v.strip() for v in str(self.name_variant_triggers or "").split(",") if v.strip()]

    @property
    def trains_text(self) -> bool:
        return self.defense in ("text", "both")

    @property
    def trains_vision(self) -> bool:
        return self.defense in ("image", "both")
