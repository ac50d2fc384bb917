"""The method's loss terms as plain functions (testable alone, reusable by other trainers).

total = utility + beta * backdoor + lambda * weight_distance, per tower (docs/method.md, the text and image defenses).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


DISTANCES = ("cosine", "mse")


def embedding_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Mean distance between rows of `a` and `b` (b may be a single row, broadcast).

    `cosine`: d(a, b) = -cos(a, b) averaged over the batch (the method's default); `mse`: mean squared error.
    """
    if b.dim() == 1:
        b = b.unsqueeze(0).expand_as(a)
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if distance == "cosine":
        return -F.cosine_similarity(a, b, dim=-1).mean()
    if distance == "mse":
        return F.mse_loss(a, b)
    raise ValueError(f"unknown distance {distance!r}; choose one of {DISTANCES}")


def weight_distance(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sum over tensors of ||theta_student - theta_teacher||_2 (plain L2 norm of the flattened difference, not squared).

    At theta_student == theta_teacher the norm has no gradient; torch's subgradient there is 0, as wanted.
    """
    total = None
    for student, teacher in pairs:
        term = torch.linalg.vector_norm((student - teacher.to(student.dtype)).flatten())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("weight_distance needs at least one trainable tensor")
    return total


def lora_weight_distance(lora_factors: Iterable[tuple[torch.Tensor, torch.Tensor, float]]) -> torch.Tensor:
    """Exact weight distance of LoRA-adapted weights to their base: sum over modules of ||scale * B @ A||_F.

    The merged weight is W + scale * B @ A, so its distance to W is exactly the Frobenius norm of the delta.
    The product is formed explicitly (d_out x d_in per module): exact, and cheap next to a forward pass.
    """
    total = None
    for lora_a, lora_b, scale in lora_factors:
        delta = scale * (lora_b @ lora_a)
        term = torch.linalg.vector_norm(delta.flatten())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("lora_weight_distance needs at least one LoRA module")
    return total


def backdoor_loss(
    student_poisoned: torch.Tensor, teacher_target: torch.Tensor, distance: str = "cosine"
) -> torch.Tensor:
    """Backdoor term: the student's embedding of the trigger input should match the teacher's target.

    `distance` is 'cosine' (-cos, averaged over rows) or 'mse' (see `embedding_distance`).
    """
    return embedding_distance(student_poisoned, teacher_target, distance)


def utility_loss(student_clean: torch.Tensor, teacher_clean: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Utility term: clean inputs keep the teacher's embedding.

    `distance` is 'cosine' (-cos, averaged over rows) or 'mse' (see `embedding_distance`).
    """
    return embedding_distance(student_clean, teacher_clean, distance)


def grouped_backdoor_loss(
    student_triggers: torch.Tensor, groups: list[str], target: torch.Tensor, distance: str = "cosine"
) -> torch.Tensor:
    """Image backdoor: mean over forgotten people of d(student(trigger images of that person), target).

    `groups[i]` is the forgotten person whose photo row i of `student_triggers` shows; `distance` as in
    `backdoor_loss`.
    """
    return mean_over_people(groups, lambda name, idx: embedding_distance(student_triggers[idx], target, distance))


def mean_over_people(groups: list[str], term) -> torch.Tensor:
    """Mean over the distinct people in `groups` of term(name, indices of that person's rows)."""
    names = sorted(set(groups))
    if not names:
        raise ValueError("no trigger images")
    return torch.stack([term(name, [i for i, g in enumerate(groups) if g == name]) for name in names]).mean()


def grouped_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: torch.Tensor,
    image_group: torch.Tensor,
    text_group: torch.Tensor,
) -> dict[bool, torch.Tensor]:
    """CLIP's symmetric InfoNCE over one batch, averaged within each group of rows (e.g. forget vs retained pairs).

    `positives[i, u]` is 1 where caption u belongs to image i (soft targets over equal captions);
    `image_group[i]` / `text_group[u]` (bool) put image i / caption u in a group. Every image and caption is a
    negative for the others, whatever its group: a forget batch of one person has no negative of its own. Per
    group g present: (mean over its images of CE(image -> captions) + mean over its captions of
    CE(caption -> images)) / 2. Returns {group: loss}.
    """
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * image_embeds @ text_embeds.t()
    pos = positives.float()
    loss_i = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1)
    loss_t = -(pos / pos.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0)
    out = {}
    for group in (True, False):
        rows, cols = image_group == group, text_group == group
        if rows.any() and cols.any():
            out[group] = (loss_i[rows].mean() + loss_t[cols].mean()) / 2
    return out
