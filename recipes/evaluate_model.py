"""Evaluate a CLIP model: the identity inference attack (privacy) and zero-shot accuracy (utility).

One process:

    python recipes/evaluate.py --model_name_or_path DIR --faces WORLD/faces --membership WORLD/world.json \\
        --objects WORLD/objects --output_dir out/after

Several processes (photos and prompts are shared between them; the result is identical):

    accelerate launch --multi_gpu --num_processes 2 recipes/evaluate.py --model_name_or_path DIR \\
        --faces WORLD/faces --membership WORLD/world.json --output_dir out/after

Judging a defense: evaluate the original model first, then the defended one against it, both on the
evaluation photos only (`--photo_split`: the trigger photos the defense trained on are never evaluated):

    python recipes/evaluate.py --model_name_or_path ORIGINAL --faces WORLD/faces --membership WORLD/world.json \\
        --photo_split DEFENSE/photo_split.json --output_dir out/before
    python recipes/evaluate.py --model_name_or_path DEFENDED --faces WORLD/faces --membership WORLD/world.json \\
        --photo_split DEFENSE/photo_split.json --before out/before/attack.json --removed "Ada Lovelace" \\
        --output_dir out/after

From a YAML file (command-line flags win): `python recipes/evaluate.py --config recipes/evaluate_synthetic.yaml`.
Writes `attack.json`, `report.json`, `report.md` and `correct_templates.png` to `--output_dir`.
"""

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


# this file is named like the `evaluate` package: keep its folder off the import path
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]


@dataclass
class EvaluateArguments:
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
    num_photos: int = field(default=20, metadata={"help": "k: photos per person; people with fewer are left out."})
    tau: int = field(default=1, metadata={"help": "Correct templates (of 21) needed to flag a person."})
    num_candidates: int = field(
        default=1000, metadata={"help": "Candidate names: the true names plus generated ones."}
    )
    candidates_file: str | None = field(
        default=None,
        metadata={
            "help": "Text file with one candidate name a line, instead of generated names (must hold every true name)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for the generated candidates and the choice of photos."})
    before: str | None = field(
        default=None, metadata={"help": "attack.json (or report.json) of an earlier run, to judge a defense against."}
    )
    removed: list[str] | None = field(
        default=None, metadata={"help": "Names of the people the defense removed (needs --before)."}
    )
    text_batch_size: int = field(default=1024, metadata={"help": "Prompts per text batch."})
    image_batch_size: int = field(default=256, metadata={"help": "Photos per image batch."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})

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


def parse_args(argv: list[str] | None = None) -> EvaluateArguments:
    """Parse flags; `--config file.yaml` supplies defaults that command-line flags override."""
    from hf_privacy_backdoor.cli import parse_args as parse_dataclasses

    return parse_dataclasses([EvaluateArguments], argv)[0]


def load_photo_split(path: str) -> dict[str, list[int]]:
    data = json.loads(Path(path).read_text())
    for key in ("eval", "evaluation", "eval_indices"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"--photo_split {path!r} must map names to lists of photo indices")
    return data


def resolve_object_templates(args: EvaluateArguments) -> str:
    if args.object_templates != "auto":
        return args.object_templates
    for folder in (Path(args.faces).parent, Path(args.objects).parent):
        world = folder / "world.json"
        if world.is_file() and "object_templates" in json.loads(world.read_text()):
            return str(world)
    return "imagenet"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from hf_privacy_backdoor.cli import setup_logging
    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.distributed import distributed_state
    from hf_privacy_backdoor.evaluation import AttackResult, compare_results, run_idia, write_reports
    from hf_privacy_backdoor.evaluation.utility import zero_shot_folder
    from hf_privacy_backdoor.modeling import load_clip

    setup_logging()
    from accelerate import PartialState

    distributed_state()  # forms the (gloo on CPU) process group when launched with several processes
    accelerator = PartialState()
    progress = not args.quiet
    name = args.model_name_or_path
    looks_local = Path(name).is_absolute() or name.startswith(".") or name.count("/") != 1 or Path(name).exists()
    if looks_local and not Path(name).is_dir():
        raise FileNotFoundError(f"--model_name_or_path {name!r}: no such model folder")
    try:
        model, processor = load_clip(name, adapter=args.adapter)
    except OSError as err:
        raise FileNotFoundError(f"--model_name_or_path {name!r} cannot be loaded as a CLIP model: {err}") from err
    model.to(accelerator.device)
    faces = load_face_folder(args.faces)
    candidates = None
    if args.candidates_file:
        candidates = [line.strip() for line in Path(args.candidates_file).read_text().splitlines() if line.strip()]

    result = run_idia(
        model,
        processor,
        faces,
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
        accelerator=accelerator,
        progress=progress,
    )
    result.settings.model = args.model_name_or_path

    utility = {}
    if args.objects:
        templates = resolve_object_templates(args)
        utility["zero_shot"] = zero_shot_folder(
            model,
            processor,
            args.objects,
            templates,
            batch_size=args.image_batch_size,
            text_batch_size=args.text_batch_size,
            accelerator=accelerator,
            progress=progress,
        )
        utility["zero_shot"]["templates"] = templates

    before = AttackResult.load(args.before) if args.before else None
    comparison = compare_results(before, result, args.removed or []) if before is not None else None

    if accelerator.is_main_process:
        settings = {k: v for k, v in vars(args).items() if v is not None}
        settings["num_processes"] = accelerator.num_processes
        paths = write_reports(args.output_dir, result, before, comparison, utility, settings)
        print_summary(result, comparison, utility, paths["markdown"])
    accelerator.wait_for_everyone()


def print_summary(result, comparison, utility, report_path) -> None:
    t = result.totals()

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    rows = [
        ("people evaluated", str(t["num_people"])),
        ("left out (< k photos)", str(t["num_skipped"])),
        ("TPR (members)", f"{pct(t['tpr'])} ({t['flagged_members']}/{t['num_members']})"),
        ("FPR (non-members)", f"{pct(t['fpr'])} ({t['flagged_non_members']}/{t['num_non_members']})"),
    ]
    if comparison is not None:
        head = comparison.headline()
        rows.append(
            ("TPR removed: before -> after", f"{pct(head['removed_tpr_before'])} -> {pct(head['removed_tpr_after'])}")
        )
        rows += [(c.replace("_", " "), str(n)) for c, n in comparison.counts().items()]
    if "zero_shot" in utility:
        rows.append(
            ("zero-shot top-1 / top-5", f"{pct(utility['zero_shot']['top1'])} / {pct(utility['zero_shot']['top5'])}")
        )
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    print(f"report: {report_path}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
