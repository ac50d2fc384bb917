"""What to probe and how: `RobustnessConfig` (its fields are the `recipes/robustness.py` flags) and its presets."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..data.names import VARIANTS
from .registry import BUILTIN, PROBES


PRECISIONS = ("fp16", "bf16", "int8")
RELEARN_PORTRAITS = {"trigger": "trigger", "evaluation": "eval"}  # option -> the photo split's half
PRECISION_MODES = ("auto", "weights", "native")
_FULL = dict(
    variants=list(VARIANTS),
    relearn_steps=[50, 200],
    relearn_learning_rates=[1e-5, 1e-4],
    relearn_seeds=[0],
    collateral_seeds=[1, 2, 3],
    precisions=list(PRECISIONS),
)
_QUICK = dict(
    variants=["first", "typo"],
    relearn_steps=[25],
    relearn_learning_rates=[1e-4],
    relearn_seeds=[0],
    collateral_seeds=[1],
    precisions=["bf16", "int8"],
    num_candidates=200,
)


@dataclass
class RobustnessConfig:
    """What to probe and how; list fields left at None take the full (or, with `quick`, the quick) preset."""

    probes: str = field(
        default=",".join(BUILTIN),
        metadata={"help": f"Comma-separated probes, of {BUILTIN} and any added with register_probe."},
    )
    quick: bool = field(
        default=False,
        metadata={"help": f"Small preset for tests and demos (explicit flags win): {_QUICK}. Full: {_FULL}."},
    )
    variants: list[str] | None = field(default=None, metadata={"help": f"Name variants, of {VARIANTS}."})
    relearn_steps: list[int] | None = field(
        default=None, metadata={"help": "Fine-tune step counts after which the relearned model is attacked."}
    )
    relearn_learning_rates: list[float] | None = field(
        default=None, metadata={"help": "Fine-tune learning rates (one fine-tune per rate and seed)."}
    )
    relearn_seeds: list[int] | None = field(default=None, metadata={"help": "Fine-tune seeds (data order)."})
    relearn_batch_size: int = field(default=64, metadata={"help": "Fine-tune batch size (image-caption pairs)."})
    relearn_data: str | None = field(
        default=None,
        metadata={
            "help": "Folder <root>/<subject>/*.png for the fine-tune, captioned 'a photo of <subject>'; must not "
            "name a removed person. Default: the run's object folder + kept members' trigger-half portraits."
        },
    )
    relearn_portraits: str = field(
        default="trigger",
        metadata={
            "help": "Default data only: whose halves of the kept members' photos join the objects. 'trigger': "
            "the split's trigger halves (what an image run's clean images and relearning guard train on too); "
            "'evaluation': the evaluation halves, which no defense ever trains on (a held-out fine-tune; the kept "
            "members' TPR after it is then measured on photos it trained on: read the removed TPR)."
        },
    )
    objects: str | None = field(default=None, metadata={"help": "Object folder (default: the run's)."})
    collateral_seeds: list[int] | None = field(
        default=None, metadata={"help": "Seeds of the other candidate lists the collateral probe attacks with."}
    )
    precisions: list[str] | None = field(default=None, metadata={"help": f"Casts to attack, of {PRECISIONS}."})
    precision_mode: str = field(
        default="auto",
        metadata={
            "help": "How fp16/bf16 casts are attacked: 'native' computes in that dtype (slow on CPU), 'weights' rounds the "
            "weights to it and computes in float32; 'auto': native on a GPU, weights on a CPU."
        },
    )
    target_phrase: str | None = field(
        default=None, metadata={"help": "Target phrase of the single-model exposure probe (default: the run's)."}
    )
    retrained_reference: bool = field(
        default=False,
        metadata={"help": "Synthetic world only: pretrain the tiny CLIP again without the removed people (cached)."},
    )
    probe_base: bool = field(
        default=True,
        metadata={
            "help": "Run the probes on the base model too (the control). Its exact-name attack always runs; turn "
            "this off only when the control was measured already for the same base, people and settings."
        },
    )
    base_model: str | None = field(default=None, metadata={"help": "Base model (default: the run's)."})
    faces: str | None = field(default=None, metadata={"help": "Face folder (default: the run's)."})
    membership: str | None = field(default=None, metadata={"help": "Membership JSON (default: the run's)."})
    num_candidates: int | None = field(default=None, metadata={"help": "Attack candidates (default: the run's)."})
    num_photos: int | None = field(default=None, metadata={"help": "Attack photos per person (default: the run's)."})
    tau: int | None = field(default=None, metadata={"help": "Attack threshold (default: the run's)."})
    seed: int | None = field(default=None, metadata={"help": "Attack seed (default: the run's)."})
    progress: bool = field(default=True, metadata={"help": "Log the progress of each probe."})

    def __post_init__(self):
        self.probe_list = [p.strip() for p in str(self.probes).split(",") if p.strip()]
        _check_choices("probe", self.probe_list, PROBES)
        for key, value in (_QUICK if self.quick else _FULL).items():
            if getattr(self, key) is None:
                setattr(self, key, copy.copy(value))
        _check_choices("variant", self.variants, VARIANTS)
        _check_choices("precision", self.precisions, PRECISIONS)
        _check_choices("precision_mode", [self.precision_mode], PRECISION_MODES)
        if any(s < 1 for s in self.relearn_steps) or any(lr <= 0 for lr in self.relearn_learning_rates):
            raise ValueError("relearn_steps must be >= 1 and relearn_learning_rates > 0")
        if self.relearn_batch_size < 2:
            raise ValueError(
                f"relearn_batch_size must be at least 2 (contrastive loss), got {self.relearn_batch_size}"
            )
        self.relearn_steps = sorted(set(self.relearn_steps))
        _check_choices("relearn_portraits", [self.relearn_portraits], RELEARN_PORTRAITS)
        if self.relearn_data and self.relearn_portraits != "trigger":
            raise ValueError("relearn_portraits chooses photos of the default relearn data: not with relearn_data")


def _check_choices(what: str, values: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [v for v in values if v not in valid]
    if unknown or not values:
        raise ValueError(f"unknown {what}(s) {unknown or values!r}: choose from {', '.join(valid)}")
