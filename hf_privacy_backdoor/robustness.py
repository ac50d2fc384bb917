"""Robustness probes: does a defended model still give the removed people away to a stronger adversary?

The paper's attack (IDIA) asks for the exact full name. `run_robustness` reads a run folder (text, image, both;
full model or LoRA adapter) and tries harder, each probe selectable:

* **variants**: the attack with every member's name replaced in the candidate list by a variant (lower case,
  first name, last name, initial + last name, one typo, a title), judged by the variant;
* **relearn**: a short benign contrastive fine-tune (plain CLIP loss) on data that never shows a removed
  person or names one (the synthetic world's object images + kept members' trigger-half portraits, or a
  folder), then the attack; the same fine-tune of the base model is the control;
* **exposure**: who moved most between the public base model and the defended one (text embeddings of every
  candidate name, photo embeddings of every person), and what the defended model alone gives away
  (similarity of "a photo of NAME" to "a photo of <target>", of a person's photos to the face centroid);
  the removed people's ranks (private) and the AUCs (public);
* **collateral**: kept members wrongfully unlearned under other seeded candidate lists;
* **precision**: the attack on fp16 / bf16 casts and on int8 dynamic quantisation of the linear layers.

Every probe also runs on the base model (the other end of the scale: it must still find the people, or the
probe proves nothing) and, with `retrained_reference`, on a tiny CLIP pretrained again on the synthetic
world without the removed people ("never saw them", the gold standard). Per-person results go to
`<run>/private/report/robustness.{json,md}`; name-free aggregates to the `robustness` section of
`<run>/unlearning_summary.json`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from .data.faces import FaceSource, load_face_folder, load_membership
from .data.images import make_photo_split
from .data.names import VARIANTS, generate_candidate_names, name_variant, normalize_name
from .data.retained import PORTRAIT_CAPTION, retained_pairs
from .evaluation import AttackResult, TextEmbeddings, compare_results, compute_text_embeddings, run_idia
from .evaluation.report import assert_no_names
from .finetune import contrastive_finetune
from .modeling import encode_images, load_clip, pixel_values_for
from .run_folder import ROBUSTNESS_JSON, ROBUSTNESS_MD, RunFiles
from .utils import write_json


logger = logging.getLogger(__name__)

PROBES = ("variants", "relearn", "exposure", "collateral", "precision")
PRECISIONS = ("fp16", "bf16", "int8")
RELEARN_PORTRAITS = {"trigger": "trigger", "evaluation": "eval"}  # option -> the photo split's half
PRECISION_MODES = ("auto", "weights", "native")
ROLES = ("defended", "base", "retrained")
FORMAT_VERSION = 1
MEMBER = "member"
PRIVATE_KEYS = ("people", "ranks")  # per-person entries: private report only
_FULL = dict(
    variants=list(VARIANTS),
    relearn_steps=[50, 200],
    relearn_learning_rates=[1e-5, 1e-4],
    relearn_seeds=[0],
    collateral_seeds=[1, 2, 3],
    precisions=list(PRECISIONS),
)
_QUICK = dict(
    variants=["first", "typo"],
    relearn_steps=[25],
    relearn_learning_rates=[1e-4],
    relearn_seeds=[0],
    collateral_seeds=[1],
    precisions=["bf16", "int8"],
    num_candidates=200,
)


# ----------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class RobustnessConfig:
    """What to probe and how; list fields left at None take the full (or, with `quick`, the quick) preset."""

    probes: str = field(default=",".join(PROBES), metadata={"help": f"Comma-separated probes, of {PROBES}."})
    quick: bool = field(
        default=False,
        metadata={"help": f"Small preset for tests and demos (explicit flags win): {_QUICK}. Full: {_FULL}."},
    )
    variants: list[str] | None = field(default=None, metadata={"help": f"Name variants, of {VARIANTS}."})
    relearn_steps: list[int] | None = field(default=None, metadata={"help": "Fine-tune steps to attack after."})
    relearn_learning_rates: list[float] | None = field(default=None, metadata={"help": "Fine-tune learning rates."})
    relearn_seeds: list[int] | None = field(default=None, metadata={"help": "Fine-tune seeds (data order)."})
    relearn_batch_size: int = field(default=64, metadata={"help": "Fine-tune batch size (image-caption pairs)."})
    relearn_data: str | None = field(
        default=None,
        metadata={
            "help": "Folder <root>/<subject>/*.png for the fine-tune, captioned 'a photo of <subject>'; must not "
            "name a removed person. Default: the run's object folder + kept members' trigger-half portraits."
        },
    )
    relearn_portraits: str = field(
        default="trigger",
        metadata={
            "help": "Default data only: whose halves of the kept members' photos join the objects. 'trigger': "
            "the split's trigger halves (what an image run's clean images and relearning guard train on too); "
            "'evaluation': the evaluation halves, which no defense ever trains on (a held-out fine-tune; the kept "
            "members' TPR after it is then measured on photos it trained on: read the removed TPR)."
        },
    )
    objects: str | None = field(default=None, metadata={"help": "Object folder (default: the run's)."})
    collateral_seeds: list[int] | None = field(default=None, metadata={"help": "Seeds of other candidate lists."})
    precisions: list[str] | None = field(default=None, metadata={"help": f"Casts to attack, of {PRECISIONS}."})
    precision_mode: str = field(
        default="auto",
        metadata={
            "help": "fp16/bf16: 'native' computes in that dtype (slow on CPU), 'weights' rounds the weights to it "
            "and computes in float32; 'auto': native on a GPU, weights on a CPU."
        },
    )
    target_phrase: str | None = field(default=None, metadata={"help": "Single-model exposure target (run's)."})
    retrained_reference: bool = field(
        default=False,
        metadata={"help": "Synthetic world only: pretrain the tiny CLIP again without the removed people (cached)."},
    )
    probe_base: bool = field(
        default=True,
        metadata={
            "help": "Run the probes on the base model too (the control). Its exact-name attack always runs; turn "
            "this off only when the control was measured already for the same base, people and settings."
        },
    )
    base_model: str | None = field(default=None, metadata={"help": "Base model (default: the run's)."})
    faces: str | None = field(default=None, metadata={"help": "Face folder (default: the run's)."})
    membership: str | None = field(default=None, metadata={"help": "Membership JSON (default: the run's)."})
    num_candidates: int | None = field(default=None, metadata={"help": "Attack candidates (default: the run's)."})
    num_photos: int | None = field(default=None, metadata={"help": "Attack photos per person (default: run's)."})
    tau: int | None = field(default=None, metadata={"help": "Attack threshold (default: the run's)."})
    seed: int | None = field(default=None, metadata={"help": "Attack seed (default: the run's)."})
    progress: bool = field(default=True, metadata={"help": "Log each probe's progress."})

    def __post_init__(self):
        self.probe_list = [p.strip() for p in str(self.probes).split(",") if p.strip()]
        _check_choices("probe", self.probe_list, PROBES)
        for key, value in (_QUICK if self.quick else _FULL).items():
            if getattr(self, key) is None:
                setattr(self, key, copy.copy(value))
        _check_choices("variant", self.variants, VARIANTS)
        _check_choices("precision", self.precisions, PRECISIONS)
        _check_choices("precision_mode", [self.precision_mode], PRECISION_MODES)
        if any(s < 1 for s in self.relearn_steps) or any(lr <= 0 for lr in self.relearn_learning_rates):
            raise ValueError("relearn_steps must be >= 1 and relearn_learning_rates > 0")
        if self.relearn_batch_size < 2:
            raise ValueError(
                f"relearn_batch_size must be at least 2 (contrastive loss), got {self.relearn_batch_size}"
            )
        self.relearn_steps = sorted(set(self.relearn_steps))
        _check_choices("relearn_portraits", [self.relearn_portraits], RELEARN_PORTRAITS)
        if self.relearn_data and self.relearn_portraits != "trigger":
            raise ValueError("relearn_portraits chooses photos of the default relearn data: not with relearn_data")


def _check_choices(what: str, values: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [v for v in values if v not in valid]
    if unknown or not values:
        raise ValueError(f"unknown {what}(s) {unknown or values!r}: choose from {', '.join(valid)}")


# ----------------------------------------------------------------------------------------------------------
# The run folder


@dataclass
class RunFolder:
    """A run folder's inputs to the probes (names stay in memory and in private/ files only)."""

    path: Path
    removed: list[str]  # stored spellings in the face folder, in forget-list order
    settings: dict[str, Any]
    base_model: str
    faces: FaceSource
    membership: dict[str, list[str]] | None
    split: dict[str, Any]  # {"trigger": {name: [idx]}, "eval": {name: [idx]}}
    split_source: str  # "run" | "made here"
    adapter: bool
    num_photos: int
    tau: int
    num_candidates: int
    seed: int
    cover: list[str] = field(default_factory=list)  # cover people: forgotten too, not the ones who asked

    @property
    def private(self) -> Path:
        return RunFiles(self.path).private

    @property
    def forgotten(self) -> list[str]:
        """Everyone the run removed: the requested people and the cover people."""
        return [*self.removed, *self.cover]


