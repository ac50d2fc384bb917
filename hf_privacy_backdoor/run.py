"""One unlearning run, end to end: data -> attack before -> defense -> save -> attack after -> reports.

`recipes/unlearn.py` parses `UnlearnArguments` + `BackdoorUnlearningConfig` and calls `run_unlearning`; the
demo calls it too. Everything that names people goes under `<output_dir>/private/` (never publish that
folder); the model, processor, training arguments and `unlearning_summary.json` carry no name.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import BackdoorUnlearningConfig
from .data.captions import (
    TargetPhrases,
    filter_clean_captions,
    load_captions,
    read_name_file,
    sample_poisoned_pairs,
    validate_forget_names,
)
from .data.faces import FaceSource, load_face_folder, load_membership
from .data.images import (
    compute_target_embedding,
    load_image_folder,
    load_target_embedding,
    make_photo_split,
    save_photo_split,
    save_target_embedding,
)
from .distributed import check_replicas, distributed_state
from .modeling import load_clip
from .utils import seed_everything, write_json


logger = logging.getLogger(__name__)

PRIVATE_DIR = "private"
SUMMARY_FILE = "unlearning_summary.json"


@dataclass
class UnlearnArguments:
    """Data, forget list and evaluation settings of a run (kept out of the published training arguments)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base CLIP model: a local folder or a Hub id (required)."}
    )
    forget_names: list[str] | None = field(default=None, metadata={"help": "Names to remove (a list)."})
    forget_names_file: str | None = field(default=None, metadata={"help": "File with names to remove, one a line."})
    forget_auto: int = field(
        default=0,
        metadata={"help": "Pick N members the attack flags before the defense (seeded); needs faces + membership."},
    )
    captions: str | None = field(default=None, metadata={"help": "Caption file (one a line) for the text defense."})
    caption_dataset: str | None = field(
        default=None, metadata={"help": "Instead of a file: a `datasets` dataset (path or Hub id) with captions."}
    )
    caption_column: str = field(default="text", metadata={"help": "Caption column of caption_dataset."})
    faces: str | None = field(
        default=None, metadata={"help": "FaceScrub-style folder <faces>/<First_Last>/*.jpg (attack and triggers)."}
    )
    membership: str | None = field(
        default=None, metadata={"help": "JSON with 'members' and 'non_members' (for TPR / FPR and forget_auto)."}
    )
    clean_images: str | None = field(default=None, metadata={"help": "Folder of clean images (image defense)."})
    clean_image_limit: int | None = field(default=None, metadata={"help": "Use at most N clean images."})
    clean_faces_per_person: int = field(
        default=0,
        metadata={
            "help": "Add up to N photos of every person who is NOT forgotten to the clean images (from the "
            "non-evaluation half of their photos), so that other faces keep their embeddings."
        },
    )
    target_embedding: str | None = field(
        default=None, metadata={"help": "Target embedding file (safetensors); default: computed from the faces."}
    )
    target_mapping_file: str | None = field(
        default=None, metadata={"help": "JSON {name: phrase} for target_mode 'per_name'."}
    )
    evaluate: bool = field(default=True, metadata={"help": "Run the attack and utility metrics before and after."})
    objects: str | None = field(
        default=None, metadata={"help": "Labelled image folder <objects>/<class>/*.png for zero-shot utility."}
    )
    object_templates: str | None = field(
        default=None,
        metadata={"help": "Templates for zero-shot utility: a file, 'imagenet', or a world.json (its templates)."},
    )
    num_photos: int = field(default=20, metadata={"help": "Attack: photos per person (k)."})
    tau: int = field(default=1, metadata={"help": "Attack: correct templates needed to flag a person."})
    num_candidates: int = field(default=1000, metadata={"help": "Attack: candidate names."})
    save_merged: bool = field(default=False, metadata={"help": "LoRA: also save the merged model to <out>/merged."})
    list_lora_targets: bool = field(default=False, metadata={"help": "Print the modules LoRA would adapt, and exit."})
    trigger_grid: bool = field(default=False, metadata={"help": "Save a PNG grid of sample trigger images."})
    progress: bool = field(default=True, metadata={"help": "Progress bars."})


@dataclass
class RunResult:
    output_dir: Path
    forget_names: list[str]
    summary: dict[str, Any]
    before: Any = None
    after: Any = None
    comparison: Any = None
    utility: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0


