"""One unlearning run, end to end: data -> attack before -> defense -> save -> attack after -> reports.

`recipes/unlearn.py` parses `UnlearnArguments` + `LoraArguments` + the method's config (`RUN_ARGUMENTS`; a
`method:` key picks the config class, `hf_privacy_backdoor.methods`) and calls `run_unlearning`, which reads as its phases: prepare inputs -> attack before -> image data -> trainer
-> private files -> train and save -> evaluate after (attack, comparison, utility, reports, public summary). The
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
    load_image_folder,
    load_target_embedding,
    make_photo_split,
    save_photo_split,
    save_target_embedding,
)
from .data.names import normalize_name
from .data.retained import PORTRAIT_CAPTION, RetainedPairs, captioned_photos, retained_pairs
from .distributed import check_replicas, distributed_state
from .methods.base_config import UnlearningConfig
from .modeling import compute_target_embedding, load_clip
from .peft_utils import LoraArguments, get_peft_config, list_lora_targets
from .run_folder import (
    ATTACK_BEFORE_FILE,
    COVER_FILE,
    FORGET_FILE,
    PHOTO_SPLIT_FILE,
    PRIVATE_DIR,
    PRIVATE_README,
    PRIVATE_README_TEXT,
    REPORT_DIR,
    RUN_INFO_FILE,
    SUMMARY_FILE,
    TARGET_EMBEDDING_FILE,
    TRIGGER_GRID_FILE,
)
from .utils import seed_everything, write_json


logger = logging.getLogger(__name__)


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
    cover_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Cover people removed in the same run (e.g. people who agreed to be removed as well), so that "
            "someone comparing the base and the defended model cannot tell who asked. They are forgotten too."
        },
    )
    cover_names_file: str | None = field(default=None, metadata={"help": "File with cover names, one a line."})
    cover_auto: int = field(
        default=0, metadata={"help": "Synthetic/benchmarks: pick N other members the attack flags as cover (seeded)."}
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
    retain_faces_per_person: int = field(
        default=10,
        metadata={
            "help": "Methods trained on retained data (retain_finetune, grad_diff, slug): up to N photos of every "
            "kept person, from the non-evaluation half, captioned with their names."
        },
    )
    retain_objects: str | None = field(
        default=None,
        metadata={
            "help": "Methods trained on retained data: a labelled folder <root>/<class>/*.png (never the `objects` "
            "evaluation folder) added to the retained pairs, captioned 'a photo of a <class>'."
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
    num_photos: int = field(default=20, metadata={"help": "Attack: photos attacked per person (k)."})
    tau: int = field(default=1, metadata={"help": "Attack: correct templates needed to flag a person."})
    num_candidates: int = field(default=1000, metadata={"help": "Attack: number of candidate names."})
    save_merged: bool = field(default=False, metadata={"help": "LoRA: also save the merged model to <out>/merged."})
    base_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub id of the base model, written into adapter_config.json (and the model card) when the base "
            "was loaded from a local folder: a machine path must never be published."
        },
    )
    trigger_grid: bool = field(default=False, metadata={"help": "Save a PNG grid of sample trigger images."})
    hub_private: bool = field(
        default=True,
        metadata={"help": "With --push_to_hub: a private repo (default); false publishes openly."},
    )
    hub_create_pr: bool = field(default=False, metadata={"help": "With --push_to_hub: open a pull request."})
    license: str | None = field(
        default=None, metadata={"help": "License of the published model (default: the base model's, if known)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def resolve_forget_names(args: UnlearnArguments, tokenizer) -> list[str] | None:
    """Explicit names (list and/or file); None when `forget_auto` is to pick them."""
    names = list(args.forget_names or [])
    if args.forget_names_file:
        from_file = read_name_file(args.forget_names_file)
        if not from_file:
            raise ValueError(f"the forget-name file {args.forget_names_file!r} holds no name (one a line; # comments)")
        names += from_file
    if names and args.forget_auto:
        logger.warning("explicit forget names given: ignoring forget_auto=%d", args.forget_auto)
        args.forget_auto = 0
    if not names and not args.forget_auto:
        raise ValueError("no one to forget: set forget_names, forget_names_file or forget_auto")
    return validate_forget_names(names, tokenizer) if names else None


def resolve_cover_names(args: UnlearnArguments, tokenizer) -> list[str] | None:
    """Explicit cover names (list and/or file); None when `cover_auto` picks them (or there is no cover)."""
    names = list(args.cover_names or [])
    if args.cover_names_file:
        names += read_name_file(args.cover_names_file)
    if names and args.cover_auto:
        raise ValueError("give cover people either as names (cover_names / cover_names_file) or as cover_auto")
    if args.cover_auto < 0:
        raise ValueError(f"cover_auto must be >= 0, got {args.cover_auto}")
    return validate_forget_names(names, tokenizer) if names else None


def add_cover(inputs: RunInputs, cover: list[str], tokenizer) -> None:
    """The cover people join the forget list (after the requested names); overlaps are an error."""
    requested = {normalize_name(n) for n in inputs.names}
    overlap = sum(normalize_name(c) in requested for c in cover)
    if overlap:
        raise ValueError(f"{overlap} cover name(s) are on the forget list already: a person is one or the other")
    inputs.cover = list(cover)
    inputs.names = validate_forget_names([*inputs.names, *cover], tokenizer)


def pick_auto(before, members: list[str], count: int, seed: int, exclude=(), what: str = "forget_auto") -> list[str]:
    """`count` members the attack flags (none of `exclude`), chosen with a seeded RNG."""
    excluded = {normalize_name(n) for n in exclude}
    flagged = sorted(
        p.name
        for p in before.people
        if p.flagged and p.name in set(members) and normalize_name(p.name) not in excluded
    )
    if len(flagged) < count:
        raise ValueError(f"{what}={count} but the attack flags only {len(flagged)} other member(s)")
    rng = np.random.default_rng([seed, 99] if not exclude else [seed, 99, len(excluded)])
    return sorted(rng.choice(flagged, count, replace=False).tolist())


RUN_ARGUMENTS = (UnlearnArguments, BackdoorUnlearningConfig, LoraArguments)  # what recipes/unlearn.py parses


@dataclass
class RunResult:
    """What `run_unlearning` returns: the run folder, the forget list, the public summary and the measurements.

    `before` / `after` are the attack results (with `--evaluate`), `comparison` their comparison, `utility` the
    utility metrics; `forgotten_checks` has one entry per `stop_when_forgotten` check, and `method_details` what the
    method chose while training (name-free).
    """

    output_dir: Path
    forget_names: list[str]
    summary: dict[str, Any]
    before: Any = None
    after: Any = None
    comparison: Any = None
    utility: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    steps_trained: int = 0
    forgotten_checks: list[dict] = field(default_factory=list)  # stop_when_forgotten: one entry per check
    method_details: dict[str, Any] = field(default_factory=dict)  # what a method chose while training (name-free)


@dataclass
class RunInputs:
    """Everything a run reads before it trains, checked up front (names, faces, membership, captions, split)."""

    names: list[str] | None  # None until `forget_auto` picks them from the attack before
    faces: FaceSource | None = None
    membership: dict[str, list[str]] | None = None
    captions: list[str] | None = None
    split: dict | None = None  # the photo split: trigger / evaluation halves per person
    target_mapping: dict[str, str] | None = None
    cover: list[str] = field(default_factory=list)  # forget-list entries that are cover people (at the end)

    @property
    def eval_indices(self) -> dict | None:
        return self.split["eval"] if self.split else None


@dataclass
class ImageData:
    """The image defense's data: trigger photos (never evaluation photos), clean images, the target embedding."""

    trigger_photos: dict[str, list] | None = None
    clean_images: list | None = None
    target: torch.Tensor | None = None