def load_run_folder(run_dir: str | Path, config: RobustnessConfig) -> RunFolder:
    """Read and check a run folder: its model, private/ (forget list, photo split, report settings)."""
    files = RunFiles(run_dir)
    files.check()
    names = files.forget_names()
    cover = files.cover_names()
    if not {normalize_name(c) for c in cover} <= {normalize_name(n) for n in names}:
        raise ValueError(f"{str(files.cover_file)!r} lists people who are not on the run's forget list")
    names = [n for n in names if normalize_name(n) not in {normalize_name(c) for c in cover}]
    settings = files.report_settings()

    def setting(flag: str, key: str, required: bool = True):
        value = getattr(config, flag) if getattr(config, flag) is not None else settings.get(key)
        if value is None and required:
            raise ValueError(f"the run's private/report/report.json gives no {key}: pass --{flag}")
        return value

    faces = load_face_folder(setting("faces", "faces"))
    membership_file = setting("membership", "membership", required=False)
    seed = int(setting("seed", "seed", required=False) or 0)
    split, source = _photo_split(files, faces, seed)
    return RunFolder(
        path=files.root,
        removed=_resolve_removed(faces, names),
        cover=_resolve_removed(faces, cover) if cover else [],
        settings=settings,
        base_model=str(setting("base_model", "model_name_or_path")),
        faces=faces,
        membership=load_membership(membership_file) if membership_file else None,
        split=split,
        split_source=source,
        adapter=files.is_adapter,
        num_photos=int(setting("num_photos", "num_photos", required=False) or 20),
        tau=int(setting("tau", "tau", required=False) or 1),
        num_candidates=int(setting("num_candidates", "num_candidates", required=False) or 1000),
        seed=seed,
    )


def _resolve_removed(faces: FaceSource, names: Sequence[str]) -> list[str]:
    resolved = []
    for i, name in enumerate(names, start=1):
        try:
            resolved.append(faces.resolve(name))
        except KeyError:
            raise ValueError(f"removed person #{i} of the forget list has no photos in the face folder") from None
    return resolved


