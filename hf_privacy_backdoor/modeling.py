"""Model setup: loading CLIP + processor, embedding helpers, freezing rules.

All embeddings are the projected, *un-normalised* features (`get_text_features(...).pooler_output` in
transformers 5), as the method specifies; callers normalise where a cosine is needed.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor


def load_clip(model_name_or_path: str, adapter: str | None = None, **kwargs) -> tuple[CLIPModel, CLIPProcessor]:
    """Load a `CLIPModel` and its processor from a local folder or a Hub id.

    With `adapter`, a peft LoRA adapter is applied on top (and merged, so the result is a plain CLIPModel).
    Raises a clear error when the checkpoint is not a CLIP model.

    `kwargs` go to `CLIPModel.from_pretrained` (e.g. `torch_dtype`, `revision`).
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_name_or_path)
    if getattr(config, "model_type", None) != "clip":
        raise ValueError(
            f"{model_name_or_path!r} is a {getattr(config, 'model_type', 'unknown')!r} model, not a CLIP model: "
            "hf_privacy_backdoor defends CLIPModel checkpoints (model_type 'clip')."
        )
    model = CLIPModel.from_pretrained(model_name_or_path, **kwargs)
    processor = CLIPProcessor.from_pretrained(model_name_or_path)
    if adapter is not None:
        from .peft_utils import load_adapter

        model = load_adapter(model, adapter, merge=True)
    model.eval()
    return model, processor


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter, where its inputs must go."""
    return next(model.parameters()).device


def tokenize(tokenizer, texts: Sequence[str], device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Tokenize with padding and truncation to the model's context length.

    CLIP's tokenizer never merges across whitespace, so its ids of a caption are the ids of its words in turn:
    for it, ids come from a per-word cache (a third of the cost on the training captions, the same ids; checked
    on tricky probes at first use). Other tokenizers, and text that is not plain ASCII, go through the tokenizer.
    """
    texts = list(texts)
    words = _word_cache(tokenizer)
    if words is None:
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    else:
        batch = _pad_right(tokenizer, _ids_by_words(tokenizer, words, texts))
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return batch


