"""Prompt templates and text prompts, shared by the attack (names) and the zero-shot utility metric (classes).

A template is a string with exactly one `{}` placeholder. The attack's 21 templates and the 80 standard CLIP
ImageNet templates ship in `data/resources/`; `load_templates` also reads a world's `object_templates`, a
text file, or a list. `embed_prompts` turns filled-in prompts into unit-norm text embeddings in large,
length-sorted batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import CLIPProcessor, PreTrainedTokenizerBase

from ..data.names import read_resource_lines
from ..distributed import DistributedState, map_batches
from ..modeling import pad_ids, text_features, token_ids


# ----------------------------------------------------------------------------------------------------------
# Template sets


def idia_templates() -> list[str]:
    """The attack's 21 prompt templates (`{}` stands for the name)."""
    return list(read_resource_lines("idia_templates.txt"))


def imagenet_templates() -> list[str]:
    """The 80 standard CLIP ImageNet prompt templates."""
    return list(read_resource_lines("imagenet_templates.txt"))


def check_templates(templates: Sequence[str]) -> list[str]:
    """Validate a template list: non-empty, no duplicates, each with exactly one `{}` placeholder."""
    templates = list(templates)
    if not templates:
        raise ValueError("the template list is empty: give at least one template with a '{}' placeholder")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"every template needs exactly one '{{}}' placeholder for the name; these do not: {bad}")
    if len(set(templates)) != len(templates):
        raise ValueError(f"duplicate templates: {sorted({t for t in templates if templates.count(t) > 1})}")
    return templates


def world_object_templates(world_json: str | os.PathLike) -> list[str]:
    """The `object_templates` of a synthetic world's `world.json`."""
    path = Path(world_json)
    if not path.is_file():
        raise FileNotFoundError(f"world file {str(path)!r} does not exist")
    data = json.loads(path.read_text())
    if "object_templates" not in data:
        raise ValueError(f"{str(path)!r} has no 'object_templates' list")
    return check_templates(data["object_templates"])


def load_templates(spec: str | os.PathLike | Sequence[str] | None) -> list[str]:
    """Resolve a template set: None or "imagenet" (the 80 CLIP templates), a `world.json`, a text file with
    one template per line, or a list of templates (each with a `{}` placeholder for the class name)."""
    if spec is None or (isinstance(spec, str) and spec == "imagenet"):
        return imagenet_templates()
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"template set {str(spec)!r} is neither 'imagenet' nor an existing file (a world.json or a text "
                "file with one '{}' template per line)"
            )
        if path.suffix == ".json":
            return world_object_templates(path)
        return check_templates([line.strip() for line in path.read_text().splitlines() if line.strip()])
    return check_templates(spec)


# ----------------------------------------------------------------------------------------------------------
# Prompts and their embeddings


def fill_template(template: str, name: str) -> str:
    """`template` with its `{}` replaced by `name` (no `str.format`, so other braces are harmless)."""
    return template.replace("{}", name)


@torch.no_grad()
def embed_prompts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase | CLIPProcessor,
    prompts: Sequence[str],
    batch_size: int = 1024,
    accelerator: DistributedState | None = None,
    progress: bool = False,
    desc: str = "text prompts",
) -> torch.Tensor:
    """Unit-norm text embeddings `[N, D]` of `prompts`, in the given order.

    Prompts are batched in order of token length, so batches carry almost no padding (about 40% less work
    than batching in the given order); batches are shared between processes when `accelerator` has several.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a CLIPProcessor works too
    if not prompts:
        raise ValueError("no prompts to embed")
    max_length = tokenizer.model_max_length
    text_config = getattr(getattr(model, "config", None), "text_config", None)
    if text_config is not None and getattr(text_config, "max_position_embeddings", None):
        max_length = min(max_length, text_config.max_position_embeddings)
    ids = token_ids(tokenizer, prompts, max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    device = next(model.parameters()).device

    def embed(start: int, end: int) -> torch.Tensor:
        batch = pad_ids(tokenizer, [ids[i] for i in order[start:end]])
        emb = text_features(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()

    sorted_emb = map_batches(embed, len(ids), batch_size, accelerator, desc=desc, progress=progress)
    out = torch.empty_like(sorted_emb)
    out[torch.tensor(order)] = sorted_emb
    return out