def _photo_split(files: RunFiles, faces: FaceSource, seed: int) -> tuple[dict[str, Any], str]:
    """The run's trigger/evaluation split; a text run with an explicit forget list has none: make one."""
    split = files.photo_split()
    if split is not None:
        return split, "run"
    split = make_photo_split(faces, faces.names(), 0.5, seed)
    return {"trigger": split["trigger"], "eval": split["eval"]}, "made here"


def load_defended(run: RunFolder) -> tuple[CLIPModel, CLIPProcessor]:
    """The defended model: the run folder's weights, or its LoRA adapter merged into the base."""
    if run.adapter:
        return load_clip(run.base_model, adapter=str(run.path))
    return load_clip(str(run.path))


# ----------------------------------------------------------------------------------------------------------
# Models under test


@dataclass
class Subject:
    """One model under test with its exact-name attack (the probes' shared starting point)."""

    role: str
    model: CLIPModel
    processor: CLIPProcessor
    text: TextEmbeddings  # over the context's candidates and the attack's templates
    attack: AttackResult
    photos: dict[str, torch.Tensor] | None = None  # unit-norm embeddings of each person's attacked photos


@dataclass
class ProbeContext:
    """The run, the settings, the attack's candidate list and the base model's results (shared by all roles)."""

    run: RunFolder
    config: RobustnessConfig
    candidates: list[str]
    num_photos: int
    tau: int
    seed: int
    base: Subject | None = None
    base_lists: dict[int, AttackResult] = field(default_factory=dict)
    relearn_data: RelearnData | None = None

    def kept_members(self) -> list[str]:
        removed = set(self.run.forgotten)
        return [p.name for p in self.base.attack.people if p.membership == MEMBER and p.name not in removed]

    def sharing_members(self) -> list[str]:
        """Kept members who share a first name or a surname with a removed person (the ones most at risk)."""
        parts = {w.casefold() for n in self.run.removed for w in (n.split()[0], n.split()[-1])}
        return [n for n in self.kept_members() if {n.split()[0].casefold(), n.split()[-1].casefold()} & parts]

    def known_members(self) -> list[str]:
        """Kept members the base model's attack flags: the people an adversary could tell apart from the removed."""
        kept = set(self.kept_members())
        return [p.name for p in self.base.attack.people if p.flagged and p.name in kept]

    def observer_pool(self) -> list[str]:
        """Whom an observer suspects besides the removed: the people the base model knows, cover people included
        (a name the base model never knew gives no cover: it is checked away)."""
        cover = set(self.run.cover)
        return self.known_members() + [p.name for p in self.base.attack.people if p.flagged and p.name in cover]


def make_context(run: RunFolder, config: RobustnessConfig) -> ProbeContext:
    """The attack settings (run's unless overridden) and the candidate list every probe shares."""
    num_photos = config.num_photos or run.num_photos
    num_candidates = config.num_candidates or run.num_candidates
    seed = run.seed if config.seed is None else config.seed
    evaluated = [n for n in run.faces.names() if len(run.split["eval"].get(n, run.faces.photos[n])) >= num_photos]
    missing = [i for i, n in enumerate(run.removed, start=1) if n not in evaluated]
    if missing:
        raise ValueError(f"removed person(s) #{missing} have fewer than {num_photos} evaluation photos")
    candidates = generate_candidate_names(evaluated, num_candidates=num_candidates, seed=seed)
    return ProbeContext(run, config, candidates, num_photos, config.tau or run.tau, seed)


def attack(ctx: ProbeContext, model, processor, **kwargs) -> AttackResult:
    """The IDIA with the run's settings on evaluation photos only (kwargs override, e.g. candidates)."""
    kwargs.setdefault("candidates", None if "text_embeddings" in kwargs else ctx.candidates)
    return run_idia(
        model,
        processor,
        kwargs.pop("faces", ctx.run.faces),
        membership=kwargs.pop("membership", ctx.run.membership),
        photo_indices=kwargs.pop("photo_indices", ctx.run.split["eval"]),
        num_photos=ctx.num_photos,
        tau=ctx.tau,
        seed=ctx.seed,
        progress=False,
        **kwargs,
    )


def make_subject(ctx: ProbeContext, role: str, model: CLIPModel, processor: CLIPProcessor) -> Subject:
    model.eval()
    text = compute_text_embeddings(model, processor, ctx.candidates, progress=False)
    return Subject(role, model, processor, text, attack(ctx, model, processor, text_embeddings=text))


def attack_stats(ctx: ProbeContext, result: AttackResult, rename: Mapping[str, str] | None = None) -> dict:
    """Removed TPR, kept-member TPR, FPR and mean correct templates; per removed person under 'people'."""
    rename = rename or {}
    by_name = {p.name: p for p in result.people}
    removed = [by_name[rename.get(n, n)] for n in ctx.run.removed if rename.get(n, n) in by_name]
    kept = [by_name[rename.get(n, n)] for n in ctx.kept_members() if rename.get(n, n) in by_name]
    sharing = [by_name[rename.get(n, n)] for n in ctx.sharing_members() if rename.get(n, n) in by_name]
    cover = [by_name[rename.get(n, n)] for n in ctx.run.cover if rename.get(n, n) in by_name]
    non_members = [p for p in result.people if p.membership == "non_member"]
    return {
        "removed_tpr": _rate([p.flagged for p in removed]),
        "removed_mean_correct_templates": _mean([p.correct_templates for p in removed]),
        "kept_tpr": _rate([p.flagged for p in kept]),
        "kept_mean_correct_templates": _mean([p.correct_templates for p in kept]),
        "fpr": _rate([p.flagged for p in non_members]),
        "num_removed": len(removed),
        "num_kept": len(kept),
        # kept members sharing a first name or surname with a removed person, measured apart (None: nobody)
        "sharing_kept_tpr": _rate([p.flagged for p in sharing]),
        "sharing_kept_mean_correct_templates": _mean([p.correct_templates for p in sharing]),
        "num_sharing": len(sharing),
        "cover_tpr": _rate([p.flagged for p in cover]),
        "num_cover": len(cover),
        "people": {
            n: by_name[rename.get(n, n)].correct_templates for n in ctx.run.removed if rename.get(n, n) in by_name
        },
    }