def token_ids(tokenizer, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
    """Unpadded ids of each text, with special tokens, truncated to `max_length` (default: the tokenizer's);
    from the per-word cache where the tokenizer allows it (see `tokenize`), otherwise from the tokenizer."""
    texts = list(texts)
    max_length = tokenizer.model_max_length if max_length is None else max_length
    words = _word_cache(tokenizer)
    if words is None or max_length < 2:
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return _ids_by_words(tokenizer, words, texts, max_length)


def pad_ids(tokenizer, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask of `rows` padded to the longest, exactly as `tokenizer.pad` (right padding
    assembled directly where the tokenizer pads on the right, as CLIP's does; ~20x cheaper)."""
    if _word_cache(tokenizer) is None:
        batch = tokenizer.pad({"input_ids": [list(r) for r in rows]}, return_tensors="pt")
        return {k: batch[k] for k in ("input_ids", "attention_mask")}
    return _pad_right(tokenizer, rows)


_WORD_CACHES: dict[int, tuple[weakref.ref, dict | None]] = {}  # id(tokenizer) -> (its ref, word -> ids or None)
_WORD_CACHE_LIMIT = 1 << 20  # words kept per tokenizer; the cache starts over beyond it
_NOT_BY_WORDS = re.compile(r"[\x1c-\x1f]|<\|")  # Python splits on \x1c-\x1f, the tokenizer does not; special tokens
_PROBES = (
    "a  Dog,  runs",
    "It's O'Neil's 2nd go!!  (maybe)",
    "x1y2z3 ... a-b_c d.e\tf\ng",
    "",
    "   ",
    "UPPER lower MiXeD 12345 #hash @at",
)


def _word_cache(tokenizer) -> dict | None:
    """The tokenizer's word -> ids cache, or None when ids cannot be assembled from words for it."""
    key = id(tokenizer)
    entry = _WORD_CACHES.get(key)
    if entry is not None and entry[0]() is tokenizer:
        return entry[1]
    from transformers import CLIPTokenizer

    usable = (
        isinstance(tokenizer, CLIPTokenizer)
        and tokenizer.padding_side == "right"
        and None not in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    )
    cache: dict | None = {} if usable else None
    if cache is not None:
        reference = tokenizer(list(_PROBES), padding=True, truncation=True, return_tensors="pt")
        mine = _pad_right(tokenizer, _ids_by_words(tokenizer, cache, list(_PROBES)))
        if any(not torch.equal(mine[k], reference[k]) for k in mine):
            cache = None
    _WORD_CACHES[key] = (weakref.ref(tokenizer, lambda _ref, key=key: _WORD_CACHES.pop(key, None)), cache)
    return cache


def _ids_by_words(tokenizer, cache: dict, texts: list[str], max_length: int | None = None) -> list[list[int]]:
    """Each text's ids as the tokenizer gives them (truncation=True), assembled from word ids."""
    split = [t.split() if t.isascii() and not _NOT_BY_WORDS.search(t) else None for t in texts]
    missing = list(dict.fromkeys(w for ws in split if ws is not None for w in ws if w not in cache))
    if missing:
        if len(cache) + len(missing) > _WORD_CACHE_LIMIT:
            cache.clear()
        cache.update(zip(missing, tokenizer(missing, add_special_tokens=False)["input_ids"]))
    max_length = tokenizer.model_max_length if max_length is None else max_length
    others = [t for t, ws in zip(texts, split) if ws is None]
    others = iter(tokenizer(others, truncation=True, max_length=max_length)["input_ids"] if others else [])
    bos, eos, keep = tokenizer.bos_token_id, tokenizer.eos_token_id, max_length - 1
    rows = []
    for ws in split:
        if ws is None:
            rows.append(next(others))
            continue
        ids = [bos]
        for w in ws:
            ids += cache[w]
        rows.append(ids[:keep] + [eos])
    return rows


def _pad_right(tokenizer, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    length = max(map(len, rows), default=0)
    pad = [tokenizer.pad_token_id] * length
    input_ids = torch.tensor([[*r, *pad[len(r) :]] for r in rows], dtype=torch.long).reshape(len(rows), length)
    ones, zeros = [1] * length, [0] * length
    mask = [ones[: len(r)] + zeros[len(r) :] for r in rows]
    return {"input_ids": input_ids, "attention_mask": torch.tensor(mask, dtype=torch.long).reshape(len(rows), length)}


def text_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Projected, un-normalised text embeddings; works on a CLIPModel, a peft wrapper or a DDP wrapper."""
    out = _unwrap_for_features(model).get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    return out.pooler_output if hasattr(out, "pooler_output") else out


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected, un-normalised image embeddings."""
    out = _unwrap_for_features(model).get_image_features(pixel_values=pixel_values)
    return out.pooler_output if hasattr(out, "pooler_output") else out


def _unwrap_for_features(model):
    # Used only for no-grad evaluation paths: training goes through the wrapped model's forward.
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


@torch.no_grad()
def encode_texts(
    model, tokenizer, texts: Sequence[str], batch_size: int = 512, progress: bool = False
) -> torch.Tensor:
    """Embed `texts` in batches; returns a float32 CPU tensor [N, D] (un-normalised)."""
    from tqdm.auto import tqdm

    device = model_device(model)
    chunks = []
    rng = range(0, len(texts), batch_size)
    for start in tqdm(rng, desc="text embeddings", disable=not progress, leave=False):
        batch = tokenize(tokenizer, texts[start : start + batch_size], device)
        chunks.append(text_features(model, **batch).float().cpu())
    if not chunks:
        return torch.empty(0, model.config.projection_dim)
    return torch.cat(chunks)


def pixel_values_for(processor, images: Sequence[Image.Image]) -> torch.Tensor:
    """The model's normal preprocessing for a list of PIL images.

    Images that already have the processor's output size (the synthetic world's 64-pixel pictures) take a batched
    path with the same arithmetic (the resize and the crop are then no-ops): identical values, ~5x less time.
    """
    image_processor = getattr(processor, "image_processor", processor)
    rgb = [im.convert("RGB") if im.mode != "RGB" else im for im in images]
    if rgb and _geometry_is_identity(image_processor, rgb):
        return _rescale_normalize(image_processor, rgb)
    return image_processor(images=rgb, return_tensors="pt")["pixel_values"]


def _geometry_is_identity(image_processor, images: Sequence[Image.Image]) -> bool:
    """True for transformers' plain PIL image processor when resizing and cropping leave every image unchanged."""
    try:
        from transformers.image_processing_backends import PilBackend
    except ImportError:  # another transformers layout: always the processor's own path
        return False
    kind = type(image_processor)
    plain = isinstance(image_processor, PilBackend) and all(
        getattr(kind, m) is getattr(PilBackend, m) for m in ("_preprocess", "process_image", "resize", "center_crop")
    )
    if not plain or getattr(image_processor, "do_pad", False) or len({im.size for im in images}) != 1:
        return False
    width, height = images[0].size
    size, crop = getattr(image_processor, "size", None), getattr(image_processor, "crop_size", None)
    if getattr(image_processor, "do_resize", False):
        edge = getattr(size, "shortest_edge", None)
        as_edge = edge == width == height and not getattr(size, "longest_edge", None)
        as_box = (getattr(size, "height", None), getattr(size, "width", None)) == (height, width)
        if not (as_edge or as_box) or getattr(size, "max_height", None) or getattr(size, "max_pixels", None):
            return False
    if getattr(image_processor, "do_center_crop", False):
        if (getattr(crop, "height", None), getattr(crop, "width", None)) != (height, width):
            return False
    return True


def _rescale_normalize(image_processor, images: Sequence[Image.Image]) -> torch.Tensor:
    """transformers' rescale (float64 multiply, float32 cast) and normalize (float32) of uint8 pixels, computed once
    per (value, channel) and looked up: the same floats, batched; [N, 3, H, W]."""
    import numpy as np

    table = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # value x channel
    if image_processor.do_rescale:
        table = (table.astype(np.float64) * image_processor.rescale_factor).astype(np.float32)
    else:
        table = table.astype(np.float32)
    if image_processor.do_normalize:
        mean = np.array(image_processor.image_mean, dtype=np.float32)
        std = np.array(image_processor.image_std, dtype=np.float32)
        table = (table - mean) / std
    pixels = np.stack([np.asarray(im) for im in images])  # N, H, W, 3 uint8
    out = np.empty((len(images), 3, *pixels.shape[1:3]), dtype=np.float32)
    for channel in range(3):
        np.take(table[:, channel], pixels[..., channel], out=out[:, channel])
    return torch.from_numpy(out)


@torch.no_grad()
def encode_images(
    model, processor, images: Sequence[Image.Image], batch_size: int = 256, progress: bool = False
) -> torch.Tensor:
    """Embed PIL images in batches; returns a float32 CPU tensor [N, D] (un-normalised)."""
    from tqdm.auto import tqdm

    device = model_device(model)
    dtype = next(model.parameters()).dtype
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="image embeddings", disable=not progress, leave=False):
        pixels = pixel_values_for(processor, images[start : start + batch_size]).to(device=device, dtype=dtype)
        chunks.append(image_features(model, pixels).float().cpu())
    if not chunks:
        return torch.empty(0, model.config.projection_dim)
    return torch.cat(chunks)


@torch.no_grad()
def compute_target_embedding(model, processor, faces, indices: dict[str, Sequence[int]] | None = None) -> torch.Tensor:
    """The anonymous person: mean of the original model's image embeddings over many people's face photos.

    `faces` is a `data.faces.FaceSource`; `indices` restricts people's photos (e.g. the split's trigger
    halves); default: every photo.
    """
    total, count = None, 0
    for name in faces.names():
        photos = faces.load(name, indices.get(name) if indices and name in indices else None)
        if not photos:
            continue
        emb = encode_images(model, processor, photos)
        total = emb.sum(0) if total is None else total + emb.sum(0)
        count += len(emb)
    if count == 0:
        raise ValueError("no readable face photo to compute the target embedding from")
    return total / count


def freeze_layernorms(module: torch.nn.Module) -> int:
    """Freeze every LayerNorm's weight and bias; returns how many parameters were frozen."""
    n = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.LayerNorm):
            for p in sub.parameters():
                p.requires_grad_(False)
                n += 1
    return n


def text_tower_modules(model: CLIPModel) -> list[torch.nn.Module]:
    """The modules the text defense trains: the text transformer and its projection head."""
    return [model.text_model, model.text_projection]


def vision_tower_modules(model: CLIPModel) -> list[torch.nn.Module]:
    """The modules the image defense trains: the vision transformer and its projection head."""
    return [model.vision_model, model.visual_projection]


def disable_dropout(module: torch.nn.Module) -> None:
    """Turn dropout off (the method trains without it): Dropout modules and CLIP's attention dropout."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
        elif isinstance(getattr(sub, "dropout", None), float):
            sub.dropout = 0.0
    config = getattr(module, "config", None)
    for cfg in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        if cfg is not None:
            for key in ("dropout", "attention_dropout"):
                if hasattr(cfg, key):
                    setattr(cfg, key, 0.0)


def set_trainable_towers(model: CLIPModel, text: bool, vision: bool) -> None:
    """Train only the chosen tower(s) (embeddings, attention, MLP, projection); the rest is frozen.

    The logit scale never trains. LayerNorms are frozen separately (`freeze_layernorms`).
    """
    model.requires_grad_(False)
    for flag, modules in ((text, text_tower_modules(model)), (vision, vision_tower_modules(model))):
        if flag:
            for m in modules:
                m.requires_grad_(True)