@dataclass
class PairData:
    """Image-caption pairs of the methods that train on photos: the removed people's (trigger halves, captioned
    with their names) and the retained pairs (kept people's trigger halves and `retain_objects`)."""

    forget: RetainedPairs | None = None
    retain: RetainedPairs | None = None


def run_unlearning(args: UnlearnArguments, config: UnlearningConfig, lora: LoraArguments | None = None) -> RunResult:
    """Run a method as configured; returns the numbers (and writes model, private/ and the summary).

    `args` holds the run's inputs (model, names, data, evaluation), `config` the method's config (its `method`
    field picks the trainer), `lora` the LoRA settings (None or `use_lora=False`: full fine-tuning).
    """
    _check_required(args, config)
    lora = lora or LoraArguments()
    hub_model_id = take_publish_request(args, config)
    seed_everything(config.seed)
    model, processor = load_clip(args.model_name_or_path)
    if lora.list_lora_targets:
        for name in list_lora_targets(model, lora.target_modules(config.towers)):
            print(name)
        return RunResult(Path(config.output_dir), [], {})
    state = distributed_state()
    inputs = prepare_inputs(args, config, processor.tokenizer)
    before = attack_before(args, config, model, processor, inputs, state)
    image = prepare_image_data(args, config, model, processor, inputs)
    pairs = prepare_pair_data(args, config, inputs)
    trainer = build_trainer(args, config, lora, model, processor, inputs, image, pairs)
    if _is_main(state):
        write_private_files(args, config, trainer, inputs, image)
    defended, train_seconds = train_and_save(args, config, lora, trainer, processor, state)
    result = RunResult(Path(config.output_dir), inputs.names, {}, before=before, train_seconds=train_seconds)
    result.steps_trained = trainer.state.global_step
    result.forgotten_checks = forgotten_check_history(trainer)
    result.method_details = dict(getattr(trainer, "method_details", {}))
    if args.evaluate:
        evaluate_after(args, config, lora, result, defended, processor, inputs, image, state)
    if _is_main(state):
        publish_run(args, config, hub_model_id, result)
    if state is not None:
        state.wait_for_everyone()
    return result


