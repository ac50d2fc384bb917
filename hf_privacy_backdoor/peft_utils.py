"""LoRA (peft) on CLIPModel: module presets, applying adapters, the exact adapter distance, loading back.

peft traps on CLIP (platform notes): `task_type=None` (FEATURE_EXTRACTION breaks CLIP's forward), no default
target modules, and a plain module list hits both towers, so presets compile to full-name regexes.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import extract_model_from_parallel, is_peft_model
from transformers import CLIPModel


logger = logging.getLogger(__name__)

LORA_PRESETS = ("text_attn", "text_attn_mlp", "vision_attn", "vision_attn_mlp", "both_attn", "both_attn_mlp")
_TOWER = {"text": "text_model", "vision": "vision_model", "both": "(?:text_model|vision_model)"}
_PROJ = {"text": "text_projection", "vision": "visual_projection", "both": "(?:text_projection|visual_projection)"}
_PARTS = {
    "attn": r"self_attn\.(?:q_proj|k_proj|v_proj|out_proj)",
    "attn_mlp": r"(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.(?:fc1|fc2))",
}


def base_clip(model) -> CLIPModel:
    """The CLIPModel inside DDP / FSDP / DeepSpeed and peft wrappers."""
    model = extract_model_from_parallel(model)
    return model.get_base_model() if is_peft_model(model) else model


def preset_regex(preset: str) -> str:
    """'text_attn', 'vision_attn_mlp', 'both_attn+proj', ... -> a full-name regex over CLIP's module names."""
    with_proj = preset.endswith("+proj")
    base = preset.removesuffix("+proj")
    tower, _, part = base.partition("_")
    if tower not in _TOWER or part not in _PARTS:
        raise ValueError(
            f"unknown LoRA preset {preset!r}: use <text|vision|both>_<attn|attn_mlp>, optionally with '+proj'"
        )
    layers = rf".*{_TOWER[tower]}\.encoder\.layers\.\d+\.{_PARTS[part]}"
    return rf"(?:{layers}|{_PROJ[tower]})" if with_proj else layers


def default_preset(towers: str) -> str:
    """The LoRA preset for `towers` ('text', 'image' or 'both'): attention and MLP of the trained tower(s)."""
    return {"text": "text_attn_mlp", "image": "vision_attn_mlp", "both": "both_attn_mlp"}[towers]


@dataclass
class LoraArguments:
    """LoRA settings of a recipe (TRL's `ModelConfig` shape); `get_peft_config` turns them into a `LoraConfig`."""

    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of full weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (r)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA path."})
    lora_preset: str | None = field(
        default=None,
        metadata={
            "help": f"Module preset: one of {LORA_PRESETS}; '+proj' adds the projection heads (e.g. "
            "'text_attn+proj'). Default: the defended tower(s), attention + MLP."
        },
    )
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Own full-name regex of modules to adapt (overrides lora_preset)."}
    )
    list_lora_targets: bool = field(default=False, metadata={"help": "Print the modules LoRA would adapt, and exit."})

    def __post_init__(self):
        if self.lora_preset is not None and self.lora_preset.removesuffix("+proj") not in LORA_PRESETS:
            raise ValueError(f"unknown lora_preset {self.lora_preset!r}: choose one of {LORA_PRESETS} (+proj)")
        if (self.lora_preset or self.lora_target_modules) and not self.use_lora:
            raise ValueError("lora_preset / lora_target_modules are set but use_lora is False: add --use_lora")
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be at least 1, got {self.lora_r}")

    def target_modules(self, towers: str) -> str:
        """The full-name regex of the modules to adapt: the own regex, the preset, or the default for the towers."""
        if self.lora_target_modules:
            return self.lora_target_modules
        return preset_regex(self.lora_preset or default_preset(towers))


def get_peft_config(lora_args: LoraArguments, towers: str):
    """A `peft.LoraConfig` for a recipe's LoRA settings (None without `use_lora`).

    `towers` ('text', 'image' or 'both') picks the default preset when `lora_args` names neither a preset nor a regex.
    """
    if not lora_args.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        target_modules=lora_args.target_modules(towers),
        task_type=None,
        bias="none",
    )


