"""Utility numbers (specification section 5): zero-shot accuracy and embedding similarities.

A defense must remove people without breaking the model: zero-shot top-1/top-5 on a labelled image set
measures what the model still knows, and the similarities measure how far the defended embeddings moved
from the original ones (clean inputs) and how well the backdoor maps triggers to their targets. Template
sets and prompt embedding come from `prompts.py`, shared with the attack.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPProcessor, PreTrainedTokenizerBase

from ..data.faces import IMAGE_EXTENSIONS, PhotoRef, open_image
from ..data.names import folder_to_name
from ..distributed import DistributedState, map_batches
from ..modeling import encode_images, encode_texts
from .prompts import embed_prompts, fill_template, load_templates


# ----------------------------------------------------------------------------------------------------------
# Zero-shot classification


@torch.no_grad()
def class_embeddings(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase | CLIPProcessor,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    batch_size: int = 1024,
    accelerator: DistributedState | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Zero-shot class embeddings `[num_classes, dim]`: mean of the normalised embeddings of each class name
    in every template, re-normalised to unit norm."""
    templates = load_templates(templates)
    class_names = list(class_names)
    if not class_names:
        raise ValueError("no class names given")
    prompts = [fill_template(t, c) for c in class_names for t in templates]
    flat = embed_prompts(model, tokenizer, prompts, batch_size, accelerator, progress, desc="class prompts")
    return F.normalize(flat.view(len(class_names), len(templates), -1).mean(dim=1), dim=-1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the k highest logits, for each k (k is capped at the class count)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if logits.dim() != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need logits [N, classes] and N labels with N > 0; got {tuple(logits.shape)}, {len(labels)}")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {f"top{k}": hits[:, :k].any(dim=1).float().mean().item() for k in ks}


@dataclass
class LabelledImages:
    """Image references (paths or PIL images) with integer labels into `class_names`."""

    images: list[PhotoRef]
    labels: list[int]
    class_names: list[str]


def load_labelled_folder(root: str | os.PathLike) -> LabelledImages:
    """Read `<root>/<class_folder>/*.png|jpg`; the class name is the folder name with `_` as spaces."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"labelled image folder {str(root)!r} does not exist or is not a directory")
    images, labels, class_names = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            continue
        images += [str(f) for f in files]
        labels += [len(class_names)] * len(files)
        class_names.append(folder_to_name(folder.name))
    if not images:
        raise ValueError(
            f"labelled image folder {str(root)!r} holds no images: expected '{root}/<class_name>/<image>.png'"
        )
    return LabelledImages(images, labels, class_names)


def labelled_dataset(
    dataset, image_column: str = "image", label_column: str = "label", class_names: Sequence[str] | None = None
) -> LabelledImages:
    """Wrap a `datasets.Dataset` with an image column and an integer (or ClassLabel) label column.

    `class_names` gives the label names in label order; it is required when the label column is not a ClassLabel.
    """
    for col in (image_column, label_column):
        if col not in dataset.column_names:
            raise ValueError(f"dataset has no column {col!r} (columns: {dataset.column_names})")
    feature = dataset.features[label_column]
    if class_names is None:
        if not hasattr(feature, "names"):
            raise ValueError(f"column {label_column!r} is not a ClassLabel: pass class_names=[...] in label order")
        class_names = feature.names
    class_names = [folder_to_name(str(c)) for c in class_names]
    labels = [int(x) for x in dataset[label_column]]
    if labels and not 0 <= min(labels) <= max(labels) < len(class_names):
        raise ValueError(f"labels must lie in [0, {len(class_names)}) to index class_names")
    return LabelledImages(_LazyColumn(dataset, image_column), labels, class_names)


class _LazyColumn(Sequence):
    """Rows of one dataset column, read on access (images are not all decoded up front)."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.dataset[index][self.column]
        return self.dataset[int(index)][self.column]


@torch.no_grad()
def zero_shot_accuracy(
    model: torch.nn.Module,
    processor: CLIPProcessor,
    data: LabelledImages,
    templates: Sequence[str] | str | os.PathLike | None = None,
    batch_size: int = 256,
    text_batch_size: int = 1024,
    accelerator: DistributedState | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Zero-shot top-1/top-5 accuracy of `model` on labelled images (plus per-class top-1).

    `data` is a labelled image set (`labelled_dataset`, or a folder through `zero_shot_folder`); `templates` is any
    spec `load_templates` takes (default: ImageNet's 80).
    """
    template_list = load_templates(templates)
    classes = class_embeddings(
        model, processor, data.class_names, template_list, text_batch_size, accelerator, progress
    )
    device = next(model.parameters()).device
    classes_on_device = classes.to(device)
    load = _image_loader(data.images)

    def logits(start: int, end: int) -> torch.Tensor:
        emb = encode_images(model, processor, load(start, end), batch_size=end - start).to(device)
        return F.normalize(emb, dim=-1) @ classes_on_device.T

    scores = map_batches(logits, len(data.images), batch_size, accelerator, desc="zero-shot images", progress=progress)
    labels = torch.tensor(data.labels)
    result: dict[str, Any] = topk_accuracy(scores, labels, (1, 5))
    hits = scores.argmax(dim=1) == labels
    result["per_class_top1"] = {
        name: hits[labels == i].float().mean().item() for i, name in enumerate(data.class_names) if (labels == i).any()
    }
    result.update(num_images=len(labels), num_classes=len(data.class_names), num_templates=len(template_list))
    return result


def zero_shot_folder(
    model: torch.nn.Module, processor, root: str | os.PathLike, templates=None, **kwargs
) -> dict[str, Any]:
    """`zero_shot_accuracy` on a labelled image folder `<root>/<class_folder>/*.png`."""
    return zero_shot_accuracy(model, processor, load_labelled_folder(root), templates, **kwargs)


def zero_shot_dataset(
    model: torch.nn.Module,
    processor: CLIPProcessor,
    dataset,
    image_column: str = "image",
    label_column: str = "label",
    class_names: Sequence[str] | None = None,
    templates=None,
    **kwargs,
) -> dict[str, Any]:
    """`zero_shot_accuracy` on a `datasets.Dataset` with image and label columns."""
    data = labelled_dataset(dataset, image_column, label_column, class_names)
    return zero_shot_accuracy(model, processor, data, templates, **kwargs)


def _image_loader(images: Sequence[PhotoRef]) -> Callable[[int, int], list[Image.Image]]:
    def load(start: int, end: int) -> list[Image.Image]:
        out = []
        for index, ref in zip(range(start, end), images[start:end]):
            image = open_image(ref)
            if image is None:
                raise ValueError(f"image {index} ({ref}) cannot be read: remove or replace it")
            out.append(image)
        return out

    return load


# ----------------------------------------------------------------------------------------------------------
# Embedding similarities


def _mean_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=-1).mean().item()


@torch.no_grad()
def text_similarities(
    original: torch.nn.Module,
    defended: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase | CLIPProcessor,
    clean_captions: Sequence[str] | None = None,
    poisoned_captions: Sequence[str] | None = None,
    target_captions: Sequence[str] | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """Text-side similarities of a defense.

    sim_clean: mean cos(original, defended) on clean captions (1 = untouched);
    sim_backdoor: mean cos(defended(caption with name), defended(same caption with target)) (1 = perfect);
    sim_target: mean cos(original, defended) on the target captions.
    `poisoned_captions[i]` and `target_captions[i]` must be the same caption with the name / the target.

    Each metric is computed only when its captions are given (`clean_captions` for sim_clean).
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    out: dict[str, float] = {}
    if clean_captions is not None:
        clean_captions = _non_empty(clean_captions, "clean_captions")
        out["sim_clean"] = _mean_cos(
            encode_texts(original, tokenizer, clean_captions, batch_size),
            encode_texts(defended, tokenizer, clean_captions, batch_size),
        )
    if (poisoned_captions is None) != (target_captions is None):
        raise ValueError("give both poisoned_captions and target_captions (aligned pairs), or neither")
    if poisoned_captions is not None:
        poisoned_captions = _non_empty(poisoned_captions, "poisoned_captions")
        target_captions = _non_empty(target_captions, "target_captions")
        if len(poisoned_captions) != len(target_captions):
            raise ValueError(
                f"poisoned_captions ({len(poisoned_captions)}) and target_captions ({len(target_captions)}) must "
                "be aligned pairs of the same length"
            )
        defended_target = encode_texts(defended, tokenizer, target_captions, batch_size)
        out["sim_backdoor"] = _mean_cos(
            encode_texts(defended, tokenizer, poisoned_captions, batch_size), defended_target
        )
        out["sim_target"] = _mean_cos(encode_texts(original, tokenizer, target_captions, batch_size), defended_target)
    if not out:
        raise ValueError("nothing to measure: give clean_captions and/or poisoned_captions + target_captions")
    return out


@torch.no_grad()
def image_similarities(
    original: torch.nn.Module | None,
    defended: torch.nn.Module,
    processor: CLIPProcessor,
    target_embedding: torch.Tensor,
    removed_images: Sequence[Image.Image] | None = None,
    clean_images: Sequence[Image.Image] | None = None,
    person_images: Sequence[Image.Image] | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Image-side similarities of a defense.

    sim_id: mean cos(defended embedding of the removed people's photos, target embedding) (1 = perfect);
    sim_clean: mean cos(original, defended) on clean images (needs `original`);
    sim_target: cos(target embedding, mean defended embedding of `person_images`), the photos the target
    was averaged from, re-embedded with the defended model.

    Each metric is computed only when its images are given (`removed_images`, `clean_images`, `person_images`).
    """
    target = torch.as_tensor(target_embedding, dtype=torch.float32).reshape(-1).cpu()
    out: dict[str, float] = {}
    if removed_images is not None:
        emb = encode_images(defended, processor, _non_empty(removed_images, "removed_images"), batch_size)
        out["sim_id"] = _mean_cos(emb, target[None, :])
    if clean_images is not None:
        if original is None:
            raise ValueError("sim_clean compares the original and the defended model: pass the original model")
        clean_images = _non_empty(clean_images, "clean_images")
        out["sim_clean"] = _mean_cos(
            encode_images(original, processor, clean_images, batch_size),
            encode_images(defended, processor, clean_images, batch_size),
        )
    if person_images is not None:
        emb = encode_images(defended, processor, _non_empty(person_images, "person_images"), batch_size)
        out["sim_target"] = F.cosine_similarity(emb.mean(dim=0), target, dim=0).item()
    if not out:
        raise ValueError("nothing to measure: give removed_images, clean_images and/or person_images")
    return out


def _non_empty(items: Sequence, what: str) -> list:
    items = list(items)
    if not items:
        raise ValueError(f"{what} is empty")
    return items
