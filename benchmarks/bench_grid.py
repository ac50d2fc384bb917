"""Forgetting-quality grid: defense x number of people removed x seed, on a world with 96 members.

First shows the benchmark world's base model (the attack must find its members and not its non-members: TPR >= 0.9,
FPR <= 0.05), then runs the default synthetic recipe (`recipes/synthetic_<defense>.yaml`, unchanged) once per
cell, with `forget_auto` removing N of the members the attack flags, and checks each cell against the targets:
removed TPR 0, wrongfully unlearned <= 5%, object top-1 within 2 points of before. Cells run in parallel
processes (`--workers`, default: one per core). The world is built once and cached like the default one.

    OMP_NUM_THREADS=1 python benchmarks/bench_grid.py                       # the whole grid (hours on 2 cores)
    OMP_NUM_THREADS=1 python benchmarks/bench_grid.py --defenses text image --removed 1 4 16 64 --seeds 0 \\
        --stop_when_forgotten true
    OMP_NUM_THREADS=1 python benchmarks/bench_grid.py --quick               # default world, text, 1 and 2 removed
    python benchmarks/bench_grid.py --merge a/grid.json b/grid.json          # one table from runs made apart

Flags this script does not know go to every run (command line wins over the recipe). Writes
`<output_dir>/grid.json`, `grid.md` and `grid.png` (removed TPR and top-1 against the number removed, log2 axis,
one line per defense).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import machine_info, print_table_and_save, run_cells  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID_WORLD = {"num_members": 96, "num_non_members": 48}  # WorldConfig fields
GRID_PRETRAIN = {"steps": 2400}  # PretrainConfig fields: 96 members need more steps than the default 40
TARGETS = {"removed_tpr_after": 0.0, "wrongfully_unlearned_pct": 5.0, "top1_drop_points": 2.0}
BASE_TARGETS = {"tpr": 0.9, "fpr": 0.05}
GRID_PROBES = ("variants", "exposure")  # robustness probes a grid cell can add (cheap: no fine-tune)
ROBUSTNESS_KEYS = ("worst_variant_removed_tpr", "exposure_text_diff_auc_known", "exposure_image_diff_auc_known")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defenses", nargs="+", default=["text", "image", "both"], choices=["text", "image", "both"])
    parser.add_argument("--removed", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--world", choices=["grid", "default"], default="grid", help="96-member world or default")
    parser.add_argument(
        "--tier", choices=["small", "base"], default="small", help="the world tier's CLIP (base: one that sees faces)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cells run in parallel")
    parser.add_argument("--quick", action="store_true", help="default world, text, removed 1 2, seed 0, 40 steps")
    parser.add_argument("--output_dir", default="benchmarks/results", help="grid.json, grid.md, grid.png go here")
    parser.add_argument("--name", default="grid", help="file stem of the outputs")
    parser.add_argument(
        "--robustness_probes",
        default="",
        help="also probe every cell's defended model (comma-separated, of variants,exposure): adds the worst name "
        "variant's removed TPR and the exposure AUCs among the people the base model knows",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="GRID_JSON",
        help="run nothing: join the cells of earlier grid JSONs (same world, recipes and recipe flags, no cell "
        "twice) into one table, JSON and plot; with --defenses, only the cells of those defenses",
    )
    args, recipe_flags = parser.parse_known_args(argv)
    args.defenses_given = any(
        a == "--defenses" or a.startswith("--defenses=") for a in (sys.argv[1:] if argv is None else argv)
    )
    probes = [p.strip() for p in args.robustness_probes.split(",") if p.strip()]
    unknown = sorted(set(probes) - set(GRID_PROBES))
    if unknown:
        parser.error(f"--robustness_probes: unknown {', '.join(unknown)}; choose from {', '.join(GRID_PROBES)}")
    args.robustness_probes = ",".join(probes)
    if args.quick:
        args.world, args.defenses, args.removed, args.seeds = "default", ["text"], [1, 2], [0]
        recipe_flags = ["--max_steps", "40", "--num_candidates", "200", *recipe_flags]
    return args, recipe_flags


def world(kind: str, tier: str = "small"):
    """The cached world `kind` ("grid": 96 members; "default") with the CLIP of `tier` (built once)."""
    from hf_privacy_backdoor.synthetic import PretrainConfig, WorldConfig, get_or_build_synthetic

    if kind == "default":
        return get_or_build_synthetic(pretrain_config=PretrainConfig.for_tier(tier), progress=False)
    pretrain = PretrainConfig.for_tier(tier, **GRID_PRETRAIN)
    return get_or_build_synthetic(WorldConfig(**GRID_WORLD), pretrain, progress=False)


# ----------------------------------------------------------------------------------------------------------
# The base model


def pretrain_record(kind: str, tier: str):
    """The pretraining settings a report records (as before tiers existed for the small tier, so that earlier
    reports still merge)."""
    record = GRID_PRETRAIN if kind == "grid" else "default"
    return record if tier == "small" else {"tier": tier, **(record if kind == "grid" else {})}


def base_model_check(kind: str, tier: str = "small") -> dict:
    """The attack on the untouched model: members found (TPR), non-members not (FPR)."""
    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.evaluation import run_idia
    from hf_privacy_backdoor.modeling import load_clip

    w = world(kind, tier)
    membership = json.loads((w.root / "world" / "world.json").read_text())
    model, processor = load_clip(str(w.model_dir))
    start = time.perf_counter()
    people = membership["members"] + membership["non_members"]
    faces = load_face_folder(str(w.faces_dir))
    result = run_idia(model, processor, faces, people=people, membership=membership, progress=False)
    totals = result.totals()
    row = {
        "world": kind,
        "root": str(w.root),
        "members": len(membership["members"]),
        "non_members": len(membership["non_members"]),
        "tpr": totals["tpr"],
        "fpr": totals["fpr"],
        "attack_s": round(time.perf_counter() - start, 1),
    }
    row["meets_targets"] = row["tpr"] >= BASE_TARGETS["tpr"] and row["fpr"] <= BASE_TARGETS["fpr"]
    return row


# ----------------------------------------------------------------------------------------------------------
# One cell


def run_cell(cell: dict) -> dict:
    """One defense run (in a worker process); returns the cell's numbers from its unlearning_summary.json."""
    import torch

    torch.set_num_threads(1)
    from hf_privacy_backdoor.cli import parse_args as parse_recipe
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning
    from hf_privacy_backdoor.run_folder import RunFiles

    os.environ["SYNTHETIC_DIR"] = str(world(cell["world"], cell.get("tier", "small")).root)
    recipe = ROOT / "recipes" / f"synthetic_{cell['defense']}.yaml"
    with tempfile.TemporaryDirectory(prefix="grid_cell_") as out:
        argv = ["--config", str(recipe), "--output_dir", out, "--forget_auto", str(cell["removed"])]
        argv += ["--seed", str(cell["seed"]), "--progress", "false", "--disable_tqdm", "true", *cell["flags"]]
        start = time.perf_counter()
        run_unlearning(*parse_recipe(RUN_ARGUMENTS, argv))
        wall = time.perf_counter() - start
        summary = json.loads(RunFiles(out).summary_file.read_text())
        probed = probe_cell(out, cell) if cell.get("probes") else {}
    row = {**{k: cell[k] for k in ("defense", "removed", "seed")}, **cell_numbers(summary), **probed}
    row["misses"] += robustness_misses(row)
    return {**row, "wall_s": round(wall, 1)}