def list_lora_targets(model, pattern: str) -> list[str]:
    """Names of the Linear modules the full-name regex `pattern` matches; error if it matches none."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"invalid LoRA target regex {pattern!r}: {err}") from None
    names = [n for n, m in base_clip(model).named_modules() if isinstance(m, torch.nn.Linear) and regex.fullmatch(n)]
    if not names:
        raise ValueError(f"the LoRA target pattern {pattern!r} matches no Linear module of this CLIP model")
    return names


def apply_lora(model: CLIPModel, peft_config):
    """Wrap `model` with the adapters of `peft_config` (any peft config); clear errors for what breaks CLIP."""
    from peft import get_peft_model

    task_type = getattr(peft_config, "task_type", None)
    if task_type is not None:
        raise ValueError(
            f"peft_config.task_type is {task_type!r}: use task_type=None for CLIPModel (peft's task heads break "
            "CLIP's forward)"
        )
    targets = getattr(peft_config, "target_modules", None)
    if isinstance(targets, str):
        list_lora_targets(model, targets)  # fails early on a pattern that matches nothing
    return get_peft_model(model, peft_config)


def lora_factors(model, prefixes: tuple[str, ...]):
    """(A, B, scale) of every active LoRA module whose CLIP module name starts with one of `prefixes`."""
    from peft.tuners.lora import LoraLayer

    clip = base_clip(model)
    for name, module in clip.named_modules():
        if isinstance(module, LoraLayer) and name.startswith(prefixes):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    yield module.lora_A[adapter].weight, module.lora_B[adapter].weight, module.scaling[adapter]


def load_adapter(model: CLIPModel, adapter: str, merge: bool = False):
    """Apply a saved LoRA adapter (local folder or Hub id) to `model`; merged into a plain CLIPModel if `merge`."""
    from peft import PeftModel

    path = Path(adapter)
    if path.exists() and not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter!r} holds no LoRA adapter (adapter_config.json is missing)")
    try:
        peft_model = PeftModel.from_pretrained(model, adapter)
    except RuntimeError as err:
        if "size mismatch" in str(err):
            raise ValueError(
                f"the adapter {adapter!r} was trained for a different base model (tensor shapes differ): "
                f"{str(err).splitlines()[0]}"
            ) from None
        raise
    if merge:
        return peft_model.merge_and_unload()
    return peft_model


def hub_id_or_none(name_or_path: str | None) -> str | None:
    """`name_or_path` when it reads as a Hub id; None for a local path (which must never be published)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name_or_path:
        return None
    name = str(name_or_path)
    if Path(name).is_absolute() or name.startswith((".", "~")) or Path(name).exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


@contextmanager
def published_base_model(model, base_model_id: str | None):
    """While saving `model`'s adapter, name its base `base_model_id`, or the Hub id it was loaded from, or nothing.

    peft writes the base's `name_or_path` into adapter_config.json and the adapter's model card; for a base
    loaded from a local folder that is a machine path. Without a Hub id to put there it becomes null (with a
    warning) and the card names no base. Yields the published name (None when unknown).
    """
    clip = base_clip(model)
    loaded_from = clip.name_or_path
    base = base_model_id or hub_id_or_none(loaded_from)
    if base is None:
        logger.warning(
            "the base model has no Hub id (it was loaded from %r) and no base_model_id is set: "
            "adapter_config.json will name no base model (set --base_model_id to the base's Hub id)",
            loaded_from,
        )
    saved = clip.name_or_path, clip.config._name_or_path
    configs = list(model.peft_config.values())
    clip.name_or_path = clip.config._name_or_path = base or ""
    for cfg in configs:
        cfg.base_model_name_or_path = base
    try:
        yield base
    finally:
        clip.name_or_path, clip.config._name_or_path = saved


def drop_card_base_model(output_dir: str | Path) -> None:
    """Remove the (empty) base-model entries peft writes into an adapter's README when the base is unknown."""
    from huggingface_hub import ModelCard

    readme = Path(output_dir) / "README.md"
    if not readme.is_file():
        return
    card = ModelCard.load(readme)
    card.data.base_model = None
    card.data.tags = [t for t in card.data.tags or [] if not t.startswith("base_model:")] or None
    card.save(readme)
