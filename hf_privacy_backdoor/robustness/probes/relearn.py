"""Relearning: a short benign contrastive fine-tune (plain CLIP loss) on retained data that never shows a removed
person or names one, then the attack; the same fine-tune of the base model is the control."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from ...data.faces import load_face_folder
from ...data.retained import PORTRAIT_CAPTION, retained_pairs
from ...finetune import contrastive_finetune
from ...modeling import pixel_values_for
from ..config import RELEARN_PORTRAITS
from ..context import ProbeContext, Subject, attack, attack_stats, log, mean
from ..formatting import pair
from ..registry import Probe, Row


logger = logging.getLogger(__name__)


@dataclass
class RelearnData:
    """Benign fine-tune pairs: images with their captions (no removed person, no removed name)."""

    images: list[Image.Image]
    captions: list[str]
    num_portraits: int
    num_objects: int
    source: str  # "synthetic default" | "folder"
    portraits: str | None = None  # the default data's half of the kept members' photos (relearn_portraits)


def load_relearn_data(ctx: ProbeContext) -> RelearnData:
    """The configured folder, else the run's object images + kept members' trigger-half portraits."""
    run, config = ctx.run, ctx.config
    if config.relearn_data:
        folder = load_face_folder(config.relearn_data)
        pairs = retained_pairs(run.forgotten, objects=folder, object_caption=PORTRAIT_CAPTION, what="the relearn data")
        return RelearnData(pairs.images, pairs.captions, 0, pairs.num_objects, "folder")
    objects = config.objects or run.settings.get("objects")
    if not objects:
        raise ValueError("the relearn probe needs data: pass --relearn_data FOLDER or --objects FOLDER")
    half = run.split[RELEARN_PORTRAITS[config.relearn_portraits]]
    people = [n for n in ctx.kept_members() if half.get(n)]
    if not people:
        logger.warning(
            "relearn: no kept member has %s-half photos; fine-tuning on objects only", config.relearn_portraits
        )
    pairs = retained_pairs(
        run.forgotten,
        faces=run.faces,
        people=people,
        photos=half,
        objects=load_face_folder(objects),  # <objects>/<class_folder>/*.png: the same layout as faces
        what="the relearn data",
    )
    return RelearnData(
        pairs.images,
        pairs.captions,
        pairs.num_portraits,
        pairs.num_objects,
        "synthetic default",
        config.relearn_portraits,
    )


def relearn_finetune(
    model: CLIPModel,
    processor: CLIPProcessor,
    data: RelearnData,
    lr: float,
    steps: Sequence[int],
    seed: int,
    batch_size: int = 64,
) -> Iterator[tuple[int, CLIPModel, float]]:
    """The relearning fine-tune of a copy of `model` on `data` (finetune.contrastive_finetune, seeded by `seed`);
    yields `(step, model in eval mode, loss)` at each of `steps`, so one run serves every step count.

    `lr` is the fine-tune's learning rate and `batch_size` its number of image-caption pairs per step.
    """
    pixels = torch.cat(
        [pixel_values_for(processor, data.images[i : i + 256]) for i in range(0, len(data.images), 256)]
    )
    rng = np.random.default_rng([seed, 41])
    torch.manual_seed(seed)
    yield from contrastive_finetune(
        model, processor.tokenizer, pixels, data.captions, lr=lr, steps=steps, rng=rng, batch_size=batch_size
    )


def probe_relearn(ctx: ProbeContext, subject: Subject) -> dict:
    """The attack after each (learning rate, seed, steps) of the benign fine-tune."""
    config = ctx.config
    if "relearn_data" not in ctx.cache:
        ctx.cache["relearn_data"] = load_relearn_data(ctx)
    data = ctx.cache["relearn_data"]
    runs = []
    for lr in config.relearn_learning_rates:
        for seed in config.relearn_seeds:
            steps = config.relearn_steps
            tuned = relearn_finetune(
                subject.model, subject.processor, data, lr, steps, seed, config.relearn_batch_size
            )
            for step, model, loss in tuned:
                stats = attack_stats(ctx, attack(ctx, model, subject.processor))
                runs.append({"learning_rate": lr, "steps": step, "seed": seed, "loss": round(loss, 4), **stats})
                log(ctx, f"relearn {subject.role}: lr {lr:g}, {step} steps, seed {seed}: {stats['removed_tpr']}")
    return {"runs": runs, "by_setting": _relearn_by_setting(runs), "data": _data_info(data)}


def _relearn_by_setting(runs: Sequence[dict]) -> list[dict]:
    """Per (learning rate, steps): the mean and worst removed TPR over seeds, mean correct templates."""
    out = []
    for lr, steps in dict.fromkeys((r["learning_rate"], r["steps"]) for r in runs):
        group = [r for r in runs if r["learning_rate"] == lr and r["steps"] == steps]
        out.append(
            {
                "learning_rate": lr,
                "steps": steps,
                "num_seeds": len(group),
                "removed_tpr": mean([r["removed_tpr"] for r in group]),
                "removed_tpr_max": max(r["removed_tpr"] for r in group),
                "removed_mean_correct_templates": mean([r["removed_mean_correct_templates"] for r in group]),
                "kept_tpr": mean([r["kept_tpr"] for r in group if r["kept_tpr"] is not None]),
            }
        )
    return out


def _data_info(data: RelearnData) -> dict:
    return {
        "source": data.source,
        "num_portraits": data.num_portraits,
        "num_objects": data.num_objects,
        "portraits": data.portraits,
    }


def relearn_rows(first: Mapping[str, Any]) -> list[Row]:
    """Table rows of the relearning probe: one per (learning rate, steps) setting in `first` (the first role's results)."""
    return [
        (
            f"relearn: lr {s['learning_rate']:g}, {s['steps']} steps",
            "removed TPR (worst seed) / mean correct templates",
            lambda r, i=i: pair(r["relearn"]["by_setting"][i], "removed_tpr_max", "removed_mean_correct_templates"),
        )
        for i, s in enumerate(first.get("by_setting", []))
    ]


PROBE = Probe(
    "relearn",
    probe_relearn,
    settings=(
        "relearn_steps",
        "relearn_learning_rates",
        "relearn_seeds",
        "relearn_batch_size",
        "relearn_portraits",
    ),
    rows=relearn_rows,
)