# ----------------------------------------------------------------------------------------------------------
# Phases


def prepare_inputs(args: UnlearnArguments, config: UnlearningConfig, tokenizer) -> RunInputs:
    """Read and check the forget list, faces, membership, captions and the photo split, before anything slow."""
    inputs = RunInputs(names=resolve_forget_names(args, tokenizer))
    cover = resolve_cover_names(args, tokenizer)
    if cover and inputs.names is not None:
        add_cover(inputs, cover, tokenizer)
    elif cover:
        inputs.cover = cover  # joins the list once forget_auto has picked the requested people
    if args.cover_auto and not args.membership:
        raise ValueError("cover_auto needs --membership (it picks among members the attack flags)")
    data = config.run_data()
    trains_on_photos = config.needs_photos or "retain_pairs" in data
    needs_faces = trains_on_photos or args.forget_auto or args.cover_auto or args.evaluate
    inputs.faces = load_face_folder(args.faces) if args.faces else None
    if needs_faces and inputs.faces is None:
        what = f"method {config.method!r} on towers {config.towers!r}" if trains_on_photos else None
        what = what or ("forget_auto" if args.forget_auto else "evaluation")
        raise ValueError(f"{what} needs a face folder (--faces); or pass --evaluate false for a text-only run")
    inputs.membership = load_membership(args.membership) if args.membership else None
    if args.forget_auto and inputs.membership is None:
        raise ValueError("forget_auto needs --membership (it picks among members the attack flags)")
    if inputs.faces is not None and inputs.names is not None:
        _check_people_have_photos(inputs.faces, inputs.names, args.faces)
    if "captions" in data:
        inputs.captions = _load_caption_source(args)
    if "image" in data and not args.clean_images:
        raise ValueError("the image defense needs --clean_images (a folder of images without the forgotten faces)")
    if args.target_mapping_file:
        inputs.target_mapping = json.loads(Path(args.target_mapping_file).read_text())
    # Photo split: every person's photos into trigger / evaluation halves (per-person seeded, so it does not
    # depend on who is forgotten). When photos train the model (image defense), or the people are picked by
    # the attack, the attack only ever sees evaluation halves; a text-only run trains on no photo at all.
    if config.stop_when_forgotten and inputs.faces is None:
        raise ValueError("stop_when_forgotten checks the attack on trigger photos: it needs a face folder (--faces)")
    if inputs.faces is not None and (trains_on_photos or inputs.names is None or config.stop_when_forgotten):
        inputs.split = make_photo_split(inputs.faces, inputs.faces.names(), config.trigger_fraction, config.seed)
    return inputs