def probe_cell(run_dir: str, cell: dict) -> dict:
    """The robustness probes on the cell's defended model (the base model's exact attack only): name-free numbers."""
    from bench_robustness import role_numbers

    from hf_privacy_backdoor.robustness import RobustnessConfig, run_robustness

    start = time.perf_counter()
    config = RobustnessConfig(probes=cell["probes"], probe_base=False, progress=False)
    numbers = role_numbers(run_robustness(run_dir, config, write=False).public()["defended"])
    row = {k: numbers.get(k) for k in ROBUSTNESS_KEYS if k in numbers}
    return {**row, "probe_s": round(time.perf_counter() - start, 1)}


def robustness_misses(row: dict) -> list[str]:
    worst = row.get("worst_variant_removed_tpr")
    return [f"worst name variant removed TPR {worst:g}"] if worst else []


def cell_numbers(summary: dict) -> dict:
    """The grid's per-cell numbers, taken from a run's public summary."""
    un, util, defense = summary["unlearning"], summary.get("utility", {}), summary["defense"]
    pct = un["percentages"]
    before, after = util.get("zero_shot_before", {}), util.get("zero_shot_after", {})
    row = {
        "removed_tpr_before": un["removed_tpr_before"],
        "removed_tpr_after": un["removed_tpr_after"],
        "kept_tpr_before": un["kept_member_tpr_before"],
        "kept_tpr_after": un["kept_member_tpr_after"],
        "wrongfully_unlearned_pct": pct.get("wrongfully_unlearned"),
        "newly_recalled_pct": pct.get("newly_recalled"),
        "fpr_before": summary.get("idia_before", {}).get("fpr"),
        "fpr_after": summary.get("idia", {}).get("fpr"),
        "top1_before": before.get("top1"),
        "top1_after": after.get("top1"),
        "top5_before": before.get("top5"),
        "top5_after": after.get("top5"),
        "steps_trained": defense["steps_trained"],
        "train_s": defense["train_seconds"],
    }
    checks = defense.get("forgotten_checks") or []
    if checks:  # stop_when_forgotten: the step of the first check that passed, and every check (counts only)
        row["first_forgotten_step"] = next((c["step"] for c in checks if c.get("forgotten")), None)
        row["forgotten_checks"] = checks
    for tower in ("text", "image"):
        for key, value in (util.get(tower) or {}).items():
            if key.startswith("sim_"):
                row[f"{tower}_{key}"] = value
    row["misses"] = misses(row)
    return row