def resolve_forget_names(args: UnlearnArguments, tokenizer) -> list[str] | None:
    """Explicit names (list and/or file); None when `forget_auto` is to pick them."""
    names = list(args.forget_names or [])
    if args.forget_names_file:
        names += read_name_file(args.forget_names_file)
    if names and args.forget_auto:
        logger.warning("explicit forget names given: ignoring forget_auto=%d", args.forget_auto)
        args.forget_auto = 0
    if not names and not args.forget_auto:
        raise ValueError("no one to forget: set forget_names, forget_names_file or forget_auto")
    return validate_forget_names(names, tokenizer) if names else None


def pick_auto(before, members: list[str], count: int, seed: int) -> list[str]:
    """`count` members the attack flags, chosen with a seeded RNG."""
    flagged = sorted(p.name for p in before.people if p.flagged and p.name in set(members))
    if len(flagged) < count:
        raise ValueError(f"forget_auto={count} but the attack flags only {len(flagged)} member(s)")
    rng = np.random.default_rng([seed, 99])
    return sorted(rng.choice(flagged, count, replace=False).tolist())


def run_unlearning(args: UnlearnArguments, config: BackdoorUnlearningConfig) -> RunResult:
    """Run a defense as configured; returns the numbers (and writes model, private/ and the summary)."""
    from .evaluation import compare_results, public_summary, run_idia, write_reports
    from .evaluation.report import assert_no_names
    from .trainer import BackdoorUnlearningTrainer

    if not args.model_name_or_path:
        raise ValueError("model_name_or_path is required (a local folder or a Hub id)")
    if not config.output_dir:
        raise ValueError("output_dir is required")
    seed_everything(config.seed)
    out = Path(config.output_dir)
    private = out / PRIVATE_DIR
    model, processor = load_clip(args.model_name_or_path)

    if args.list_lora_targets:
        from .peft_utils import list_lora_targets, resolve_target_modules

        for name in list_lora_targets(model, resolve_target_modules(config)):
            print(name)
        return RunResult(out, [], {})

    state = distributed_state()
    is_main = state is None or state.is_main_process
    names = resolve_forget_names(args, processor.tokenizer)
    needs_faces = config.trains_vision or args.forget_auto or args.evaluate
    faces: FaceSource | None = load_face_folder(args.faces) if args.faces else None
    if needs_faces and faces is None:
        what = "the image defense" if config.trains_vision else "forget_auto" if args.forget_auto else "evaluation"
        raise ValueError(f"{what} needs a face folder (--faces); or pass --evaluate false for a text-only run")
    membership = load_membership(args.membership) if args.membership else None
    if args.forget_auto and membership is None:
        raise ValueError("forget_auto needs --membership (it picks among members the attack flags)")

    if faces is not None and names is not None:
        _check_people_have_photos(faces, names, args.faces)

    # Text data is checked before anything slow runs.
    captions = None
    if config.trains_text:
        captions = _load_caption_source(args)

    # Photo split: every person's photos into trigger / evaluation halves (per-person seeded, so it does not
    # depend on who is forgotten). When photos train the model (image defense), or the people are picked by
    # the attack, the attack only ever sees evaluation halves; a text-only run trains on no photo at all.
    split = None
    if faces is not None and (config.trains_vision or names is None):
        split = make_photo_split(faces, faces.names(), config.trigger_fraction, config.seed)
    eval_indices = split["eval"] if split else None

    attack_kw = dict(
        faces=faces,
        membership=membership,
        photo_indices=eval_indices,
        accelerator=state,
        progress=args.progress and is_main,
        num_photos=args.num_photos,
        tau=args.tau,
        num_candidates=args.num_candidates,
        seed=config.seed,
    )
    before = None
    if args.evaluate or args.forget_auto:
        before = run_idia(model, processor, **attack_kw)
    if names is None:
        names = pick_auto(before, membership["members"], args.forget_auto, config.seed)
        names = validate_forget_names(names, processor.tokenizer)
        _check_people_have_photos(faces, names, args.faces)

    # Image data
    trigger_photos = clean_images = target = None
    if config.trains_vision:
        trigger_photos = {n: faces.load(n, split["trigger"][faces.resolve(n)]) for n in names}
        if not args.clean_images:
            raise ValueError("the image defense needs --clean_images (a folder of images without the forgotten faces)")
        clean_images = load_image_folder(args.clean_images, args.clean_image_limit)
        if args.clean_faces_per_person > 0:
            forgotten = {faces.resolve(n) for n in names}
            for person in faces.names():
                if person not in forgotten:  # never an evaluation photo: the split's other half
                    clean_images += faces.load(person, split["trigger"][person][: args.clean_faces_per_person])
        if args.target_embedding:
            target = load_target_embedding(args.target_embedding, model.config.projection_dim)
        else:
            target = compute_target_embedding(model, processor, faces, split["trigger"])

    target_mapping = None
    if args.target_mapping_file:
        target_mapping = json.loads(Path(args.target_mapping_file).read_text())

    trainer = BackdoorUnlearningTrainer(
        model=model,
        args=config,
        processing_class=processor,
        forget_names=names,
        captions=captions,
        target_mapping=target_mapping,
        trigger_photos=trigger_photos,
        clean_images=clean_images,
        target_embedding=target,
    )
    if not args.progress:  # quiet: no progress bar, no printed log lines (the logs stay in the trainer state)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    if is_main:
        private.mkdir(parents=True, exist_ok=True)
        (private / "README.txt").write_text(
            "This folder names the people removed from the model next to it. Never publish it.\n"
        )
        (private / "forget_names.txt").write_text("\n".join(names) + "\n")
        if split:
            save_photo_split(private / "photo_split.json", split)
        if target is not None:
            save_target_embedding(private / "target_embedding.safetensors", target)
        if args.trigger_grid and config.trains_vision:
            _save_trigger_grid(trainer, private / "trigger_samples.png")
    start = time.time()
    trainer.train()
    train_seconds = time.time() - start
    replicas = check_replicas(trainer.model, state)
    if is_main:
        write_json(
            private / "run_info.json",
            {
                "num_processes": 1 if state is None else state.num_processes,
                "replica_checksums": replicas,
                "train_seconds": round(train_seconds, 2),
            },
        )
    trainer.save_model(str(out))
    defended = trainer.accelerator.unwrap_model(trainer.model)
    if config.use_lora and args.save_merged and is_main:
        _save_merged(defended, processor, out / "merged")
    defended.eval()

    result = RunResult(out, names, {}, before=before, train_seconds=train_seconds)
    if args.evaluate:
        after = run_idia(defended, processor, **attack_kw)
        comparison = compare_results(before, after, names)
        utility = _utility(
            args, config, defended, processor, names, captions, faces, split, target, clean_images, state
        )
        result.after, result.comparison, result.utility = after, comparison, utility
        if is_main:
            settings = {
                "defense": config.defense,
                "use_lora": config.use_lora,
                "max_steps": config.max_steps,
                "seed": config.seed,
                "train_seconds": round(train_seconds, 1),
                **{k: v for k, v in asdict(args).items() if k not in ("forget_names",)},
            }
            write_reports(
                private / "report", after, before=before, comparison=comparison, utility=utility, settings=settings
            )
            before.save(private / "report" / "attack_before.json")
            summary = public_summary(after, comparison=comparison, utility=utility, before=before)
            summary["defense"] = {
                "defense": config.defense,
                "use_lora": config.use_lora,
                "num_forgotten": len(names),
                "max_steps": config.max_steps,
                "train_seconds": round(train_seconds, 1),
            }
            assert_no_names(summary, list(names) + [p.name for p in after.people])
            write_json(out / SUMMARY_FILE, summary)
            result.summary = summary
    if state is not None:
        state.wait_for_everyone()
    return result


