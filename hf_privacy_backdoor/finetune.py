"""The plain CLIP contrastive fine-tune (image <-> caption InfoNCE) on retained image-caption pairs.

One home for the benign fine-tune that the relearning probe (`robustness`), the relearning guard and the
retained-data baselines run: a float copy of the model, both towers trained with AdamW (constant learning rate,
no weight decay), the logit scale frozen, batches drawn without replacement from the caller's seeded generator.
The pairs come from `data.retained` (never a forgotten person's photo or name).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel

from .modeling import image_features, text_features, tokenize


def contrastive_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, positives: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets: `positives[i, u]` is 1 where caption u is positive for image i."""
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * image_embeds @ text_embeds.t()
    pos = positives.float()
    loss_i = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(pos / pos.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (loss_i + loss_t) / 2


def caption_positives(captions: Sequence[str], device: torch.device | None = None) -> tuple[list[str], torch.Tensor]:
    """The batch's distinct captions (first-seen order) and the image x caption mask of equal text."""
    unique = list(dict.fromkeys(captions))
    return unique, torch.tensor([[c == u for u in unique] for c in captions], device=device)


def contrastive_finetune(
    model: CLIPModel,
    tokenizer,
    pixels: torch.Tensor,
    captions: Sequence[str],
    *,
    lr: float,
    steps: int | Sequence[int],
    rng: np.random.Generator,
    batch_size: int = 64,
) -> Iterator[tuple[int, CLIPModel, float]]:
    """Fine-tune a float copy of `model` on (`pixels[i]`, `captions[i]`) pairs; never touches `model` itself.

    Yields `(step, copy in eval mode, loss at that step)` at each of `steps` (an int: that step only), so one
    run serves every step count: the same copy trains on after each yield. Batches of `min(batch_size, pairs)`
    distinct pairs come from `rng` (the caller seeds it: the same generator state gives the same weights).

    `tokenizer` tokenizes the captions; `lr` is AdamW's learning rate.
    """
    checkpoints = {steps} if isinstance(steps, int) else set(steps)
    _check_finetune(pixels, captions, lr, checkpoints, batch_size)
    tuned = copy.deepcopy(model).float()
    tuned.requires_grad_(True)
    tuned.logit_scale.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    device = next(tuned.parameters()).device
    size = min(batch_size, len(captions))
    tuned.train()
    for step in range(1, max(checkpoints) + 1):
        idx = rng.choice(len(captions), size=size, replace=False)
        unique, positives = caption_positives([captions[i] for i in idx], device)
        text = text_features(tuned, **tokenize(tokenizer, unique, device))
        images = image_features(tuned, pixels[torch.from_numpy(idx)].to(device))
        loss = contrastive_loss(images, text, positives, tuned.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in checkpoints:
            tuned.eval()
            yield step, tuned, loss.item()
            tuned.train()
    optimizer.zero_grad(set_to_none=True)


def _check_finetune(pixels: torch.Tensor, captions: Sequence[str], lr: float, steps: set[int], batch_size: int):
    if len(pixels) != len(captions):
        raise ValueError(f"{len(pixels)} fine-tune images but {len(captions)} captions: give one caption per image")
    if len(captions) < 2 or batch_size < 2:
        raise ValueError("the contrastive fine-tune needs at least 2 image-caption pairs and batch_size >= 2")
    if not steps or min(steps) < 1 or lr <= 0:
        raise ValueError(f"the contrastive fine-tune needs steps >= 1 and lr > 0 (got steps {sorted(steps)}, lr {lr})")