def _rate(flags: Sequence[bool]) -> float | None:
    return float(np.mean(flags)) if len(flags) else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


# ----------------------------------------------------------------------------------------------------------
# Probe 1: name variants


def probe_variants(ctx: ProbeContext, subject: Subject) -> dict:
    """The attack on members with every member's name replaced by each variant (in the candidates too)."""
    out = {}
    for variant in ctx.config.variants:
        out[variant] = variant_attack(ctx, subject, variant)
    worst = max(out, key=lambda v: (out[v]["removed_tpr"] or 0, out[v]["removed_mean_correct_templates"] or 0))
    out["worst"] = {"variant": worst, "removed_tpr": out[worst]["removed_tpr"]}
    return out


def variant_attack(ctx: ProbeContext, subject: Subject, variant: str) -> dict:
    members = [p for p in subject.attack.people if p.membership == MEMBER]
    rename: dict[str, str] = {}
    for person in members:  # a variant shared by two people (e.g. a common first name) is evaluated once
        written = name_variant(person.name, variant)
        if normalize_name(written) not in {normalize_name(v) for v in rename.values()}:
            rename[person.name] = written
    keys = {normalize_name(v) for v in rename.values()}
    kept = [i for i, c in enumerate(ctx.candidates) if c in rename or normalize_name(c) not in keys]
    candidates = [rename.get(ctx.candidates[i], ctx.candidates[i]) for i in kept]
    changed = [j for j, i in enumerate(kept) if ctx.candidates[i] in rename]
    embeddings = subject.text.embeddings[:, kept].clone()
    fresh = compute_text_embeddings(
        subject.model, subject.processor, [candidates[j] for j in changed], subject.text.templates, progress=False
    )
    embeddings[:, changed] = fresh.embeddings
    text = TextEmbeddings(embeddings, subject.text.templates, candidates, subject.text.fingerprint)
    photos = {rename[p.name]: [ctx.run.faces.photos[p.name][i] for i in p.photos] for p in members if p.name in rename}
    membership = {"members": list(photos), "non_members": []}
    faces = FaceSource(photos)  # each person's attacked photos, under the variant
    result = attack(
        ctx,
        subject.model,
        subject.processor,
        faces=faces,
        photo_indices=None,
        membership=membership,
        text_embeddings=text,
    )
    stats = attack_stats(ctx, result, rename)
    stats.pop("fpr")
    stats["num_dropped_candidates"] = len(ctx.candidates) - len(candidates)
    return stats


# ----------------------------------------------------------------------------------------------------------
# Probe 2: relearning


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


def finetune(
    model: CLIPModel,
    processor: CLIPProcessor,
    data: RelearnData,
    lr: float,
    steps: Sequence[int],
    seed: int,
    batch_size: int = 64,
) -> Iterator[tuple[int, CLIPModel, float]]:
    """The relearning fine-tune of a copy of `model` on `data` (finetune.contrastive_finetune, seeded by `seed`);
    yields `(step, model in eval mode, loss)` at each of `steps`, so one run serves every step count."""
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
    if ctx.relearn_data is None:
        ctx.relearn_data = load_relearn_data(ctx)
    runs = []
    for lr in config.relearn_learning_rates:
        for seed in config.relearn_seeds:
            steps = config.relearn_steps
            tuned = finetune(
                subject.model, subject.processor, ctx.relearn_data, lr, steps, seed, config.relearn_batch_size
            )
            for step, model, loss in tuned:
                stats = attack_stats(ctx, attack(ctx, model, subject.processor))
                runs.append({"learning_rate": lr, "steps": step, "seed": seed, "loss": round(loss, 4), **stats})
                _log(ctx, f"relearn {subject.role}: lr {lr:g}, {step} steps, seed {seed}: {stats['removed_tpr']}")
    return {"runs": runs, "by_setting": _relearn_by_setting(runs), "data": _data_info(ctx.relearn_data)}


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
                "removed_tpr": _mean([r["removed_tpr"] for r in group]),
                "removed_tpr_max": max(r["removed_tpr"] for r in group),
                "removed_mean_correct_templates": _mean([r["removed_mean_correct_templates"] for r in group]),
                "kept_tpr": _mean([r["kept_tpr"] for r in group if r["kept_tpr"] is not None]),
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


