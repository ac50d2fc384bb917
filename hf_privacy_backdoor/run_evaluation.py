"""One evaluation, end to end: load the model -> the attack (privacy) -> zero-shot accuracy (utility) -> the
comparison with an earlier attack -> reports.

`recipes/evaluate_model.py` parses `EvaluateArguments` and calls `run_evaluation`. Launched with several
processes, the photos and prompts are shared between them and the result is identical to one process's.
The reports name people: they are local files, never published as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.faces import load_face_folder
from .data.images import load_photo_split
from .distributed import distributed_state
from .evaluation import AttackResult, Comparison, compare_results, run_idia, write_reports, zero_shot_folder
from .modeling import load_clip


@dataclass
class EvaluateArguments:
    """What to attack, on which photos, and where the reports go (`python recipes/evaluate_model.py --help`)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "CLIP model to attack: a local save_pretrained folder or a Hub id (required)."}
    )
    adapter: str | None = field(
        default=None, metadata={"help": "A LoRA adapter (folder or Hub id) to apply on top of the model."}
    )
    faces: str | None = field(
        default=None,
        metadata={"help": "Face folder: <faces>/<First_Last>/<n>.png, one sub-folder per person (required)."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where the reports are written (required)."})
    membership: str | None = field(
        default=None,
        metadata={
            "help": "JSON with 'members' and 'non_members' name lists (e.g. a synthetic world.json), for TPR/FPR."
        },
    )
    people: list[str] | None = field(
        default=None, metadata={"help": "Evaluate only these people (names as 'First Last'); default: everyone."}
    )
    photo_split: str | None = field(
        default=None,
        metadata={
            "help": "JSON {name: [photo indices]} (or with an 'eval' entry holding that mapping) restricting the "
            "listed people to their evaluation photos; trigger photos must never be evaluated."
        },
    )
    objects: str | None = field(
        default=None,
        metadata={"help": "Labelled image folder <objects>/<class_folder>/<n>.png for zero-shot accuracy (utility)."},
    )
    object_templates: str = field(
        default="auto",
        metadata={
            "help": "Zero-shot templates: 'auto' (the world.json next to the faces/objects folder if it has "
            "'object_templates', else ImageNet's 80), 'imagenet', a world.json, or a text file (one '{}' template "
            "a line)."
        },
    )
    num_photos: int = field(
        default=20, metadata={"help": "Photos attacked per person (k); people with fewer are left out."}
    )
    tau: int = field(default=1, metadata={"help": "Correct templates (of 21) needed to flag a person."})
    num_candidates: int = field(
        default=1000, metadata={"help": "Number of candidate names: the true names plus generated ones."}
    )
    candidates_file: str | None = field(
        default=None,
        metadata={
            "help": "Text file with one candidate name a line, instead of generated names (must hold every true name)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for the generated candidates and the choice of photos."})
    before: str | None = field(
        default=None,
        metadata={"help": "The attack.json (or report.json) of an earlier run, to judge a defense against."},
    )
    removed: list[str] | None = field(
        default=None, metadata={"help": "Names of the people the defense removed (needs --before)."}
    )
    text_batch_size: int = field(default=1024, metadata={"help": "Prompts per text batch."})
    image_batch_size: int = field(default=256, metadata={"help": "Photos per image batch."})
    quiet: bool = field(default=False, metadata={"help": "Hide the progress bars."})
    push_metrics_to: str | None = field(
        default=None,
        metadata={
            "help": "OWNER/NAME of a published defended model: update its card's metadata and results table with "
            "this evaluation (one commit, no weights). Names in --removed are scanned for first."
        },
    )

    def __post_init__(self):
        missing = [f"--{n}" for n in ("model_name_or_path", "faces", "output_dir") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"missing required arguments: {', '.join(missing)} (on the command line or in --config)")
        if self.removed and not self.before:
            raise ValueError("--removed needs --before: the attack result of the model before the defense")
        for name in ("faces", "membership", "photo_split", "objects", "candidates_file", "before"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise FileNotFoundError(f"--{name} {value!r} does not exist")
        if self.num_photos < 1 or self.tau < 1 or self.num_candidates < 1:
            raise ValueError("--num_photos, --tau and --num_candidates must be positive")


@dataclass
class EvaluationResult:
    """What one evaluation found; `report_paths` is None on every process but the main one."""

    attack: AttackResult
    comparison: Comparison | None
    utility: dict[str, Any]
    report_paths: dict[str, Path] | None
    num_processes: int = 1
    metrics_commit: str | None = None  # the commit URL of --push_metrics_to


def run_evaluation(args: EvaluateArguments) -> EvaluationResult:
    """Attack the model (and measure its utility when `args.objects` is set); the main process writes reports."""
    state = _process_state()
    model, processor = _load_model(args, state.device)
    attack = _run_attack(args, model, processor, state)
    utility = _run_utility(args, model, processor, state)
    before = AttackResult.load(args.before) if args.before else None
    comparison = compare_results(before, attack, args.removed or []) if before is not None else None
    result = EvaluationResult(attack, comparison, utility, None, state.num_processes)
    if state.is_main_process:
        result.report_paths = _write_reports(args, attack, before, comparison, utility, state.num_processes)
        if args.push_metrics_to:
            result.metrics_commit = _push_metrics(args, result, before)
    state.wait_for_everyone()
    return result


def _push_metrics(args: EvaluateArguments, result: EvaluationResult, before) -> str:
    """The card of `--push_metrics_to` gets this evaluation's name-free numbers (the public summary)."""
    from .evaluation import public_summary
    from .hub import push_metrics

    zero_shot = result.utility.get("zero_shot")
    utility = {"zero_shot_after": zero_shot} if zero_shot else None
    summary = public_summary(result.attack, comparison=result.comparison, utility=utility, before=before)
    scanned = [*(args.removed or []), *(p.name for p in result.attack.people)]  # no person's name goes on a card
    return push_metrics(args.push_metrics_to, summary, forget_names=scanned)


def resolve_object_templates(args: EvaluateArguments) -> str:
    """`--object_templates auto`: the world.json beside the faces or objects folder if it has templates."""
    if args.object_templates != "auto":
        return args.object_templates
    for folder in (Path(args.faces).parent, Path(args.objects).parent):
        world = folder / "world.json"
        if world.is_file() and "object_templates" in json.loads(world.read_text()):
            return str(world)
    return "imagenet"


def _process_state():
    """accelerate's state, after `distributed_state` formed the (gloo on CPU) group of a multi-process launch."""
    from accelerate import PartialState

    distributed_state()
    return PartialState()


def _load_model(args: EvaluateArguments, device):
    name = args.model_name_or_path
    looks_local = Path(name).is_absolute() or name.startswith(".") or name.count("/") != 1 or Path(name).exists()
    if looks_local and not Path(name).is_dir():
        raise FileNotFoundError(f"--model_name_or_path {name!r}: no such model folder")
    try:
        model, processor = load_clip(name, adapter=args.adapter)
    except OSError as err:
        raise FileNotFoundError(f"--model_name_or_path {name!r} cannot be loaded as a CLIP model: {err}") from err
    return model.to(device), processor


def _run_attack(args: EvaluateArguments, model, processor, state) -> AttackResult:
    candidates = None
    if args.candidates_file:
        candidates = [line.strip() for line in Path(args.candidates_file).read_text().splitlines() if line.strip()]
    result = run_idia(
        model,
        processor,
        load_face_folder(args.faces),
        people=args.people,
        membership=args.membership,
        num_photos=args.num_photos,
        tau=args.tau,
        num_candidates=args.num_candidates,
        candidates=candidates,
        seed=args.seed,
        photo_indices=load_photo_split(args.photo_split) if args.photo_split else None,
        text_batch_size=args.text_batch_size,
        image_batch_size=args.image_batch_size,
        accelerator=state,
        progress=not args.quiet,
    )
    result.settings.model = args.model_name_or_path
    return result


def _run_utility(args: EvaluateArguments, model, processor, state) -> dict[str, Any]:
    if not args.objects:
        return {}
    templates = resolve_object_templates(args)
    zero_shot = zero_shot_folder(
        model,
        processor,
        args.objects,
        templates,
        batch_size=args.image_batch_size,
        text_batch_size=args.text_batch_size,
        accelerator=state,
        progress=not args.quiet,
    )
    zero_shot["templates"] = templates
    return {"zero_shot": zero_shot}


def _write_reports(args, attack, before, comparison, utility, num_processes: int) -> dict[str, Path]:
    settings = {k: v for k, v in vars(args).items() if v is not None}
    settings["num_processes"] = num_processes
    return write_reports(args.output_dir, attack, before, comparison, utility, settings)


def format_evaluation_summary(result: EvaluationResult) -> str:
    """The end-of-run table: attack TPR/FPR, the change for the removed people, zero-shot accuracy."""
    t = result.attack.totals()

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    rows = [
        ("people evaluated", str(t["num_people"])),
        ("left out (< k photos)", str(t["num_skipped"])),
        ("TPR (members)", f"{pct(t['tpr'])} ({t['flagged_members']}/{t['num_members']})"),
        ("FPR (non-members)", f"{pct(t['fpr'])} ({t['flagged_non_members']}/{t['num_non_members']})"),
    ]
    if result.comparison is not None:
        head = result.comparison.headline()
        rows.append(
            ("TPR removed: before -> after", f"{pct(head['removed_tpr_before'])} -> {pct(head['removed_tpr_after'])}")
        )
        rows += [(c.replace("_", " "), str(n)) for c, n in result.comparison.counts().items()]
    if "zero_shot" in result.utility:
        zero_shot = result.utility["zero_shot"]
        rows.append(("zero-shot top-1 / top-5", f"{pct(zero_shot['top1'])} / {pct(zero_shot['top5'])}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if result.report_paths is not None:
        lines.append(f"report: {result.report_paths['markdown']}")
    return "\n".join(lines)
