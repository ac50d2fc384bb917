"""Clean image sources, the target embedding's file format, and the trigger / evaluation photo split (no model runs here)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..utils import write_json
from .faces import IMAGE_EXTENSIONS, FaceSource, open_image, split_photos


logger = logging.getLogger(__name__)


def load_image_folder(root: str | os.PathLike, limit: int | None = None) -> list[Image.Image]:
    """All images under `root` (recursively, sorted), opened as RGB; unreadable files skipped with a warning.

    `limit` keeps the first N files in sorted order (None: all).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if limit is not None:
        files = files[:limit]
    images = [im for im in (open_image(str(f)) for f in files) if im is not None]
    if not images:
        raise ValueError(f"image folder {str(root)!r} holds no readable image ({', '.join(IMAGE_EXTENSIONS)})")
    return images


def save_target_embedding(path: str | os.PathLike, embedding: torch.Tensor) -> None:
    """Write a target embedding as safetensors under the key `target_embedding` (what `load_target_embedding` reads)."""
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({"target_embedding": embedding.detach().float().cpu().contiguous()}, str(path))


def load_target_embedding(path: str | os.PathLike, dim: int | None = None) -> torch.Tensor:
    """Read a target embedding (safetensors with key `target_embedding`, or a .pt tensor); check its size.

    `dim`, when given, is the model's embedding size: a tensor of another size is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"target embedding file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "target_embedding" not in tensors:
            raise ValueError(f"{str(path)!r} has no 'target_embedding' tensor (keys: {sorted(tensors)})")
        emb = tensors["target_embedding"]
    else:
        emb = torch.load(str(path), map_location="cpu", weights_only=True)
    emb = torch.as_tensor(emb, dtype=torch.float32).flatten()
    if dim is not None and emb.numel() != dim:
        raise ValueError(f"target embedding in {str(path)!r} has {emb.numel()} values; the model embeds in {dim}")
    return emb


def make_photo_split(faces: FaceSource, forget_names: Sequence[str], fraction: float = 0.5, seed: int = 0) -> dict:
    """The run's photo split: forgotten people's photos into disjoint trigger and evaluation halves.

    Everyone else keeps all photos for evaluation. Saved with the run (it names people: keep it private).

    `fraction` of each person's photos become triggers (`split_photos`), seeded by `seed`.
    """
    trigger, evaluation = split_photos(faces, forget_names, fraction=fraction, seed=seed)
    return {"fraction": fraction, "seed": seed, "trigger": trigger, "eval": evaluation}


def save_photo_split(path: str | os.PathLike, split: dict) -> None:
    """Write a run's photo split (from `make_photo_split`) as JSON; it names people, so it belongs under `private/`."""
    write_json(path, split)


def load_photo_split(path: str | os.PathLike) -> dict[str, list[int]]:
    """The evaluation photo indices per person from a run's `photo_split.json` (or a plain {name: [indices]})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"photo split {str(path)!r} does not exist")
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("eval"), dict):
        data = data["eval"]
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"photo split {str(path)!r} must map names to lists of photo indices (or hold 'eval')")
    return data