# ----------------------------------------------------------------------------------------------------------
# Probe 3: exposure


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting one half (0.5 = chance, 1.0 = all ranked first)."""
    pos, neg = np.asarray(positives, dtype=float), np.asarray(negatives, dtype=float)
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def ranking(ctx: ProbeContext, scores: Mapping[str, float], known: Sequence[str]) -> dict:
    """The removed people's ranks (1 = most suspicious; ties share the mean rank) and the AUCs among all scored
    people and among the kept members the base model knows."""
    values = np.array(list(scores.values()), dtype=float)
    removed = [n for n in ctx.run.removed if n in scores]
    others = [n for n in scores if n not in set(removed)]
    ranks = {}
    for name in removed:
        s = scores[name]
        ranks[name] = float(1 + (values > s).sum() + ((values == s).sum() - 1) / 2)
    known = [n for n in known if n in scores]
    pool = np.array([scores[n] for n in known], dtype=float)
    # rank among the suspects (the people the base model knows + the removed): 1 = the observer's first guess
    known_ranks = [float(1 + (pool > scores[n]).sum() + (pool == scores[n]).sum() / 2) for n in removed]
    return {
        "auc_all": auc([scores[n] for n in removed], [scores[n] for n in others]),
        "auc_known": auc([scores[n] for n in removed], [scores[n] for n in known]),
        "mean_rank_known": _mean(known_ranks),
        "num_scored": len(scores),
        "num_known": len(known),
        "ranks": ranks,
    }


def probe_exposure(ctx: ProbeContext, subject: Subject) -> dict:
    """(a) base-vs-this-model shift of every candidate name and every person's photos; (b) this model alone."""
    base = ctx.base
    text_shift = dict(
        zip(ctx.candidates, cosine_distance(base.text.embeddings, subject.text.embeddings).mean(0).tolist())
    )
    subject_photos, base_photos = photo_embeddings(ctx, subject), photo_embeddings(ctx, base)
    image_shift = {n: float(cosine_distance(base_photos[n], subject_photos[n]).mean()) for n in subject_photos}
    known = ctx.observer_pool()
    return {
        "text_diff": ranking(ctx, text_shift, known),
        "image_diff": ranking(ctx, image_shift, known),
        "text_single": ranking(ctx, single_model_name_scores(ctx, subject), known),
        "image_single": ranking(ctx, centroid_scores(subject_photos), known),
        "text_tower_changed": subject.text.fingerprint != base.text.fingerprint,
        "image_tower_changed": any(not torch.equal(subject_photos[n], base_photos[n]) for n in subject_photos),
    }


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos of unit vectors along the last axis, as |a - b|^2 / 2: exactly 0 for identical embeddings (the
    dot product's rounding would rank an unchanged model's names at random instead of all tied)."""
    return (a - b).pow(2).sum(-1) / 2


def photo_embeddings(ctx: ProbeContext, subject: Subject) -> dict[str, torch.Tensor]:
    """Unit-norm embeddings of the photos each person was attacked with (computed once per model)."""
    if subject.photos is None:
        people = subject.attack.people
        images = [im for p in people for im in ctx.run.faces.load(p.name, p.photos)]
        emb = torch.nn.functional.normalize(encode_images(subject.model, subject.processor, images), dim=-1)
        sizes = [len(p.photos) for p in people]
        subject.photos = dict(zip([p.name for p in people], emb.split(sizes)))
    return subject.photos


def single_model_name_scores(ctx: ProbeContext, subject: Subject) -> dict[str, float]:
    """cos("a photo of NAME", "a photo of <target phrase>") in this model alone, for every candidate."""
    phrase = ctx.config.target_phrase or ctx.run.settings.get("target_phrase") or "a person"
    names = [c for c in ctx.candidates if normalize_name(c) != normalize_name(phrase)]
    emb = compute_text_embeddings(
        subject.model, subject.processor, names + [phrase], ["a photo of {}"], progress=False
    )
    flat = emb.embeddings[0]
    return dict(zip(names, (flat[:-1] @ flat[-1]).tolist()))


def centroid_scores(photos: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean cos of a person's photos to the centroid of everyone's photos (an image defense maps removed faces
    to the mean face): computable from the defended model alone."""
    centroid = torch.nn.functional.normalize(torch.cat(list(photos.values())).mean(0), dim=-1)
    return {n: float((e @ centroid).mean()) for n, e in photos.items()}


# ----------------------------------------------------------------------------------------------------------
# Probes 4 and 5: collateral, precision


def probe_collateral(ctx: ProbeContext, subject: Subject) -> dict:
    """Kept members wrongfully unlearned (flagged by the base, not by this model) under other candidate lists."""
    out = {}
    for seed in ctx.config.collateral_seeds:
        before = base_list_attack(ctx, seed)
        if subject is ctx.base:
            after = before
        else:
            after = attack(ctx, subject.model, subject.processor, candidates=before.candidates)
        out[f"seed_{seed}"] = _collateral_stats(ctx, before, after)
    return out


def base_list_attack(ctx: ProbeContext, seed: int) -> AttackResult:
    if seed not in ctx.base_lists:
        evaluated = [p.name for p in ctx.base.attack.people]
        candidates = generate_candidate_names(evaluated, num_candidates=len(ctx.candidates), seed=seed)
        ctx.base_lists[seed] = attack(ctx, ctx.base.model, ctx.base.processor, candidates=candidates)
    return ctx.base_lists[seed]


def _collateral_stats(ctx: ProbeContext, before: AttackResult, after: AttackResult) -> dict:
    counts = compare_results(before, after, ctx.run.forgotten).counts()
    flagged_before = sum(p.flagged for p in before.people if p.name in set(ctx.kept_members()))
    stats = attack_stats(ctx, after)
    return {
        "wrongfully_unlearned": counts["wrongfully_unlearned"],
        "kept_flagged_before": flagged_before,
        "wrongfully_unlearned_share": counts["wrongfully_unlearned"] / flagged_before if flagged_before else None,
        "newly_recalled": counts["newly_recalled"],
        "removed_tpr": stats["removed_tpr"],
        "kept_tpr": stats["kept_tpr"],
        "people": stats["people"],
    }