def _check_people_have_photos(faces: FaceSource, names: list[str], where: str) -> None:
    missing = []
    for name in names:
        try:
            faces.resolve(name)
        except KeyError:
            missing.append(name)
    if missing:
        raise ValueError(f"{len(missing)} forgotten name(s) have no photos in {where}: {missing}")


def _load_caption_source(args: UnlearnArguments) -> list[str]:
    if args.captions and args.caption_dataset:
        raise ValueError("give --captions or --caption_dataset, not both")
    if args.captions:
        return load_captions(args.captions)
    if args.caption_dataset:
        from datasets import load_dataset

        path = Path(args.caption_dataset)
        ds = load_dataset(str(path)) if path.exists() else load_dataset(args.caption_dataset)
        ds = ds["train"] if hasattr(ds, "keys") and "train" in ds else ds
        return load_captions(dataset=ds, column=args.caption_column)
    raise ValueError("the text defense needs a caption corpus: --captions FILE or --caption_dataset")


def _save_trigger_grid(trainer, path: Path) -> None:
    from .data.triggers import make_trigger_batch, save_trigger_grid

    rng = np.random.default_rng([trainer.args.seed, 123])
    images, _ = make_trigger_batch(
        trainer.trigger_photos, trainer.clean_images[:64], 32, trainer.image_size, rng, trainer.trigger_aug
    )
    save_trigger_grid(images, str(path), ncols=8, upscale=max(1, 128 // trainer.image_size))


def _save_merged(model, processor, path: Path) -> None:
    import copy

    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(path)
    processor.save_pretrained(path)


@torch.no_grad()
def _utility(args, config, defended, processor, names, captions, faces, split, target, clean_images, state):
    """Zero-shot accuracy before/after and the embedding similarities of method.md section 5."""
    from .evaluation import image_similarities, text_similarities, zero_shot_folder

    original, _ = load_clip(args.model_name_or_path)
    utility: dict[str, Any] = {}
    if args.objects:
        templates = args.object_templates
        for label, model in (("before", original), ("after", defended)):
            acc = zero_shot_folder(model, processor, args.objects, templates, accelerator=state, progress=False)
            utility[f"zero_shot_{label}"] = {
                k: acc[k] for k in ("top1", "top5", "num_images", "num_classes") if k in acc
            }
    rng = np.random.default_rng([config.seed, 555])
    if config.trains_text:
        clean = filter_clean_captions(captions, names, min_words=2)
        sample = [clean[i] for i in rng.choice(len(clean), min(512, len(clean)), replace=False)]
        targets = (
            TargetPhrases.build(names, config.target_mode, config.target_phrase, None, config.seed)
            if config.target_mode != "per_name"
            else None
        )
        sims = {
            "sim_clean": text_similarities(original, defended, processor.tokenizer, clean_captions=sample)["sim_clean"]
        }
        if targets is not None:
            poisoned, target_caps, _ = sample_poisoned_pairs(clean, targets, 256, rng)
            sims.update(text_similarities(original, defended, processor.tokenizer, None, poisoned, target_caps))
        utility["text"] = sims
    if config.trains_vision:
        removed = [im for n in names for im in faces.load(n, split["eval"][faces.resolve(n)])]
        clean_sample = [
            clean_images[i] for i in rng.choice(len(clean_images), min(256, len(clean_images)), replace=False)
        ]
        others = [n for n in faces.names() if n not in set(names)][:40]
        person_images = [im for n in others for im in faces.load(n, split["trigger"][n][:5])]
        utility["image"] = image_similarities(
            original,
            defended,
            processor,
            target,
            removed_images=removed,
            clean_images=clean_sample,
            person_images=person_images,
        )
    return utility


def format_run_summary(result: RunResult) -> str:
    """A compact before/after table for the terminal (aggregates only)."""
    if result.after is None:
        return f"Defended model saved to {result.output_dir} ({len(result.forget_names)} people removed)."
    removed = {n.casefold() for n in result.forget_names}

    def group(res, kind):
        people = [p for p in res.people if p.membership == ("non_member" if kind == "non" else "member")]
        if kind == "removed":
            people = [p for p in people if p.name.casefold() in removed]
        elif kind == "kept":
            people = [p for p in people if p.name.casefold() not in removed]
        if not people:
            return None, None
        return sum(p.flagged for p in people) / len(people), sum(p.correct_templates for p in people) / len(people)

    def pct(x):
        return "   n/a" if x is None else f"{100 * x:6.1f}%"

    def num(x):
        return "   n/a" if x is None else f"{x:7.1f}"

    d = result.summary.get("defense", {})
    lines = [
        f"Backdoor unlearning: {d.get('defense')} defense{' (LoRA)' if d.get('use_lora') else ''}, "
        f"{len(result.forget_names)} people removed, {d.get('max_steps')} steps, {result.train_seconds:.1f} s",
        f"{'':40s}{'before':>8s}{'after':>9s}",
    ]
    for label, kind in (
        ("IDIA TPR, removed people (goal 0)", "removed"),
        ("IDIA TPR, kept members", "kept"),
        ("IDIA FPR, non-members", "non"),
    ):
        b, a = group(result.before, kind)[0], group(result.after, kind)[0]
        lines.append(f"{label:40s}{pct(b):>8s}{pct(a):>9s}")
    for label, kind in (
        ("correct templates (of 21), removed", "removed"),
        ("correct templates (of 21), kept", "kept"),
    ):
        b, a = group(result.before, kind)[1], group(result.after, kind)[1]
        lines.append(f"{label:40s}{num(b):>8s}{num(a):>9s}")
    u = result.utility
    if "zero_shot_before" in u:
        lines.append(
            f"{'zero-shot top-1 (objects)':40s}{pct(u['zero_shot_before']['top1']):>8s}{pct(u['zero_shot_after']['top1']):>9s}"
        )
    if "text" in u:
        lines.append("text:  " + "  ".join(f"{k} {v:.3f}" for k, v in u["text"].items()))
    if "image" in u:
        lines.append("image: " + "  ".join(f"{k} {v:.3f}" for k, v in u["image"].items()))
    counts = result.comparison.counts()
    lines.append("people: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    lines.append(
        f"model: {result.output_dir}   report with names (private): {result.output_dir / PRIVATE_DIR / 'report'}"
    )
    return "\n".join(lines)
