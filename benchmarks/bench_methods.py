"""The methods side by side: every registered method x towers x people removed x seeds, each tuned on the same
declared budget, selected without the evaluation photos.

Per cell (method, towers, removed, seed): each setting of the method's grid (`GRIDS`: learning rate x steps;
backdoor: its shipped recipe; slug: its own step-size search) trains once without evaluation, and the one kept
is chosen on **trigger photos** (the cheap attack of `stop_check.ForgottenCheck` on the split's trigger halves:
removed people found, then kept people lost) and on **a held-out object split** (zero-shot top-1 on the even
images of each object class), in that order. Only the chosen setting is then evaluated: the attack on the
evaluation photos and zero-shot top-1 on the odd object images (never seen by the selection). Reported per
cell: removed TPR, kept TPR and wrongly unlearned share, FPR, top-1 drop, seconds of training, parameters
changed, and the data the method needed.

    OMP_NUM_THREADS=1 python benchmarks/bench_methods.py                       # everything (hours on 2 cores)
    OMP_NUM_THREADS=1 python benchmarks/bench_methods.py --methods backdoor slug --removed 1 2 --seeds 0 \\
        --towers both --name methods_subset

Writes `<output_dir>/<name>.json` and `<name>.md`. People removed are drawn with the seed among the members (the
default world's attack flags all of them before; the before-TPR column shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the declared tuning budget: at most 2 settings per method (learning rate, steps)
GRIDS = {
    "backdoor": [{}],  # the shipped recipe (its settings were measured on this world before this benchmark)
    "retain_finetune": [{"learning_rate": 1e-5, "max_steps": 50}, {"learning_rate": 1e-4, "max_steps": 50}],
    "grad_ascent": [{"learning_rate": 3e-6, "max_steps": 50}, {"learning_rate": 1e-5, "max_steps": 50}],
    "grad_diff": [{"learning_rate": 1e-5, "max_steps": 50}, {"learning_rate": 3e-5, "max_steps": 50}],
    "slug": [{}],  # one gradient; its layer and step search is its tuning
}
TOWERS = {"backdoor": ["text", "image", "both"]}  # every other method: all three as well


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--towers", nargs="+", default=["text", "image", "both"], choices=["text", "image", "both"])
    parser.add_argument("--removed", nargs="+", type=int, default=[1, 2, 8, 32])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output_dir", default="benchmarks/results")
    parser.add_argument("--name", default="methods")
    parser.add_argument("--note", default="", help="a line for the top of the table (e.g. 'subset: ...')")
    return parser.parse_args(argv)


def split_objects(objects: Path, tmp: Path) -> tuple[Path, Path]:
    """Symlink folders: even-indexed images of each class for selection, odd-indexed for evaluation."""
    select, evaluate = tmp / "objects_select", tmp / "objects_eval"
    for label in sorted(p.name for p in objects.iterdir() if p.is_dir()):
        images = sorted((objects / label).iterdir())
        for folder, part in ((select, images[0::2]), (evaluate, images[1::2])):
            (folder / label).mkdir(parents=True, exist_ok=True)
            for image in part:
                (folder / label / image.name).symlink_to(image)
    return select, evaluate


def recipe(method: str, towers: str) -> Path:
    name = towers if method == "backdoor" else method
    return ROOT / "recipes" / f"synthetic_{name}.yaml"


def run(method, towers, names, seed, out, setting, extra):
    from hf_privacy_backdoor.cli import parse_args as parse_recipe
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning

    argv = ["--config", str(recipe(method, towers)), "--output_dir", str(out), "--forget_names", *names]
    argv += ["--forget_auto", "0", "--seed", str(seed), "--progress", "false", "--disable_tqdm", "true"]
    argv += ["--towers", towers, "--defense", towers] + extra
    for key, value in setting.items():
        argv += [f"--{key}", str(value)]
    return run_unlearning(*parse_recipe(RUN_ARGUMENTS, argv))


def selection_score(model_dir: Path, world, names, seed, select_objects) -> dict:
    """Trigger-photo attack (removed found, kept lost) and top-1 on the selection half of the objects."""
    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.data.images import make_photo_split
    from hf_privacy_backdoor.evaluation import zero_shot_folder
    from hf_privacy_backdoor.modeling import load_clip
    from hf_privacy_backdoor.peft_utils import load_adapter
    from hf_privacy_backdoor.stop_check import ForgottenCheck

    base, processor = load_clip(str(world.model_dir))
    faces = load_face_folder(world.faces_dir)
    split = make_photo_split(faces, faces.names(), 0.5, seed)
    others = [m for m in world.members if m not in names]
    people = [faces.resolve(n) for n in [*names, *others]]
    check = ForgottenCheck(processor, faces, names, others, {p: split["trigger"][p] for p in people},
                           num_candidates=1000, seed=seed)  # fmt: skip
    check.baseline(base)
    if (model_dir / "adapter_config.json").is_file():
        model = load_adapter(base, str(model_dir), merge=True)
    else:
        model, _ = load_clip(str(model_dir))
    outcome = check.evaluate(model)
    top1 = zero_shot_folder(model, processor, select_objects, str(world.membership_file), progress=False)["top1"]
    return {"found": outcome.found, "kept_lost": outcome.kept_lost or 0, "select_top1": round(float(top1), 4)}


def changed_parameters(world, out: Path) -> int:
    from safetensors.torch import load_file

    if (out / "adapter_model.safetensors").is_file():
        return sum(v.numel() for v in load_file(str(out / "adapter_model.safetensors")).values())
    base, after = load_file(str(world.model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    return int(sum((after[k] != v).sum() for k, v in base.items()))


def run_cell(cell: dict, world, objects: tuple[Path, Path], tmp: Path) -> dict:
    import numpy as np

    method, towers, removed, seed = cell["method"], cell["towers"], cell["removed"], cell["seed"]
    names = sorted(np.random.default_rng([seed, 99]).choice(sorted(world.members), removed, replace=False).tolist())
    tried = []
    for i, setting in enumerate(GRIDS[method]):
        out = tmp / f"{method}_{towers}_{removed}_{seed}_{i}"
        start = time.time()
        run(method, towers, names, seed, out, setting, ["--evaluate", "false"])
        tried.append({**setting, **selection_score(out, world, names, seed, objects[0]), "s": time.time() - start})
    best = min(range(len(tried)), key=lambda i: (tried[i]["found"], tried[i]["kept_lost"], -tried[i]["select_top1"]))
    out = tmp / f"{method}_{towers}_{removed}_{seed}_final"
    extra = ["--objects", str(objects[1]), "--evaluate", "true"]
    result = run(method, towers, names, seed, out, GRIDS[method][best], extra)
    s = result.summary
    un, util = s["unlearning"], s["utility"]
    kept = un["num_kept_members"] or 1
    return {
        **cell,
        "setting": GRIDS[method][best],
        "tried": tried,
        "removed_tpr_before": un["removed_tpr_before"],
        "removed_tpr": un["removed_tpr_after"],
        "kept_tpr": un["kept_member_tpr_after"],
        "wrongly_unlearned_pct": round(100 * un["counts"]["wrongfully_unlearned"] / kept, 1),
        "fpr": s["idia"]["fpr"],
        "top1_drop_points": round(100 * (util["zero_shot_before"]["top1"] - util["zero_shot_after"]["top1"]), 2),
        "train_seconds": s["defense"]["train_seconds"],
        "params_changed": changed_parameters(world, out),
        "data_needed": s["defense"]["data_needed"],
    }


def write_results(cells: list[dict], args, seconds: float) -> None:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"note": args.note, "grids": GRIDS, "selection": SELECTION, "wall_s": round(seconds), "per_cell": cells}
    (out / f"{args.name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    head = "| method | towers | removed | seed | setting | removed TPR | kept TPR | wrongly unl. % | FPR | top-1 drop (pts) "
    head += "| train s | params changed | data needed |"
    lines = [f"# Methods side by side{' (' + args.note + ')' if args.note else ''}", "", SELECTION, "", head]
    lines.append("|" + "---|" * 13)
    for c in cells:
        setting = ", ".join(f"{k} {v}" for k, v in c["setting"].items()) or "recipe"
        lines.append(
            f"| {c['method']} | {c['towers']} | {c['removed']} | {c['seed']} | {setting} | {c['removed_tpr']:.2f} | "
            f"{c['kept_tpr']:.2f} | {c['wrongly_unlearned_pct']} | {c['fpr']:.3f} | {c['top1_drop_points']} | "
            f"{c['train_seconds']} | {c['params_changed']:,} | {c['data_needed']} |"
        )
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


SELECTION = (
    "Selection rule: per cell, each setting of the method's declared grid (at most 2 settings: "
    + "; ".join(f"{m}: {len(g)}" for m, g in GRIDS.items())
    + ") trains once; the kept setting has the fewest removed people found by the cheap attack on trigger-half "
    "photos, then the fewest kept people lost there, then the best zero-shot top-1 on the even-indexed object "
    "images. The reported numbers come from the evaluation photos and the odd-indexed object images, which the "
    "selection never sees. Backdoor uses its shipped recipe; slug's own layer and step search is its tuning."
)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from hf_privacy_backdoor.cli import setup_logging
    from hf_privacy_backdoor.synthetic import get_or_build_synthetic

    setup_logging()
    world = get_or_build_synthetic(progress=False)
    os.environ["SYNTHETIC_DIR"] = str(world.root)
    cells = [
        {"method": m, "towers": t, "removed": n, "seed": s}
        for m in args.methods
        for t in args.towers
        if t in TOWERS.get(m, ["text", "image", "both"])
        for n in args.removed
        for s in args.seeds
    ]
    start, done = time.time(), []
    with tempfile.TemporaryDirectory() as tmp:
        objects = split_objects(Path(world.objects_dir), Path(tmp))
        for cell in cells:
            done.append(run_cell(cell, world, objects, Path(tmp)))
            print(f"{cell}: removed TPR {done[-1]['removed_tpr']}, top-1 drop {done[-1]['top1_drop_points']}")
            write_results(done, args, time.time() - start)
    return done


if __name__ == "__main__":
    main()