def cast_model(model: CLIPModel, precision: str, mode: str = "auto") -> tuple[torch.nn.Module, str]:
    """A copy of `model` as a user would run it in `precision`; returns it with the mode used."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    model = copy.deepcopy(model).eval()
    if precision == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (moving to torchao)
            return torch.ao.quantization.quantize_dynamic(model.cpu(), {torch.nn.Linear}, dtype=torch.qint8), "int8"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    mode = ("native" if on_gpu else "weights") if mode == "auto" else mode
    if mode == "native":
        return model.to(dtype), mode
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype).to(tensor.dtype))
    return model, mode


def probe_precision(ctx: ProbeContext, subject: Subject) -> dict:
    """The attack on fp16 / bf16 / int8 versions of the model: removed and kept TPR each."""
    out = {}
    for precision in ctx.config.precisions:
        start = time.time()
        try:
            model, mode = cast_model(subject.model, precision, ctx.config.precision_mode)
            stats = attack_stats(ctx, attack(ctx, model, subject.processor))
        except (RuntimeError, NotImplementedError) as err:  # a cast this torch build cannot run
            out[precision] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            continue
        out[precision] = {"mode": mode, "seconds": round(time.time() - start, 1), **stats}
    return out


PROBE_FUNCTIONS: dict[str, Callable[[ProbeContext, Subject], dict]] = {
    "variants": probe_variants,
    "relearn": probe_relearn,
    "exposure": probe_exposure,
    "collateral": probe_collateral,
    "precision": probe_precision,
}


# ----------------------------------------------------------------------------------------------------------
# Probe 6: the retrained reference (synthetic world only)


def retrained_reference_dir(run: RunFolder) -> tuple[Path, Any, Any]:
    """Where the reference for this run's world and removed people is cached (the folder name holds a hash,
    never a name), with the world and pretraining configs read from the world's build.json."""
    from .synthetic import PretrainConfig, WorldConfig
    from .synthetic.world import GENERATOR_VERSION

    root = Path(run.faces.root).parent.parent
    build = root / "build.json"
    if not build.is_file():
        raise ValueError(
            "retrained_reference needs the synthetic world (its build.json next to the world folder): the face "
            "folder is not one, and a real model cannot be pretrained again here"
        )
    info = json.loads(build.read_text())
    if str(info.get("generator_version")) != GENERATOR_VERSION:
        raise ValueError("the synthetic world was built by another generator version: rebuild it first")
    world_config, pretrain_config = WorldConfig(**info["world_config"]), PretrainConfig(**info["pretrain_config"])
    keys = sorted(normalize_name(n) for n in run.forgotten)
    digest = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:12]
    return root.parent / f"{root.name}-without-{digest}", world_config, pretrain_config


def world_without(world_config, names: Sequence[str]):
    """The synthetic world of `world_config` with the named members dropped: their names leave the caption
    corpus and their photos the pretraining pool (everyone else's traits and names are unchanged)."""
    from .synthetic import make_world

    world = make_world(world_config)
    keys = {normalize_name(n) for n in names}
    members = [p for p in world.members if normalize_name(p.name) not in keys]
    if len(world.members) - len(members) != len(keys):
        raise ValueError("retrained_reference: some removed people are not members of the synthetic world")
    return dataclasses.replace(world, members=members)


def build_retrained_reference(run: RunFolder, progress: bool = False) -> Path:
    """Pretrain the tiny CLIP on the run's world without the removed people (~2-3 min on one core, cached);
    the default world and its cached model are untouched (same configs, a separate folder)."""
    from .synthetic import pretrain_clip
    from .utils import atomic_directory

    folder, world_config, pretrain_config = retrained_reference_dir(run)
    if (folder / "model" / "config.json").is_file():
        return folder / "model"
    world = world_without(world_config, run.forgotten)
    logger.info("building the retrained reference (once; cached in %s)", folder)
    with atomic_directory(folder) as tmp:
        pretrain_clip(world, tmp / "model", pretrain_config, progress=progress)
        write_json(tmp / "reference.json", {"num_excluded": len(run.forgotten), "excluded_key": folder.name[-12:]})
    return folder / "model"


# ----------------------------------------------------------------------------------------------------------
# Orchestration


@dataclass
class RobustnessReport:
    """Every probe's results per role ('defended', 'base', 'retrained'); `public()` keeps the aggregates."""

    run_dir: Path
    removed: list[str]
    settings: dict[str, Any]
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # every evaluated name (for the no-name check)

    def public(self) -> dict[str, Any]:
        public = {"format_version": FORMAT_VERSION, "settings": self.settings, **_strip_private(self.roles)}
        assert_no_names(public, self.removed + self.names)
        return public

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "removed": self.removed, "settings": self.settings, **self.roles}


def _strip_private(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _strip_private(v) for k, v in obj.items() if k not in PRIVATE_KEYS}
    if isinstance(obj, list):
        return [_strip_private(v) for v in obj]
    return obj


def run_robustness(
    run_dir: str | Path, config: RobustnessConfig | None = None, write: bool = True
) -> RobustnessReport:
    """Run the configured probes on the run's defended model, the base model (control) and, if asked, the
    retrained reference; write the private report and the public summary section unless `write` is False."""
    config = config or RobustnessConfig()
    run = load_run_folder(run_dir, config)
    ctx = make_context(run, config)
    start = time.time()
    ctx.base = make_subject(ctx, "base", *load_clip(run.base_model))
    subjects = [make_subject(ctx, "defended", *load_defended(run))] + ([ctx.base] if config.probe_base else [])
    if config.retrained_reference:
        subjects.append(make_subject(ctx, "retrained", *load_clip(str(build_retrained_reference(run)))))
    report = RobustnessReport(Path(run_dir), list(run.removed), public_settings(ctx))
    report.names = [p.name for p in ctx.base.attack.people]
    for subject in subjects:
        report.roles[subject.role] = probe_subject(ctx, subject)
    report.roles.setdefault("base", {"exact": attack_stats(ctx, ctx.base.attack)})
    report.roles = {role: report.roles[role] for role in ROLES if role in report.roles}
    report.settings["seconds"] = round(time.time() - start, 1)
    if write:
        write_robustness(run, report)
    return report