def attack_before(args, config, model, processor, inputs: RunInputs, state):
    """The attack on the original model (evaluation photos only); `forget_auto` picks the people from it."""
    if not (args.evaluate or args.forget_auto or args.cover_auto):
        return None
    before = _attack(args, config, model, processor, inputs, state)
    if inputs.names is None:
        names = pick_auto(before, inputs.membership["members"], args.forget_auto, config.seed)
        inputs.names = validate_forget_names(names, processor.tokenizer)
        if inputs.cover:
            cover, inputs.cover = inputs.cover, []
            add_cover(inputs, cover, processor.tokenizer)
    if args.cover_auto:
        cover = pick_auto(
            before, inputs.membership["members"], args.cover_auto, config.seed, inputs.names, what="cover_auto"
        )
        add_cover(inputs, cover, processor.tokenizer)
    _check_people_have_photos(inputs.faces, inputs.names, args.faces)
    return before


def prepare_image_data(args, config, model, processor, inputs: RunInputs) -> ImageData:
    """Trigger photos (the split's trigger halves), clean images (+ kept people's photos) and the target."""
    if "image" not in config.run_data():
        return ImageData()
    faces, trigger_half = inputs.faces, inputs.split["trigger"]
    photos = {n: faces.load(n, _training_triggers(config, trigger_half[faces.resolve(n)])) for n in inputs.names}
    clean = load_image_folder(args.clean_images, args.clean_image_limit)
    kept = RetainedPairs([], [])
    if args.clean_faces_per_person > 0:  # never an evaluation photo: the split's other half
        kept = retained_pairs(
            inputs.names, faces=faces, photos=trigger_half, per_person=args.clean_faces_per_person, what="clean faces"
        )
    clean += kept.images
    if args.target_embedding:
        target = load_target_embedding(args.target_embedding, model.config.projection_dim)
    else:
        target = compute_target_embedding(model, processor, faces, trigger_half)
    return ImageData(photos, clean, target)


def prepare_pair_data(args, config, inputs: RunInputs) -> PairData:
    """The forget pairs (removed people's training trigger photos, captioned with their names) and the retained
    pairs (kept people's trigger-half photos with their names, plus `retain_objects`) a method asks for."""
    data, pairs = config.run_data(), PairData()
    faces, trigger_half = inputs.faces, inputs.split["trigger"] if inputs.split else None
    if "forget_pairs" in data:
        people = [faces.resolve(n) for n in inputs.names]
        photos = {p: _training_triggers(config, trigger_half[p]) for p in people}
        images, captions = captioned_photos(faces, PORTRAIT_CAPTION, people, photos)
        pairs.forget = RetainedPairs(images, captions, num_portraits=len(images))
    if "retain_pairs" in data:
        objects = load_face_folder(args.retain_objects) if args.retain_objects else None
        pairs.retain = retained_pairs(
            inputs.names, faces=faces, photos=trigger_half, objects=objects,
            per_person=args.retain_faces_per_person, what="the retained data",
        )  # fmt: skip
    return pairs


def _check_photos(config, trigger: list[int]) -> list[int]:
    """With `stop_when_forgotten` and a trained vision tower, a quarter of a forgotten person's trigger half is
    held out of training for the stop check: the trained trigger photos themselves are memorised, and a check
    on them stopped image runs while evaluation photos were still recognised (measured). Text runs train on no
    photo, so their check uses the whole trigger half."""
    if not (config.stop_when_forgotten and config.needs_photos):
        return list(trigger)
    if len(trigger) < 2:
        raise ValueError("stop_when_forgotten with the image defense needs at least 2 trigger photos per person")
    return list(trigger[-max(1, round(0.25 * len(trigger))) :])


def _training_triggers(config, trigger: list[int]) -> list[int]:
    held_out = set(_check_photos(config, trigger)) if config.stop_when_forgotten and config.needs_photos else set()
    return [i for i in trigger if i not in held_out]


def build_trainer(args, config, lora: LoraArguments, model, processor, inputs: RunInputs, image, pairs=None):
    """The method's trainer (`config.method`, from the registry) with the data it asks for."""
    from .methods import get_method
    from .methods.base import StopWhenForgottenCallback

    trainer = get_method(config.method).trainer(
        model=model,
        args=config,
        processing_class=processor,
        forget_names=inputs.names,
        peft_config=get_peft_config(lora, config.towers),
        base_model_id=args.base_model_id,
        **trainer_data(config, inputs, image, pairs or PairData()),
    )
    if config.stop_when_forgotten:
        trainer.add_callback(
            StopWhenForgottenCallback(
                forgotten_check(args, config, processor, model, inputs),
                every=config.forgotten_check_steps,
                patience=config.forgotten_patience,
                margin=config.forgotten_margin_steps,
            )
        )
    if not args.progress:  # quiet: no progress bar, no printed log lines (the logs stay in the trainer state)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    return trainer


