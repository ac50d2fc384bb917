"""A small CLIP pretrained on the synthetic world, in minutes on a CPU, saved with `save_pretrained`.

* The tokenizer is a byte-level BPE trained offline with `tokenizers` on the caption corpus plus the
  shipped name lists (so any candidate name the attack uses tokenizes into known pieces), wrapped as a
  `CLIPTokenizer`; the text config carries its bos/eos/pad ids (a wrong eos id silently pools every
  caption to the same vector).
* Pretraining is contrastive (image <-> caption). Duplicate captions in a batch are handled exactly: the
  batch's captions are de-duplicated, and an image counts every caption with the same key as positive
  (the same text, or any caption naming the same person), with soft targets on both sides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from ..data.names import first_names, read_resource_lines, surnames
from ..finetune import contrastive_loss
from ..utils import atomic_directory, cache_root, seed_everything
from .world import (
    GENERATOR_VERSION,
    World,
    WorldConfig,
    build_world,
    draw_face,
    draw_object,
    draw_scene,
    make_caption_corpus,
    make_world,
    name_caption,
    object_caption,
)


logger = logging.getLogger(__name__)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class PretrainConfig:
    """Architecture and schedule of the tiny CLIP; every field enters the cache key."""

    seed: int = 0
    vocab_size: int = 1200
    max_length: int = 32
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    projection_dim: int = 64
    patch_size: int = 16
    steps: int = 900
    batch_size: int = 96
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    name_fraction: float = 0.45  # member portrait + caption naming the member
    extra_fraction: float = 0.1  # background person's portrait + caption naming them
    scene_fraction: float = 0.15  # scene with a small person + generic caption ("a person next to a red star")

    def key(self) -> str:
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @classmethod
    def for_tier(cls, tier: str = "small", **overrides) -> PretrainConfig:
        """The CLIP of a world tier (`TIERS`), with `overrides` (e.g. `seed`, `steps`) on top."""
        if tier not in TIERS:
            raise ValueError(f"unknown world tier {tier!r}: choose one of {sorted(TIERS)}")
        return cls(**{**TIERS[tier], **overrides})


# World tiers: the CLIP pretrained on the synthetic world. "small" (0.5M parameters, 16 patches of 16 px) is the
# default of the demo and the tests; "base" (3 layers of width 192, 64 patches of 8 px) is big enough to see faces,
# for the benchmarks and the claims about the image defense.
TIERS: dict[str, dict] = {
    "small": {},
    "base": {"hidden_size": 192, "intermediate_size": 576, "num_layers": 3, "patch_size": 8, "steps": 1200},
}


# ----------------------------------------------------------------------------------------------------------
# Tokenizer and model


def train_tokenizer(corpus: list[str], vocab_size: int, max_length: int) -> CLIPTokenizer:
    """Train a byte-level BPE with CLIP's normaliser, pre-tokeniser and `</w>` word ends, and wrap it.

    A small BPE written out here rather than `tokenizers`' trainer: that one breaks frequency ties in a
    different order in every process (a randomly seeded hash map), so the same seed would give a different
    tokenizer, and a different model, on each build. Here ties go to the lexicographically smallest pair.
    """
    from collections import Counter

    from tokenizers import pre_tokenizers

    template = CLIPTokenizer()  # carries CLIP's normaliser and pre-tokeniser
    normalizer, pre_tokenizer = template.backend_tokenizer.normalizer, template.backend_tokenizer.pre_tokenizer
    word_counts: Counter = Counter()
    for text in corpus:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            word_counts[word] += 1
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    for symbol in alphabet + [c + "</w>" for c in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    words = {w: (*w[:-1], w[-1] + "</w>") for w in sorted(word_counts)}
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size:
        pairs: Counter = Counter()
        for word, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += word_counts[word]
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merged = best[0] + best[1]
        merges.append(best)
        vocab.setdefault(merged, len(vocab))
        for word, symbols in words.items():
            if len(symbols) < 2 or best[0] not in symbols:
                continue
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[word] = tuple(out)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def tiny_clip_config(tokenizer: CLIPTokenizer, config: PretrainConfig, image_size: int) -> CLIPConfig:
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        max_position_embeddings=config.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        image_size=image_size,
        patch_size=config.patch_size,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim)


def tiny_image_processor(image_size: int) -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


# ----------------------------------------------------------------------------------------------------------
# Pretraining data


class _Pool:
    """Pre-drawn, pre-processed training images with their caption sampler."""

    def __init__(self, world: World, processor: CLIPProcessor, wconf: WorldConfig, seed: int):
        rng = np.random.default_rng([seed, 10])
        size = wconf.image_size
        images, kind, owner, scene_class = [], [], [], []

        def add(image, k, o, c=-1):
            images.append(image)
            kind.append(k)
            owner.append(o)
            scene_class.append(c)

        for i, p in enumerate(world.members):
            for _ in range(wconf.pretrain_photos_per_member):
                add(draw_face(p.traits, rng, size), "member", i)
        for i, p in enumerate(world.extras):
            for _ in range(wconf.pretrain_photos_per_extra):
                add(draw_face(p.traits, rng, size), "extra", i)
        scene_people = world.extras or world.members
        for _ in range(wconf.pretrain_scenes):
            i, c = int(rng.integers(len(scene_people))), int(rng.integers(len(world.object_classes)))
            add(draw_scene(scene_people[i].traits, world.object_classes[c], rng, size), "scene", i, c)
        for i, cls in enumerate(world.object_classes):
            for _ in range(wconf.pretrain_images_per_object_class):
                add(draw_object(cls, rng, size), "object", i)
        self.pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        self.kind, self.owner, self.scene_class = np.array(kind), np.array(owner), np.array(scene_class)
        self.by_kind = {k: np.flatnonzero(self.kind == k) for k in ("member", "extra", "scene", "object")}
        self.scene_people = scene_people
        self.world = world

    def sample(self, rng: np.random.Generator, batch_size: int, config: PretrainConfig):
        """Indices, captions and positive keys for one batch."""
        counts = {
            "member": int(round(batch_size * config.name_fraction)),
            "extra": int(round(batch_size * config.extra_fraction)) if len(self.by_kind["extra"]) else 0,
            "scene": int(round(batch_size * config.scene_fraction)),
        }
        counts["object"] = batch_size - sum(counts.values())
        idx, captions, keys = [], [], []
        for kind, n in counts.items():
            for i in rng.choice(self.by_kind[kind], n, replace=len(self.by_kind[kind]) < n):
                if kind in ("member", "extra"):
                    person = (self.world.members if kind == "member" else self.world.extras)[self.owner[i]]
                    cap, key = name_caption(person.name, rng), f"person:{person.name}"
                elif kind == "scene":
                    cls = self.world.object_classes[self.scene_class[i]]
                    cap = self.scene_people[self.owner[i]].scene_caption(cls, rng)
                    key = f"text:{cap}"
                else:
                    cls = self.world.object_classes[self.owner[i]]
                    cap, key = object_caption(cls, rng), f"object:{cls}"
                idx.append(i)
                captions.append(cap)
                keys.append(key)
        return np.array(idx), captions, keys


def pretrain_clip(world: World, output_dir: str | Path, config: PretrainConfig | None = None, progress: bool = True):
    """Train the tokenizer and the tiny CLIP on `world`; save model + processor to `output_dir`."""
    from tqdm.auto import tqdm

    config = config or PretrainConfig()
    seed_everything(config.seed)
    wconf = world.config
    corpus = make_caption_corpus(world, wconf.num_captions, wconf.seed)
    name_lines = list(first_names("female")) + list(first_names("male")) + list(surnames())
    template_lines = [t.format("") for t in read_resource_lines("idia_templates.txt")]
    tokenizer = train_tokenizer(corpus + name_lines + template_lines, config.vocab_size, config.max_length)
    processor = CLIPProcessor(image_processor=tiny_image_processor(wconf.image_size), tokenizer=tokenizer)
    model = CLIPModel(tiny_clip_config(tokenizer, config, wconf.image_size))
    pool = _Pool(world, processor, wconf, config.seed)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress_ = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + np.cos(np.pi * progress_))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_at)
    rng = np.random.default_rng([config.seed, 11])
    model.train()
    start = time.time()
    bar = tqdm(range(config.steps), desc="pretraining tiny CLIP", disable=not progress)
    for _step in bar:
        idx, captions, keys = pool.sample(rng, config.batch_size, config)
        unique_caps = list(dict.fromkeys(captions))
        cap_key = {}
        for cap, key in zip(captions, keys):
            cap_key.setdefault(cap, key)
        positives = torch.tensor([[cap_key[u] == k for u in unique_caps] for k in keys])
        batch = tokenizer(unique_caps, padding=True, return_tensors="pt")
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=pool.pixels[torch.from_numpy(idx)],
        )
        loss = contrastive_loss(out.image_embeds, out.text_embeds, positives, model.logit_scale)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        if _step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    info = {"pretrain_config": dataclasses.asdict(config), "seconds": round(time.time() - start, 1)}
    (output_dir / "pretraining.json").write_text(json.dumps(info, indent=2) + "\n")
    return model, processor


# ----------------------------------------------------------------------------------------------------------
# Cache


@dataclass
class SyntheticArtifacts:
    """A built world and its pretrained model, as found on disk."""

    root: Path
    world_dir: Path
    model_dir: Path
    members: list[str]
    non_members: list[str]
    object_classes: list[str]
    object_templates: list[str]

    @property
    def faces_dir(self) -> Path:
        return self.world_dir / "faces"

    @property
    def objects_dir(self) -> Path:
        return self.world_dir / "objects"

    @property
    def clean_dir(self) -> Path:
        return self.world_dir / "clean"

    @property
    def captions_file(self) -> Path:
        return self.world_dir / "captions.txt"

    @property
    def membership_file(self) -> Path:
        return self.world_dir / "world.json"

    @classmethod
    def from_dir(cls, root: str | Path) -> SyntheticArtifacts:
        root = Path(root)
        meta = json.loads((root / "world" / "world.json").read_text())
        return cls(
            root,
            root / "world",
            root / "model",
            meta["members"],
            meta["non_members"],
            meta["object_classes"],
            meta["object_templates"],
        )


def build_synthetic(
    output_dir: str | Path,
    world_config: WorldConfig | None = None,
    pretrain_config: PretrainConfig | None = None,
    progress: bool = True,
) -> SyntheticArtifacts:
    """Build the world (`<output_dir>/world`) and pretrain the model (`<output_dir>/model`), atomically."""
    world_config = world_config or WorldConfig()
    pretrain_config = pretrain_config or PretrainConfig()
    start = time.time()
    with atomic_directory(output_dir) as tmp:
        build_world(tmp / "world", world_config)
        pretrain_clip(make_world(world_config), tmp / "model", pretrain_config, progress=progress)
        (tmp / "build.json").write_text(
            json.dumps(
                {
                    "generator_version": GENERATOR_VERSION,
                    "world_config": dataclasses.asdict(world_config),
                    "pretrain_config": dataclasses.asdict(pretrain_config),
                    "build_seconds": round(time.time() - start, 1),
                },
                indent=2,
            )
            + "\n"
        )
    return SyntheticArtifacts.from_dir(output_dir)


def get_or_build_synthetic(
    world_config: WorldConfig | None = None,
    pretrain_config: PretrainConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> SyntheticArtifacts:
    """The cached world + model for these parameters, building them once (outside the repo)."""
    world_config = world_config or WorldConfig()
    pretrain_config = pretrain_config or PretrainConfig()
    base = Path(cache_dir) if cache_dir is not None else cache_root() / "synthetic"
    root = base / f"v{GENERATOR_VERSION}-{world_config.key()}-{pretrain_config.key()}"
    if (root / "build.json").is_file():
        return SyntheticArtifacts.from_dir(root)
    logger.info("building the synthetic world and tiny CLIP in %s (once; cached afterwards)", root)
    return build_synthetic(root, world_config, pretrain_config, progress=progress)