def probe_subject(ctx: ProbeContext, subject: Subject) -> dict[str, Any]:
    results: dict[str, Any] = {"exact": attack_stats(ctx, subject.attack)}
    for probe in ctx.config.probe_list:
        start = time.time()
        results[probe] = PROBE_FUNCTIONS[probe](ctx, subject)
        _log(ctx, f"{probe} on the {subject.role} model: {time.time() - start:.1f} s")
    return results


def public_settings(ctx: ProbeContext) -> dict[str, Any]:
    config, run = ctx.config, ctx.run
    settings = {
        "probes": config.probe_list,
        "quick": config.quick,
        "num_removed": len(run.removed),
        "num_cover": len(run.cover),
        "defense": run.settings.get("defense"),
        "use_lora": run.adapter,
        "num_candidates": len(ctx.candidates),
        "num_photos": ctx.num_photos,
        "tau": ctx.tau,
        "seed": ctx.seed,
        "photo_split": run.split_source,
        "retrained_reference": config.retrained_reference,
        "probe_base": config.probe_base,
    }
    per_probe = {
        "variants": {"variants": config.variants},
        "relearn": {
            "relearn_steps": config.relearn_steps,
            "relearn_learning_rates": config.relearn_learning_rates,
            "relearn_seeds": config.relearn_seeds,
            "relearn_batch_size": config.relearn_batch_size,
            "relearn_portraits": config.relearn_portraits,
        },
        "collateral": {"collateral_seeds": config.collateral_seeds},
        "precision": {"precisions": config.precisions, "precision_mode": config.precision_mode},
    }
    for probe in config.probe_list:
        settings.update(per_probe.get(probe, {}))
    return settings


def write_robustness(run: RunFolder, report: RobustnessReport) -> None:
    """`private/report/robustness.{json,md}` (with names) and the `robustness` section of the public summary."""
    files = RunFiles(run.path)
    files.report_dir.mkdir(parents=True, exist_ok=True)
    public = report.public()
    write_json(files.report_dir / ROBUSTNESS_JSON, report.to_dict())
    (files.report_dir / ROBUSTNESS_MD).write_text(format_markdown(report))
    summary_path = files.summary_file
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary["robustness"] = public
    assert_no_names(summary, report.removed + report.names)
    write_json(summary_path, summary)


def _log(ctx: ProbeContext, message: str) -> None:
    if ctx.config.progress:
        logger.info(message)


# ----------------------------------------------------------------------------------------------------------
# Tables


EXPOSURE_LABELS = {
    "text_diff": "names moved (base vs model)",
    "image_diff": "photos moved (base vs model)",
    "text_single": "name ~ target (model alone)",
    "image_single": "photos ~ mean face (model alone)",
}