def trainer_data(config, inputs: RunInputs, image: ImageData, pairs: PairData) -> dict[str, Any]:
    """The trainer's data keywords for the kinds of data its method uses (`config.run_data()`)."""
    data, kwargs = config.run_data(), {}
    if "captions" in data:
        kwargs.update(captions=inputs.captions, target_mapping=inputs.target_mapping)
    if "image" in data:
        kwargs.update(trigger_photos=image.trigger_photos, clean_images=image.clean_images)
        kwargs["target_embedding"] = image.target
    if "forget_pairs" in data:
        kwargs["forget_pairs"] = (pairs.forget.images, pairs.forget.captions)
    if "retain_pairs" in data:
        kwargs["retain_pairs"] = (pairs.retain.images, pairs.retain.captions)
    return kwargs


def forgotten_check(args, config, processor, model, inputs: RunInputs):
    """The cheap check for `stop_when_forgotten` (see `stop_check`): trigger-half photos only (under the image
    defense the quarter of it held out of training, see `_check_photos`), a candidate subset, the trained
    partial names, and the kept people the check identifies on the base model (`model`, before training)."""
    from .stop_check import ForgottenCheck

    faces, trigger = inputs.faces, inputs.split["trigger"]
    members = inputs.membership["members"] if inputs.membership else faces.names()
    skip = {normalize_name(n) for n in [*inputs.names, *inputs.cover]}
    others = [faces.resolve(n) for n in members if normalize_name(n) not in skip and _has_photos(faces, n)]
    people = [faces.resolve(n) for n in inputs.names] + others
    check = ForgottenCheck(
        processor, faces, inputs.names, others, {p: _check_photos(config, trigger[p]) for p in people},
        num_candidates=args.num_candidates, variants=getattr(config, "trigger_variants", ()) if config.trains_text else (),
        num_kept=config.forgotten_check_kept, image_frozen=not config.trains_vision, num_photos=args.num_photos,
        tau=args.tau, seed=config.seed,
    )  # fmt: skip
    check.baseline(model)
    return check


def forgotten_check_history(trainer) -> list[dict]:
    """The stop check's answers, name-free: step, forgotten found, variant found, kept lost, forgotten."""
    from .methods.base import StopWhenForgottenCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, StopWhenForgottenCallback):
            outcomes = getattr(callback.is_forgotten, "outcomes", [None] * len(callback.history))
            return [
                {"step": step, **(o.to_dict() if o else {}), "forgotten": forgotten}
                for (step, forgotten), o in zip(callback.history, outcomes)
            ]
    return []


def _has_photos(faces: FaceSource, name: str) -> bool:
    try:
        faces.resolve(name)
    except KeyError:
        return False
    return True


def write_private_files(args, config, trainer, inputs: RunInputs, image: ImageData) -> None:
    """`private/`: the names, the photo split, the target embedding and (on request) a trigger preview."""
    private = Path(config.output_dir) / PRIVATE_DIR
    private.mkdir(parents=True, exist_ok=True)
    (private / PRIVATE_README).write_text(PRIVATE_README_TEXT)
    (private / FORGET_FILE).write_text("\n".join(inputs.names) + "\n")
    if inputs.cover:  # which of them are cover people (the probes measure the others' exposure)
        (private / COVER_FILE).write_text("\n".join(inputs.cover) + "\n")
    if inputs.split:
        save_photo_split(private / PHOTO_SPLIT_FILE, inputs.split)
    if image.target is not None:
        save_target_embedding(private / TARGET_EMBEDDING_FILE, image.target)
    if args.trigger_grid and "image" in config.run_data():
        _save_trigger_grid(trainer, private / TRIGGER_GRID_FILE)


def train_and_save(args, config, lora: LoraArguments, trainer, processor, state):
    """Train (resuming from a checkpoint if asked), check the replicas, save; returns (defended model, seconds)."""
    out = Path(config.output_dir)
    start = time.time()
    trainer.train(resume_from_checkpoint=_resume_checkpoint(config))
    train_seconds = time.time() - start
    replicas = check_replicas(trainer.model, state)
    num_processes = 1 if state is None else state.num_processes
    if _is_main(state):
        info = {
            "num_processes": num_processes,
            "replica_checksums": replicas,
            "train_seconds": round(train_seconds, 2),
        }
        write_json(out / PRIVATE_DIR / RUN_INFO_FILE, info)
    trainer.save_model(str(out))
    defended = trainer.accelerator.unwrap_model(trainer.model)
    if lora.use_lora and args.save_merged and _is_main(state):
        _save_merged(defended, processor, out / "merged")
    defended.eval()
    return defended, train_seconds