def missed_values(row: dict) -> dict[str, float | None]:
    """The targets a cell misses, each with the value that misses it (removed TPR None: not measured)."""
    out = {}
    if row["removed_tpr_after"] is None or row["removed_tpr_after"] > TARGETS["removed_tpr_after"]:
        out["removed TPR"] = row["removed_tpr_after"]
    wrong = row["wrongfully_unlearned_pct"]
    if wrong is not None and wrong > TARGETS["wrongfully_unlearned_pct"]:
        out["wrongfully unlearned %"] = wrong
    if row["top1_before"] is not None and row["top1_after"] is not None:
        drop = round(100 * (row["top1_before"] - row["top1_after"]), 4)  # float32 accuracies: 2.0000011 is 2.0
        if drop > TARGETS["top1_drop_points"]:
            out["top-1 drop (points)"] = drop
    return out


def misses(row: dict) -> list[str]:
    """Which targets a cell misses (none: the recipe holds on it)."""
    labels = {"removed TPR": "removed TPR {}", "wrongfully unlearned %": "wrongfully unlearned {:.1f}%"}
    labels["top-1 drop (points)"] = "top-1 -{:.1f} points"
    return [labels[k].format(v) for k, v in missed_values(row).items()]


MISS_FORMATS = {  # a row's misses, in this order, worst value formatted so
    "removed TPR": "{:.3f}",
    "wrongfully unlearned %": "{:.1f}",
    "top-1 drop (points)": "{:.1f}",
    "worst name variant removed TPR": "{:.3f}",
}


def group_misses(group: list[dict]) -> list[str]:
    """A (defense, removed) row's misses: per target, on how many seeds and the worst value."""
    per_seed = [missed_values(c) for c in group]
    for m, c in zip(per_seed, group):
        if c.get("worst_variant_removed_tpr"):
            m["worst name variant removed TPR"] = c["worst_variant_removed_tpr"]
    out = []
    for kind, fmt in MISS_FORMATS.items():
        values = [m[kind] for m in per_seed if kind in m]
        if values:
            known = [v for v in values if v is not None]
            worst = f"up to {fmt.format(max(known))}" if known else "not measured"
            out.append(f"{kind} {worst} on {len(values)}/{len(group)} seeds")
    return out


