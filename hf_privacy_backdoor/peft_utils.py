"""LoRA (peft) on CLIPModel: module presets, applying adapters, the exact adapter distance, loading back.

peft traps on CLIP (platform notes): `task_type=None` (FEATURE_EXTRACTION breaks CLIP's forward), no default
target modules, and a plain module list hits both towers, so presets compile to full-name regexes.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import CLIPModel


logger = logging.getLogger(__name__)

_TOWER = {"text": "text_model", "vision": "vision_model", "both": "(?:text_model|vision_model)"}
_PROJ = {"text": "text_projection", "vision": "visual_projection", "both": "(?:text_projection|visual_projection)"}
_PARTS = {
    "attn": r"self_attn\.(?:q_proj|k_proj|v_proj|out_proj)",
    "attn_mlp": r"(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.(?:fc1|fc2))",
}


def is_peft_model(model) -> bool:
    while hasattr(model, "module"):
        model = model.module
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def base_clip(model) -> CLIPModel:
    """The CLIPModel inside DDP / peft wrappers."""
    while hasattr(model, "module"):
        model = model.module
    if is_peft_model(model):
        model = model.get_base_model()
    return model


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


def default_preset(defense: str) -> str:
    return {"text": "text_attn_mlp", "image": "vision_attn_mlp", "both": "both_attn_mlp"}[defense]


def resolve_target_modules(args) -> str:
    if args.lora_target_modules:
        return args.lora_target_modules
    return preset_regex(args.lora_preset or default_preset(args.defense))


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


def apply_lora(model: CLIPModel, args):
    """Wrap `model` with LoRA adapters per the config (rank, alpha, dropout, preset / own regex)."""
    from peft import LoraConfig, get_peft_model

    pattern = resolve_target_modules(args)
    list_lora_targets(model, pattern)  # fails early on a pattern that matches nothing
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=pattern,
        task_type=None,
        bias="none",
    )
    return get_peft_model(model, config)


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


def adapter_base_model(adapter: str) -> str | None:
    cfg = Path(adapter) / "adapter_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("base_model_name_or_path")
    return None


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