def evaluate_after(args, config, lora, result: RunResult, defended, processor, inputs: RunInputs, image, state):
    """The attack on the defended model, the before/after comparison, utility; reports and the public summary."""
    from .evaluation import compare_results

    result.after = _attack(args, config, defended, processor, inputs, state)
    result.comparison = compare_results(result.before, result.after, inputs.names)
    result.utility = _utility(args, config, defended, processor, inputs, image, state)
    if _is_main(state):
        result.summary = write_run_reports(args, config, lora, result, 1 if state is None else state.num_processes)


def write_run_reports(args, config, lora, result: RunResult, num_processes: int) -> dict[str, Any]:
    """Reports with names under private/report; the name-free `unlearning_summary.json` beside the model."""
    from .evaluation import public_summary, write_reports
    from .evaluation.report import assert_no_names

    out = Path(config.output_dir)
    hyper = hyperparameters(config, lora, num_processes)
    settings = {**hyper, "train_seconds": round(result.train_seconds, 1)}
    settings.update({k: v for k, v in asdict(args).items() if k not in ("forget_names", "cover_names")})
    report_dir = out / PRIVATE_DIR / REPORT_DIR
    write_reports(
        report_dir, result.after, before=result.before, comparison=result.comparison, utility=result.utility,
        settings=settings,
    )  # fmt: skip
    result.before.save(report_dir / ATTACK_BEFORE_FILE)
    summary = public_summary(result.after, comparison=result.comparison, utility=result.utility, before=result.before)
    summary["defense"] = {
        **config.method_record(),
        "defense": config.towers,
        "use_lora": lora.use_lora,
        "num_forgotten": len(result.forget_names),
        "max_steps": config.max_steps,
        "steps_trained": result.steps_trained,
        "train_seconds": round(result.train_seconds, 1),
    }
    if result.forgotten_checks:
        summary["defense"]["forgotten_checks"] = result.forgotten_checks
    if result.method_details:
        summary["defense"]["details"] = result.method_details
    summary["hyperparameters"] = hyper
    assert_no_names(summary, list(result.forget_names) + [p.name for p in result.after.people])
    write_json(out / SUMMARY_FILE, summary)
    return summary


def hyperparameters(config: UnlearningConfig, lora: LoraArguments, num_processes: int) -> dict[str, Any]:
    """The run's method and optimiser settings (name-free: the forget list is never a setting)."""
    hyper = {k: getattr(config, k) for k in config.hyperparameter_keys()}
    hyper["num_processes"] = num_processes
    hyper["use_lora"] = lora.use_lora
    if lora.use_lora:
        hyper.update(lora_r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout)
        hyper["lora_target_modules"] = lora.target_modules(config.towers)
    return hyper


def take_publish_request(args: UnlearnArguments, config: UnlearningConfig) -> str | None:
    """`--push_to_hub`: checked before anything slow, then taken away from the Trainer (whose own push would
    upload the whole output folder, `private/` included); `publish_run` publishes after the run instead."""
    if config.hub_private_repo is not None:
        raise ValueError("use --hub_private true|false (hub_private_repo is not used by this toolkit)")
    if not config.push_to_hub:
        return None
    from .hub.card import as_hub_id

    if not config.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id OWNER/NAME (the repo to publish to)")
    if as_hub_id(args.base_model_id) is None:
        raise ValueError(
            "--push_to_hub needs --base_model_id OWNER/BASE: the Hub id of the base model, for the card and the "
            "adapter config (a local path is never published)"
        )
    if not args.evaluate:
        raise ValueError("--push_to_hub needs --evaluate true: the model card carries the attack's numbers")
    config.push_to_hub = False
    return config.hub_model_id