# ----------------------------------------------------------------------------------------------------------
# Aggregation and outputs


def aggregate(cells: list[dict]) -> list[dict]:
    """Mean and spread (population std) over seeds, per (defense, removed)."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["defense"], c["removed"]), []).append(c)
    rows = []
    for (defense, removed), group in sorted(groups.items()):
        row = {"defense": defense, "removed": removed, "seeds": sorted(c["seed"] for c in group)}
        for key, value in group[0].items():
            if isinstance(value, (int, float)) and key not in ("removed", "seed"):
                values = [c[key] for c in group if c.get(key) is not None]
                if values:
                    row[key] = round(statistics.fmean(values), 4)
                    row[f"{key}_std"] = round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0
                    if key in ROBUSTNESS_KEYS:  # the worst seed is what an attacker gets
                        row[f"{key}_max"] = round(max(values), 4)
        row["misses"] = group_misses(group)
        rows.append(row)
    return rows


def write_markdown(path: Path, base: dict, rows: list[dict], report: dict) -> None:
    def f(x, digits=3):
        return "" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))

    lines = [
        f"# Forgetting grid ({report['cells']} cells, wall time {report['wall_s']:.0f} s, "
        f"{report['workers']} workers)",
        "",
        f"World: {base['members']} members, {base['non_members']} non-members; base model TPR {f(base['tpr'])}, "
        f"FPR {f(base['fpr'])} (targets TPR >= 0.9, FPR <= 0.05: {'met' if base['meets_targets'] else 'MISSED'}).",
        f"Recipe flags: `{' '.join(report['recipe_flags']) or '(none: the recipes as they are)'}`; seeds per cell: "
        "see column. Mean over seeds (± std where more than one).",
        "",
    ]
    if report.get("merged_from"):
        parts = "; ".join(
            f"{m['file']} ({m['cells']} cells, {m['wall_s']:.0f} s"
            + (f"; {m['cells_left_out']} cells of it left out, its time scaled" if m.get("cells_left_out") else "")
            + ")"
            for m in report["merged_from"]
        )
        lines += [f"Joined from grids run one after another: {parts}.", ""]
    lines += [
        "| defense | removed | seeds | removed TPR before → after | kept TPR before → after | wrongly unlearned % | "
        "newly recalled % | FPR after | top-1 before → after | top-5 after | steps | train s | misses |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['defense']} | {r['removed']} | {','.join(map(str, r['seeds']))} | "
            f"{f(r.get('removed_tpr_before'))} → {f(r.get('removed_tpr_after'))} | "
            f"{f(r.get('kept_tpr_before'))} → {f(r.get('kept_tpr_after'))} | {f(r.get('wrongfully_unlearned_pct'), 1)} | "
            f"{f(r.get('newly_recalled_pct'), 1)} | {f(r.get('fpr_after'))} | "
            f"{f(r.get('top1_before'))} → {f(r.get('top1_after'))} | {f(r.get('top5_after'))} | "
            f"{f(r.get('steps_trained'), 0)} | {f(r.get('train_s'), 1)} | {'; '.join(r['misses']) or 'none'} |"
        )
    sims = sorted({k for r in rows for k in r if "_sim_" in k and not k.endswith("_std")})
    if sims:
        lines += ["", "| defense | removed | " + " | ".join(sims) + " |", "|---|---|" + "---|" * len(sims)]
        lines += [f"| {r['defense']} | {r['removed']} | " + " | ".join(f(r.get(k)) for k in sims) + " |" for r in rows]
    if any(k in r for r in rows for k in ROBUSTNESS_KEYS):
        lines += [
            "",
            "Robustness of each cell's defended model (max over seeds; exposure: AUC of the base-vs-defended ranking "
            "among the people the base model knows, 0.5 = chance):",
            "",
            "| defense | removed | worst name variant: removed TPR | exposure AUC, names | exposure AUC, photos |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['defense']} | {r['removed']} | " + " | ".join(f(r.get(f"{k}_max")) for k in ROBUSTNESS_KEYS) + " |"
            for r in rows
        ]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, rows: list[dict]) -> bool:
    """Removed TPR and top-1 against the number removed (log2 axis), one line per defense."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for defense in sorted({r["defense"] for r in rows}):
        mine = sorted((r for r in rows if r["defense"] == defense), key=lambda r: r["removed"])
        xs = [r["removed"] for r in mine]
        for ax, key in zip(axes, ("removed_tpr_after", "top1_after")):
            ys = [r.get(key) for r in mine]
            errs = [r.get(f"{key}_std", 0.0) for r in mine]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=defense)
    for ax, title in zip(axes, ("IDIA TPR on removed people (after)", "zero-shot top-1 (after)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("people removed")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    before = [r["top1_before"] for r in rows if r.get("top1_before") is not None]
    if before:
        axes[1].axhline(statistics.fmean(before), color="grey", ls="--", label="before")
        target = statistics.fmean(before) - TARGETS["top1_drop_points"] / 100
        axes[1].axhline(target, color="red", ls=":", label="target (before - 2 points)")
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def recipe_fingerprints(defenses) -> dict[str, str]:
    """sha256 (12 hex digits) of each defense's synthetic recipe settings (the parsed YAML, so comments do not
    count): a merge refuses cells of one defense run with two recipes."""
    from hf_privacy_backdoor.cli import yaml_config_keys

    settings = {d: yaml_config_keys(ROOT / "recipes" / f"synthetic_{d}.yaml") for d in defenses}
    return {d: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:12] for d, v in settings.items()}


def _kept_cells(path: str, part: dict, defenses) -> tuple[list[dict], float]:
    """The part's cells of `defenses` (all if None) and its wall time, scaled by their share of its cells' time."""
    cells = [c for c in part["per_cell"] if defenses is None or c["defense"] in defenses]
    if not cells:
        raise SystemExit(f"--merge: {path} has no cell of the defenses {', '.join(defenses)}")
    if len(cells) == len(part["per_cell"]):
        return cells, part["wall_s"]
    share = sum(c.get("wall_s", 0.0) for c in cells) / max(sum(c.get("wall_s", 0.0) for c in part["per_cell"]), 1e-9)
    return cells, part["wall_s"] * share


def _check_recipes(paths: list[str], parts: list[dict], kept: list[list[dict]]) -> dict[str, str]:
    """Cells of one defense must come from one recipe (parts written before fingerprints were kept say nothing)."""
    seen: dict[str, tuple[str, str]] = {}
    for path, part, cells in zip(paths, parts, kept):
        for defense in sorted({c["defense"] for c in cells}):
            digest = (part.get("recipes") or {}).get(defense)
            if digest is None:
                continue
            if defense in seen and seen[defense][0] != digest:
                raise SystemExit(
                    f"--merge: {seen[defense][1]} and {path} ran different recipes for {defense}; rerun one of them"
                )
            seen.setdefault(defense, (digest, path))
    return {d: v[0] for d, v in sorted(seen.items())}


def merge_reports(paths: list[str], defenses: list[str] | None = None) -> dict:
    """One grid report from grids run apart (e.g. one defense at a time): the cells of every part, re-aggregated.

    The parts must share the world, its pretraining and the recipe flags, and no (defense, removed, seed) cell may
    come twice; the wall time is the parts' sum (they ran one after another). `defenses` keeps only their cells
    (e.g. a part whose other defense was rerun with a new recipe); a part's wall time is then scaled by the kept
    cells' share of its cells' own time."""
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"--merge: cannot read grid JSON {path}: {err}") from None
        if not isinstance(parts[-1], dict) or "per_cell" not in parts[-1] or "base_model" not in parts[-1]:
            raise SystemExit(f"--merge: {path} is not a bench_grid.py JSON (no per_cell / base_model)")
    same = ("world", "members", "non_members", "tpr", "fpr")  # the base model's numbers, not its timing
    for key in ("world_config", "pretrain_config", "recipe_flags", "base_model"):
        values = [p.get(key) if key != "base_model" else {k: p[key].get(k) for k in same} for p in parts]
        values = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(values)) > 1:
            raise SystemExit(f"--merge: the grids differ in {key}; only grids of one world and recipe join")
    kept = [_kept_cells(path, part, defenses) for path, part in zip(paths, parts)]
    recipes = _check_recipes(paths, parts, [k[0] for k in kept])
    cells, seen = [], {}
    for path, (part_cells, _) in zip(paths, kept):
        for cell in part_cells:
            key = (cell["defense"], cell["removed"], cell["seed"])
            if key in seen:
                raise SystemExit(f"--merge: cell {key} is in both {seen[key]} and {path}")
            seen[key] = path
            cells.append({**cell, "misses": misses(cell) + robustness_misses(cell)})  # today's targets
    first = parts[0]
    return {
        **{k: first.get(k) for k in ("base_model", "targets", "recipe_flags", "world_config", "pretrain_config")},
        "cells": len(cells),
        "per_cell": cells,
        "aggregated": aggregate(cells),
        "wall_s": round(sum(wall for _, wall in kept), 1),
        "workers": max(p["workers"] for p in parts),
        "recipes": recipes,
        "merged_from": [
            {
                "file": Path(path).name,
                "cells": len(part_cells),
                "cells_left_out": len(p["per_cell"]) - len(part_cells),
                "wall_s": round(wall, 1),
                "machine": p.get("machine"),
            }
            for path, p, (part_cells, wall) in zip(paths, parts, kept)
        ],
    }


