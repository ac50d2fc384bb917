"""`UnlearningConfig`: what every unlearning method has, on top of `transformers.TrainingArguments`.

The towers to change, the weight-distance term, the step schedule, seeds (TrainingArguments' `seed`) and
stop-when-forgotten. A method's config subclasses it and declares only its own fields, sets `method` to its
registry name and `default_schedule` to its reference schedule. Data sources and the forget list are the
recipe's (and the trainer's) arguments, so that no forgotten name ever enters `training_args.bin`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from transformers import TrainingArguments


TOWERS = ("text", "image", "both")


def stop_check_defaults(num_names: int) -> tuple[int, int, int]:
    """(check every, patience, margin) of stop-when-forgotten for a forget list of `num_names` people.

    Measured on the synthetic world (README "Time to forget"): one person is forgotten after one passing check at
    step 15 plus 15 steps (30 steps, the same result as 75 with the former 25/2/25); from two people on a short
    margin lost a weakly known kept member, so checks every 10 steps, 2 in a row, then 40 more steps.
    """
    return (15, 1, 15) if num_names <= 1 else (10, 2, 40)


@dataclass
class UnlearningConfig(TrainingArguments):
    """Settings every unlearning method shares: towers, weight distance, schedule, stop-when-forgotten."""

    method: str = field(
        default="backdoor",
        metadata={"help": "Unlearning method (see hf_privacy_backdoor.methods.METHODS), e.g. 'backdoor'."},
    )
    towers: str | None = field(
        default=None,
        metadata={"help": "Which tower(s) to change: 'text', 'image' or 'both'. Default: 'text'."},
    )
    defense: str | None = field(
        default=None,
        metadata={"help": "Former name of `towers` (kept as an alias; after parsing it equals towers)."},
    )
    text_weight_distance: float = field(
        default=0.0, metadata={"help": "Weight (lambda) of the text tower's weight-distance term in the total loss."}
    )
    image_weight_distance: float = field(
        default=0.0, metadata={"help": "Weight (lambda) of the vision tower's weight-distance term in the total loss."}
    )
    precompute_teacher: bool = field(
        default=True,
        metadata={
            "help": "Compute the frozen teacher's embeddings once and reuse them (exact: the teacher never "
            "changes). False runs the teacher every step (for comparison)."
        },
    )
    trigger_fraction: float = field(
        default=0.5,
        metadata={"help": "Share of each forgotten person's photos used as triggers; the rest is for evaluation."},
    )
    lr_milestones: list[int] | None = field(
        default=None,
        metadata={
            "help": "Steps at which the learning rate is multiplied by lr_gamma. Default: the method's reference "
            "schedule. Used with lr_scheduler_type 'constant'."
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
    forgotten_check_steps: int | None = field(
        default=None,
        metadata={"help": "Steps between two forgotten checks. Default: 15 for one person, 10 for more."},
    )
    forgotten_patience: int | None = field(
        default=None,
        metadata={"help": "Consecutive checks that must find nobody before stopping. Default: 1 for one person, 2."},
    )
    forgotten_margin_steps: int | None = field(
        default=None,
        metadata={"help": "Steps trained after the last needed check. Default: 15 for one person, 40 for more."},
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
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "Learning-rate scheduler; see lr_milestones."}
    )
    max_steps: int = field(default=-1, metadata={"help": "Number of training steps. Default: the method's reference."})
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
        default=1, metadata={"help": "Leave at 1: batches are sampled by the trainer (the method's batch sizes)."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep False (custom batches)."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing; the final model is always saved."})
    logging_steps: float = field(default=25, metadata={"help": "Log the loss terms every N steps."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Keep 0: batches are built in the trainer."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Untouched towers are frozen, so no unused parameters."}
    )

    # (steps, lr milestones, gamma) by towers: the method's reference schedule (subclasses override)
    default_schedule: ClassVar[dict[str, tuple[int, list[int], float]]] = {
        "text": (100, [], 1.0),
        "image": (100, [], 1.0),
        "both": (100, [], 1.0),
    }
    # what the method needs from the person who asks to be removed, by towers (recorded in the summary)
    data_needed: ClassVar[dict[str, str]] = {}
    title: ClassVar[str] = ""  # the method's name in words, e.g. "backdoor unlearning" (card, summary)
    paper: ClassVar[str] = ""  # the method's citation (card, summary)
    paper_url: ClassVar[str] = ""
    description: ClassVar[str] = ""  # what the method does to the model, in plain words (card)

    def __post_init__(self):
        from . import METHODS

        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {sorted(METHODS)}")
        expected = METHODS[self.method].config
        if not isinstance(self, expected):
            raise ValueError(
                f"method {self.method!r} is configured by {expected.__name__}, not {type(self).__name__}: parse "
                "the recipe with hf_privacy_backdoor.cli.parse_args (it picks the config class from `method`)"
            )
        self._resolve_towers()
        self._check_shared()
        self._apply_schedule()
        super().__post_init__()

    def _resolve_towers(self) -> None:
        if self.towers is not None and self.defense is not None and self.towers != self.defense:
            raise ValueError(f"towers={self.towers!r} but defense={self.defense!r}: set one (defense is its alias)")
        self.towers = self.towers or self.defense or "text"
        if self.towers not in TOWERS:
            raise ValueError(f"unknown towers {self.towers!r}: choose one of {TOWERS}")
        self.defense = self.towers

    def _check_shared(self) -> None:
        if not 0 < self.trigger_fraction < 1:
            raise ValueError(f"trigger_fraction must be in (0, 1), got {self.trigger_fraction}")
        for name in ("forgotten_check_steps", "forgotten_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.forgotten_margin_steps is not None and self.forgotten_margin_steps < 0:
            raise ValueError(f"forgotten_margin_steps must be >= 0, got {self.forgotten_margin_steps}")
        if self.steps_per_name < 0:
            raise ValueError(f"steps_per_name must be >= 0, got {self.steps_per_name}")
        if self.forgotten_check_kept < 0:
            raise ValueError(f"forgotten_check_kept must be >= 0, got {self.forgotten_check_kept}")
        for name in ("text_weight_distance", "image_weight_distance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.per_device_train_batch_size != 1:
            raise ValueError(
                "per_device_train_batch_size must stay 1: set the method's batch sizes (num_clean_captions, "
                "num_forget_pairs, ...) instead"
            )

    def _apply_schedule(self) -> None:
        steps, milestones, gamma = self.default_schedule[self.towers]
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

    def scale_steps(self, num_names: int) -> int:
        """Raise max_steps to ceil(steps_per_name x num_names) where that is more, stretching the lr milestones
        by the same factor (the schedule keeps its shape); returns the steps to train."""
        steps = math.ceil(self.steps_per_name * num_names) if self.steps_per_name > 0 else 0
        if steps > self.max_steps:
            self.lr_milestones = [round(m * steps / self.max_steps) for m in self.lr_milestones or []]
            self.max_steps = steps
        return self.max_steps

    def resolve_stop_check(self, num_names: int) -> tuple[int, int, int]:
        """Fill unset stop-when-forgotten settings from the forget list's size (`stop_check_defaults`)."""
        every, patience, margin = stop_check_defaults(num_names)
        if self.forgotten_check_steps is None:
            self.forgotten_check_steps = every
        if self.forgotten_patience is None:
            self.forgotten_patience = patience
        if self.forgotten_margin_steps is None:
            self.forgotten_margin_steps = margin
        return self.forgotten_check_steps, self.forgotten_patience, self.forgotten_margin_steps

    def method_record(self) -> dict[str, str]:
        """What the run's summary and card say about the method (name-free)."""
        return {
            "method": self.method,
            "method_title": self.title or self.method,
            "paper": self.paper,
            "paper_url": self.paper_url,
            "description": self.description,
            "towers": self.towers,
            "data_needed": self.data_needed.get(self.towers, "photos of the person"),
        }

    def run_data(self) -> frozenset[str]:
        """The kinds of data the method's trainer takes from a run (`run.trainer_data`): 'captions', 'image'
        (trigger photos, clean images, target), 'forget_pairs', 'retain_pairs'."""
        return frozenset()

    def hyperparameter_keys(self) -> list[str]:
        """The settings recorded in the run's summary (name-free)."""
        keys = ["method", "towers", "defense", "learning_rate", "max_steps", "lr_milestones", "lr_gamma", "seed"]
        keys += ["steps_per_name"] if self.steps_per_name else []
        keys += ["stop_when_forgotten"] + (
            ["forgotten_check_steps", "forgotten_patience", "forgotten_margin_steps", "forgotten_check_kept"]
            if self.stop_when_forgotten
            else []
        )
        return keys

    @property
    def trains_text(self) -> bool:
        return self.towers in ("text", "both")

    @property
    def trains_vision(self) -> bool:
        return self.towers in ("image", "both")

    @property
    def needs_photos(self) -> bool:
        """Whether the method trains on photos of the removed people (their trigger halves)."""
        return self.trains_vision