def publish_run(args: UnlearnArguments, config: UnlearningConfig, hub_model_id, result: RunResult) -> None:
    """The run folder's model card (always) and, with --push_to_hub, the guarded one-commit publish."""
    from .hub import publish, write_model_card

    out = Path(config.output_dir)
    if (out / SUMMARY_FILE).is_file():
        write_model_card(out, base_model_id=args.base_model_id, license=args.license, hub_model_id=hub_model_id)
    if hub_model_id is None:
        return
    published = publish(
        out,
        hub_model_id,
        args.base_model_id,
        private=args.hub_private,
        revision=config.hub_revision,
        create_pr=args.hub_create_pr,
        license=args.license,
    )
    result.summary["published"] = {"repo_id": published.repo_id, "commit_url": published.commit_url}
    print(f"published to {published.repo_id}: {published.commit_url or published.pr_url}")


# ----------------------------------------------------------------------------------------------------------
# Helpers


def _is_main(state) -> bool:
    return state is None or state.is_main_process


def _check_required(args: UnlearnArguments, config: UnlearningConfig) -> None:
    if not args.model_name_or_path:
        raise ValueError("model_name_or_path is required (a local folder or a Hub id)")
    if not config.output_dir:
        raise ValueError("output_dir is required")


def _resume_checkpoint(config: UnlearningConfig) -> str | None:
    """`resume_from_checkpoint`: a checkpoint folder, or 'true' / 'last' for the newest one in output_dir."""
    wanted = config.resume_from_checkpoint
    if wanted is None or str(wanted).lower() in ("", "false", "none"):
        return None
    if str(wanted).lower() in ("true", "last", "latest"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
        if last is None:
            raise FileNotFoundError(
                f"resume_from_checkpoint={wanted}: no checkpoint-* folder in {config.output_dir!r}"
            )
        return last
    if not Path(wanted).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint: checkpoint folder {str(wanted)!r} does not exist")
    return str(wanted)


def _attack(args, config, model, processor, inputs: RunInputs, state):
    from .evaluation import run_idia

    return run_idia(
        model,
        processor,
        inputs.faces,
        membership=inputs.membership,
        photo_indices=inputs.eval_indices,
        accelerator=state,
        progress=args.progress and _is_main(state),
        num_photos=args.num_photos,
        tau=args.tau,
        num_candidates=args.num_candidates,
        seed=config.seed,
    )


def _check_people_have_photos(faces: FaceSource, names: list[str], where: str) -> None:
    missing = []
    for position, name in enumerate(names, start=1):
        try:
            faces.resolve(name)
        except KeyError:
            missing.append(f"#{position}")
    if missing:
        raise ValueError(
            f"forget-list {'entry' if len(missing) == 1 else 'entries'} {', '.join(missing)} (positions from 1) have no photos in {where}: the attack needs "
            "a folder of photos per person named like the list entry (case, spaces, underscores and accents may "
            "differ). Check the spelling, or add the photos."
        )


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


def _save_trigger_grid(trainer, path: Path, num_images: int = 32) -> None:
    """The first trigger images of step 0, drawn and rendered by the code that trains (one process's view)."""
    from .data.sampling import sample_image_batch
    from .data.tensor_triggers import uint8_to_pil
    from .data.triggers import save_trigger_grid

    args = trainer.args
    batch = sample_image_batch(
        trainer.trigger_photos,
        trainer.clean_images,
        args.num_clean_images,
        min(num_images, args.num_trigger_images),
        trainer.image_size,
        args.seed,
        step=0,
        aug=trainer.trigger_aug,
        pil=False,
    )
    images = uint8_to_pil(trainer.trigger_renderer.render(batch.specs))
    save_trigger_grid(images, str(path), ncols=8, upscale=max(1, 128 // trainer.image_size))


def _save_merged(model, processor, path: Path) -> None:
    import copy

    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(path)
    processor.save_pretrained(path)


@torch.no_grad()
def _utility(args, config, defended, processor, inputs: RunInputs, image: ImageData, state) -> dict[str, Any]:
    """Zero-shot accuracy before/after and the embedding similarities of docs/method.md, "Utility"."""
    original, _ = load_clip(args.model_name_or_path)
    utility: dict[str, Any] = {}
    if args.objects:
        utility.update(_zero_shot(args, original, defended, processor, state))
    rng = np.random.default_rng([config.seed, 555])
    if "captions" in config.run_data():  # the backdoor's similarities (method.md section 5)
        utility["text"] = _text_similarities(config, original, defended, processor, inputs, rng)
    if "image" in config.run_data():
        utility["image"] = _image_similarities(original, defended, processor, inputs, image, rng)
    return utility


def _zero_shot(args, original, defended, processor, state) -> dict[str, Any]:
    from .evaluation import zero_shot_folder

    out = {}
    for label, model in (("before", original), ("after", defended)):
        acc = zero_shot_folder(
            model, processor, args.objects, args.object_templates, accelerator=state, progress=False
        )
        out[f"zero_shot_{label}"] = {k: acc[k] for k in ("top1", "top5", "num_images", "num_classes") if k in acc}
    return out


def _text_similarities(config, original, defended, processor, inputs: RunInputs, rng) -> dict[str, float]:
    from .evaluation import text_similarities

    clean = filter_clean_captions(inputs.captions, inputs.names, min_words=2)
    sample = [clean[i] for i in rng.choice(len(clean), min(512, len(clean)), replace=False)]
    sims = {
        "sim_clean": text_similarities(original, defended, processor.tokenizer, clean_captions=sample)["sim_clean"]
    }
    if config.target_mode != "per_name":
        targets = TargetPhrases.build(inputs.names, config.target_mode, config.target_phrase, None, config.seed)
        poisoned, target_caps, _ = sample_poisoned_pairs(clean, targets, 256, rng)
        sims.update(text_similarities(original, defended, processor.tokenizer, None, poisoned, target_caps))
    return sims


def _image_similarities(original, defended, processor, inputs: RunInputs, image: ImageData, rng) -> dict[str, float]:
    from .evaluation import image_similarities

    faces, split, names = inputs.faces, inputs.split, inputs.names
    removed = [im for n in names for im in faces.load(n, split["eval"][faces.resolve(n)])]
    pool = image.clean_images
    clean_sample = [pool[i] for i in rng.choice(len(pool), min(256, len(pool)), replace=False)]
    others = [n for n in faces.names() if n not in set(names)][:40]
    person_images = [im for n in others for im in faces.load(n, split["trigger"][n][:5])]
    return image_similarities(
        original,
        defended,
        processor,
        image.target,
        removed_images=removed,
        clean_images=clean_sample,
        person_images=person_images,
    )


def _format_checks(checks: list[dict], max_steps) -> str:
    """One line on stop_when_forgotten: when the check first passed and how the run ended."""
    passed = [c["step"] for c in checks if c["forgotten"]]
    first = f"first passed at step {passed[0]}" if passed else "never passed"
    return f"stop_when_forgotten: {len(checks)} checks, {first} (max_steps {max_steps})"


def _people(count: int) -> str:
    return f"{count} {'person' if count == 1 else 'people'}"


def format_run_summary(result: RunResult) -> str:
    """A compact before/after table for the terminal (aggregates only)."""
    if result.after is None:
        return f"Defended model saved to {result.output_dir} ({_people(len(result.forget_names))} removed)."
    removed = {normalize_name(n) for n in result.forget_names}

    def group(res, kind):
        people = [p for p in res.people if p.membership == ("non_member" if kind == "non" else "member")]
        if kind == "removed":
            people = [p for p in people if normalize_name(p.name) in removed]
        elif kind == "kept":
            people = [p for p in people if normalize_name(p.name) not in removed]
        if not people:
            return None, None
        return sum(p.flagged for p in people) / len(people), sum(p.correct_templates for p in people) / len(people)

    def pct(x):
        return "   n/a" if x is None else f"{100 * x:6.1f}%"

    def num(x):
        return "   n/a" if x is None else f"{x:7.1f}"

    d = result.summary.get("defense", {})
    lines = [
        f"{d.get('method_title', 'backdoor unlearning').capitalize()}: {d.get('towers', d.get('defense'))} "
        f"tower{'s' if d.get('towers') == 'both' else ''}{' (LoRA)' if d.get('use_lora') else ''}, "
        f"{_people(len(result.forget_names))} removed, {d.get('steps_trained', d.get('max_steps'))} steps, "
        f"{result.train_seconds:.1f} s",
        f"{'':40s}{'before':>8s}{'after':>9s}",
    ]
    if result.forgotten_checks:
        lines.insert(1, _format_checks(result.forgotten_checks, d.get("max_steps")))
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
        f"model: {result.output_dir}   report with names (private): {result.output_dir / PRIVATE_DIR / REPORT_DIR}"
    )
    return "\n".join(lines)