def write_outputs(report: dict, out: Path, name: str) -> None:
    rows = report["aggregated"]
    keys = ["defense", "removed", "removed_tpr_before", "removed_tpr_after", "kept_tpr_after"]
    keys += ["wrongfully_unlearned_pct", "top1_before", "top1_after", "steps_trained", "train_s"]
    table = [
        {k: ("" if r.get(k) is None else r.get(k)) for k in keys} | {"misses": "; ".join(r["misses"])} for r in rows
    ]
    print_table_and_save(table, keys + ["misses"], report, str(out / f"{name}.json"))
    write_markdown(out / f"{name}.md", report["base_model"], rows, report)
    if write_plot(out / f"{name}.png", rows):
        print(f"saved {out / f'{name}.png'}")


def main(argv: list[str] | None = None) -> dict:
    args, recipe_flags = parse_args(argv)
    probes = args.robustness_probes
    if args.merge:
        report = merge_reports(args.merge, args.defenses if args.defenses_given else None)
        write_outputs(report, Path(args.output_dir), args.name)
        return report

    start = time.perf_counter()
    base = base_model_check(args.world, args.tier)
    print(f"base model: TPR {base['tpr']:.3f} FPR {base['fpr']:.3f} on {base['members']}+{base['non_members']}")
    cells = [
        {"world": args.world, "tier": args.tier, "defense": d, "removed": n, "seed": s, "flags": recipe_flags}
        | {"probes": probes}
        for d in args.defenses
        for n in args.removed
        for s in args.seeds
        if n <= base["members"]
    ]
    cells.sort(key=lambda c: -c["removed"] * (3 if c["defense"] != "text" else 1))  # longest first
    results = run_cells(
        run_cell, cells, args.workers, label=lambda c: f"{c['defense']}, {c['removed']} removed, seed {c['seed']}"
    )
    report = {
        "base_model": base,
        "cells": len(results),
        "per_cell": results,
        "aggregated": aggregate(results),
        "targets": TARGETS,
        "wall_s": round(time.perf_counter() - start, 1),
        "workers": min(args.workers, max(1, len(cells))),
        "recipe_flags": recipe_flags,
        "recipes": recipe_fingerprints(args.defenses),
        "settings": {k: v for k, v in vars(args).items()},
        "world_config": GRID_WORLD if args.world == "grid" else "default",
        "pretrain_config": pretrain_record(args.world, args.tier),
        "machine": machine_info(load_average_end=[round(x, 2) for x in os.getloadavg()]),
    }
    write_outputs(report, Path(args.output_dir), args.name)
    return report


if __name__ == "__main__":
    main()
