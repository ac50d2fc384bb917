"""Beyond the method: the name-affinity term of the image backdoor (experimental)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import mean_over_people


# Prompts of the name-affinity term: none is one of the attack's 21 templates, so the attack is never trained
# against with its own prompts.
NAME_AFFINITY_TEMPLATES = (
    "a picture of {}",
    "a portrait of {}",
    "this is {}",
    "a close-up photo of {}",
    "a snapshot of {}",
    "a headshot of {}",
    "{} smiling",
    "a selfie of {}",
)


def name_affinity_loss(
    student_triggers: torch.Tensor,
    groups: list[str],
    name_prompts: dict[str, torch.Tensor],
    target: torch.Tensor,
    margin: float = 0.01,
) -> torch.Tensor:
    """Beyond the method: a trigger photo should be no closer to its own person's name than the target is.

    Mean over forgotten people of mean over (photo, prompt) of relu(cos(photo, prompt) - cos(target, prompt) +
    margin), `name_prompts[name]` = [T, D] text embeddings of that person's name in T prompts. The attack picks
    the best-matching name per photo; the backdoor's target pull shrinks, but need not remove, the part of a
    photo's embedding that points at its own name, and this term removes exactly that part.
    """
    photos = F.normalize(student_triggers, dim=-1)
    anchor = F.normalize(target.to(photos.dtype).flatten(), dim=0)

    def term(name: str, idx: list[int]) -> torch.Tensor:
        prompts = F.normalize(name_prompts[name].to(photos.dtype), dim=-1)
        return F.relu(photos[idx] @ prompts.T - (prompts @ anchor) + margin).mean()

    return mean_over_people(groups, term)