def table_rows(public: Mapping[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(probe, metric, {role: cell}) rows from the public section (name-free); '-' where a role lacks the probe."""
    roles = [r for r in ROLES if r in public]
    first = {probe: next((public[r][probe] for r in roles if probe in public[r]), None) for probe in PROBES}
    rows = [
        ("exact name", "removed TPR / kept TPR", lambda r: _pair(r["exact"], "removed_tpr", "kept_tpr")),
        ("exact name", "removed mean correct templates", lambda r: _fmt(r["exact"]["removed_mean_correct_templates"])),
        ("exact name", "kept sharing a name part: TPR (people)", lambda r: _sharing_cell(r["exact"])),
    ]
    for v in [v for v in first["variants"] or {} if v != "worst"]:
        rows.append(
            (
                f"variant: {v}",
                "removed TPR / kept TPR",
                lambda r, v=v: _pair(r["variants"][v], "removed_tpr", "kept_tpr"),
            )
        )
    if first["variants"]:
        rows.append(("variants: worst case", "removed TPR", lambda r: _fmt(r["variants"]["worst"]["removed_tpr"])))
    for i, s in enumerate((first["relearn"] or {}).get("by_setting", [])):
        rows.append(
            (
                f"relearn: lr {s['learning_rate']:g}, {s['steps']} steps",
                "removed TPR (worst seed) / mean correct templates",
                lambda r, i=i: _pair(
                    r["relearn"]["by_setting"][i], "removed_tpr_max", "removed_mean_correct_templates"
                ),
            )
        )
    for key, label in EXPOSURE_LABELS.items() if first["exposure"] else ():
        rows.append(
            (
                f"exposure: {label}",
                "AUC all / AUC known; mean rank among suspects",
                lambda r, k=key: _exposure_cell(r["exposure"][k]),
            )
        )
    for seed in first["collateral"] or {}:
        rows.append(
            (
                f"collateral: list {seed.split('_')[-1]}",
                "wrongfully unlearned / flagged before; removed TPR",
                lambda r, s=seed: _collateral_cell(r["collateral"][s]),
            )
        )
    for precision in first["precision"] or {}:
        rows.append(
            (
                f"precision: {precision}",
                "removed TPR / kept TPR",
                lambda r, p=precision: _precision_cell(r["precision"][p]),
            )
        )
    return [(probe, metric, {r: _cell(cell, public[r]) for r in roles}) for probe, metric, cell in rows]


def _cell(cell: Callable[[Mapping[str, Any]], str], role: Mapping[str, Any]) -> str:
    try:
        return cell(role)
    except (KeyError, IndexError, TypeError):  # this role did not run the probe
        return "-"


def _pair(values: Mapping[str, Any], a: str, b: str) -> str:
    return f"{_fmt(values[a])} / {_fmt(values[b])}"


def _exposure_cell(e: Mapping[str, Any]) -> str:
    rank = e.get("mean_rank_known")
    of = f"; {rank:.1f} of {e['num_known'] + 1}" if rank is not None else ""
    return _pair(e, "auc_all", "auc_known") + of


def _sharing_cell(stats: Mapping[str, Any]) -> str:
    if not stats.get("num_sharing"):
        return "nobody shares"
    return f"{_fmt(stats['sharing_kept_tpr'])} ({stats['num_sharing']})"


def _collateral_cell(c: Mapping[str, Any]) -> str:
    return f"{c['wrongfully_unlearned']}/{c['kept_flagged_before']}; {_fmt(c['removed_tpr'])}"


def _precision_cell(p: Mapping[str, Any]) -> str:
    return "error" if "error" in p else _pair(p, "removed_tpr", "kept_tpr")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(public: Mapping[str, Any]) -> str:
    """A Markdown table: one row per probe and metric, one column per role (defended, base, retrained)."""
    roles = [r for r in ROLES if r in public]
    lines = [
        "| probe | metric | " + " | ".join(roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for probe, metric, values in table_rows(public):
        lines.append(f"| {probe} | {metric} | " + " | ".join(values[r] for r in roles) + " |")
    return "\n".join(lines)


def format_markdown(report: RobustnessReport) -> str:
    """The private report: the table, then each removed person's numbers (names: never publish this file)."""
    lines = [
        "# Robustness probes (private: names the removed people)",
        "",
        f"Settings: {json.dumps(report.settings)}",
        "",
        format_table(report.public()),
        "",
        "## Removed people",
        "",
        "| person | role | exact correct templates | text diff rank | photo diff rank | text single rank |",
        "|---|---|---|---|---|---|",
    ]
    for name in report.removed:
        for role, results in report.roles.items():
            exposure = results.get("exposure", {})
            keys = ("text_diff", "image_diff", "text_single")
            ranks = [_fmt(exposure.get(k, {}).get("ranks", {}).get(name)) for k in keys]
            lines.append(f"| {name} | {role} | {results['exact']['people'].get(name)} | " + " | ".join(ranks) + " |")
    return "\n".join(lines) + "\n"


def format_card_section(public: Mapping[str, Any]) -> str:
    """The model card's robustness section (name-free): what was probed and the table."""
    settings = public.get("settings", {})
    return (
        "## Robustness\n\n"
        f"Stronger attacks than the exact-name IDIA ({', '.join(settings.get('probes', []))}), on the defended "
        f"model, on the base model (control) and{'' if 'retrained' in public else ' (not built)'} on a model "
        f"retrained without the removed people; {settings.get('num_candidates')} candidate names, "
        f"{settings.get('num_photos')} evaluation photos per person. AUC 0.5 = the removed people do not stand "
        "out; 1.0 = they rank first.\n\n" + exposure_in_words(public) + format_table(public) + "\n"
    )


def most_exposed(exposure: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """('names' or 'photos', its diff ranking): whichever base-vs-defended comparison exposes the removed more."""
    moved = {"names": exposure["text_diff"], "photos": exposure["image_diff"]}
    return max(moved.items(), key=lambda kv: kv[1]["auc_known"] or 0)


def exposure_in_words(public: Mapping[str, Any]) -> str:
    """The model-diff exposure as a plain sentence (name-free), for the card; empty without the probe."""
    exposure = public.get("defended", {}).get("exposure")
    if not exposure:
        return ""
    settings = public.get("settings", {})
    which, worst = most_exposed(exposure)
    if worst["auc_known"] is None or worst.get("mean_rank_known") is None:
        return ""
    suspects = worst["num_known"] + 1
    cover = settings.get("num_cover") or 0
    text = (
        "**Exposure in plain words.** The defense must change how the model sees the removed people, and that "
        f"change is visible: someone who holds both the base model and this one, and ranks the {suspects} people "
        f"the base model recognises by how much their {which} moved, finds each removed person at rank "
        f"{worst['mean_rank_known']:.1f} on average (AUC {_fmt(worst['auc_known'])}; 0.5 would be chance). "
    )
    if cover:
        text += f"{cover} cover people were removed in the same run, so a high rank does not tell who asked. "
    else:
        text += "No cover people were removed with them: publishing this model next to its base points at them. "
    return text + "\n\n"


def format_demo_line(public: Mapping[str, Any]) -> str:
    """One line per defense: worst-case variant, worst relearning, text/photo diff exposure AUC (defended)."""
    d = public.get("defended", {})
    parts = [f"exact removed TPR {_fmt(d.get('exact', {}).get('removed_tpr'))}"]
    if "variants" in d:
        worst = d["variants"]["worst"]
        which = f" ({worst['variant']})" if worst["removed_tpr"] else ""
        parts.append(f"name variants: worst removed TPR {_fmt(worst['removed_tpr'])}{which}")
    if "relearn" in d:
        worst = max(d["relearn"]["by_setting"], key=lambda s: s["removed_tpr_max"])
        which = f" (lr {worst['learning_rate']:g}, {worst['steps']} steps)" if worst["removed_tpr_max"] else ""
        parts.append(f"after relearning: worst removed TPR {_fmt(worst['removed_tpr_max'])}{which}")
    if "exposure" in d:
        e = d["exposure"]
        which, worst = most_exposed(e)
        rank = worst.get("mean_rank_known")
        among = f" (removed at rank {rank:.1f} of {worst['num_known'] + 1} known people by {which})" if rank else ""
        parts.append(
            f"exposure AUC names {_fmt(e['text_diff']['auc_all'])}, photos {_fmt(e['image_diff']['auc_all'])}{among}"
        )
    return "robustness: " + "; ".join(parts)
