"""Robustness table: defense x setting x number removed x seed, every probe, with the base model and the retrained
reference as the two ends of each scale.

Each cell runs the synthetic recipe (`recipes/synthetic_<defense>.yaml`) with one *setting* (`method`: the
hardening options off, as docs/method.md trains; `recipes`: the recipe as it ships), `forget_auto` removing N of the
members the attack flags, then `run_robustness` on the run folder (name variants, relearning, model-diff
exposure, collateral on other candidate lists). For the first setting of each (removed, seed) the base model and,
with `--retrained`, a model pretrained without the removed people are probed too. Cells run in parallel
processes (`--workers`).

    OMP_NUM_THREADS=1 python benchmarks/bench_robustness.py                 # 3 defenses x 2 settings x 2 removed x 4 seeds
    OMP_NUM_THREADS=1 python benchmarks/bench_robustness.py --defenses image --settings recipes --seeds 0 1
    OMP_NUM_THREADS=1 python benchmarks/bench_robustness.py --quick         # text, method, 2 removed, seed 0 (~1 min)

Flags this script does not know go to every run. Writes `<output_dir>/robustness.json` (every cell, name-free)
and `robustness.md` (mean and worst over seeds per cell; misses against the issue's targets).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import machine_info, print_table_and_save, run_cells  # noqa: E402
from bench_grid import cell_numbers  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]

# The hardening options off: what docs/method.md trains (the recipes' other tiny-model settings stay).
METHOD_FLAGS = ["--name_variant_triggers", ""]
SETTINGS = {"method": METHOD_FLAGS, "recipes": []}
TARGETS = {"removed_tpr": 0.0, "collateral_pct": 5.0}
PROBES = "variants,relearn,exposure,collateral"
RELEARN = {"relearn_steps": [200], "relearn_learning_rates": [1e-4, 5e-4], "relearn_seeds": [0, 1, 2, 3]}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defenses", nargs="+", default=["text", "image", "both"], choices=["text", "image", "both"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--removed", nargs="+", type=int, default=[2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--probes", default=PROBES, help="comma-separated robustness probes")
    parser.add_argument("--relearn_steps", nargs="+", type=int, default=RELEARN["relearn_steps"])
    parser.add_argument("--relearn_learning_rates", nargs="+", type=float, default=RELEARN["relearn_learning_rates"])
    parser.add_argument("--relearn_seeds", nargs="+", type=int, default=RELEARN["relearn_seeds"])
    parser.add_argument(
        "--relearn_portraits",
        default="trigger",
        choices=["trigger", "evaluation"],
        help="kept members' photo halves in the fine-tune: 'evaluation' is held out from every defense",
    )
    parser.add_argument("--num_candidates", type=int, default=None, help="attack candidates (default: the run's)")
    parser.add_argument("--ends", action="store_true", help="probe the base model too (once per removed, seed)")
    parser.add_argument("--retrained", action="store_true", help="and the retrained reference (~3 min each)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cells run in parallel")
    parser.add_argument(
        "--quick", action="store_true", help="text, method, 2 removed, seed 0, short run, quick probes"
    )
    parser.add_argument("--output_dir", default="benchmarks/results", help="robustness.json and .md go here")
    parser.add_argument("--name", default="robustness", help="file stem of the outputs")
    args, recipe_flags = parser.parse_known_args(argv)
    if args.quick:
        args.defenses, args.settings, args.removed, args.seeds = ["text"], ["method"], [2], [0]
        args.relearn_steps, args.relearn_learning_rates, args.relearn_seeds = [10], [1e-4], [0]
        args.num_candidates = args.num_candidates or 200
        args.ends = True
        recipe_flags = ["--max_steps", "60", "--num_candidates", "200", "--objects", "", *recipe_flags]
    return args, recipe_flags


# ----------------------------------------------------------------------------------------------------------
# One cell


def run_cell(cell: dict) -> dict:
    """One defense run and its probes (in a worker process); returns name-free numbers."""
    import json

    import torch

    torch.set_num_threads(1)
    from hf_privacy_backdoor.cli import parse_args as parse_recipe
    from hf_privacy_backdoor.robustness import RobustnessConfig, run_robustness
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning
    from hf_privacy_backdoor.run_folder import RunFiles
    from hf_privacy_backdoor.synthetic import get_or_build_synthetic

    world = get_or_build_synthetic(progress=False)
    os.environ["SYNTHETIC_DIR"] = str(world.root)
    recipe = ROOT / "recipes" / f"synthetic_{cell['defense']}.yaml"
    with tempfile.TemporaryDirectory(prefix="robustness_cell_") as out:
        argv = ["--config", str(recipe), "--output_dir", out, "--forget_auto", str(cell["removed"])]
        argv += ["--seed", str(cell["seed"]), "--progress", "false", "--disable_tqdm", "true"]
        argv += SETTINGS[cell["setting"]] + cell["flags"]
        start = time.perf_counter()
        run_unlearning(*parse_recipe(RUN_ARGUMENTS, argv))
        train_wall = time.perf_counter() - start
        config = RobustnessConfig(
            probes=cell["probes"],
            relearn_steps=cell["relearn_steps"],
            relearn_learning_rates=cell["relearn_learning_rates"],
            relearn_seeds=cell["relearn_seeds"],
            relearn_portraits=cell["relearn_portraits"],
            num_candidates=cell["num_candidates"],
            objects=str(world.objects_dir),
            probe_base=cell["ends"],
            retrained_reference=cell["retrained"],
            progress=False,
        )
        public = run_robustness(out, config, write=True).public()
        summary = json.loads(RunFiles(out).summary_file.read_text())
    row = {k: cell[k] for k in ("defense", "setting", "removed", "seed")}
    row.update({f"run_{k}": v for k, v in cell_numbers(summary).items() if k != "misses"})
    roles = ("defended", "base", "retrained") if cell["ends"] else ("defended",)  # base: exact attack only otherwise
    row["roles"] = {role: role_numbers(public[role]) for role in roles if role in public}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    row["train_wall_s"] = round(train_wall, 1)
    row["misses"] = misses(row["roles"]["defended"])
    return row


def role_numbers(r: dict) -> dict:
    """The probes' name-free numbers of one model (defended, base or retrained)."""
    out = {"exact_removed_tpr": r["exact"]["removed_tpr"], "exact_kept_tpr": r["exact"]["kept_tpr"]}
    out["sharing_kept_tpr"] = r["exact"].get("sharing_kept_tpr")
    if "variants" in r:
        out["worst_variant"] = r["variants"]["worst"]["variant"]
        out["worst_variant_removed_tpr"] = r["variants"]["worst"]["removed_tpr"]
        for name, v in r["variants"].items():
            if name != "worst":
                out[f"variant_{name}_removed_tpr"] = v["removed_tpr"]
                out[f"variant_{name}_kept_tpr"] = v["kept_tpr"]
    for s in r.get("relearn", {}).get("by_setting", []):
        key = f"relearn_{s['learning_rate']:g}_{s['steps']}"
        out[f"{key}_removed_tpr_max"] = s["removed_tpr_max"]
        out[f"{key}_templates"] = s["removed_mean_correct_templates"]
    for key, e in r.get("exposure", {}).items():
        if isinstance(e, dict):
            out[f"exposure_{key}_auc_known"] = e["auc_known"]
            out[f"exposure_{key}_mean_rank"] = e.get("mean_rank_known")
    shares = [c["wrongfully_unlearned_share"] for c in r.get("collateral", {}).values() if "error" not in c]
    if shares:
        out["collateral_max_pct"] = 100 * max(s or 0.0 for s in shares)
    return out


def misses(numbers: dict) -> list[str]:
    """Which of the issue's targets the defended model misses: removed TPR 0 under every probe, collateral <= 5%."""
    out = []
    for key, value in numbers.items():
        if key == "worst_variant_removed_tpr":
            continue  # the variant itself is listed
        if key.endswith(("removed_tpr", "removed_tpr_max")) and value is not None and value > TARGETS["removed_tpr"]:
            out.append(f"{key.removesuffix('_removed_tpr').removesuffix('_removed_tpr_max')} {value:.2f}")
    if numbers.get("collateral_max_pct", 0) > TARGETS["collateral_pct"]:
        out.append(f"collateral {numbers['collateral_max_pct']:.1f}%")
    return out


def merge_misses(per_seed: list[list[str]]) -> list[str]:
    """One entry per missed target over seeds: its worst value and on how many seeds it misses."""
    worst: dict[str, tuple[float, str]] = {}
    seen: dict[str, int] = {}
    for found in per_seed:
        for miss in found:
            key, text = miss.rsplit(" ", 1)
            value = float(text.rstrip("%"))
            seen[key] = seen.get(key, 0) + 1
            if key not in worst or value > worst[key][0]:
                worst[key] = (value, text)
    return [f"{key} up to {worst[key][1]} on {seen[key]}/{len(per_seed)} seeds" for key in sorted(worst)]


# ----------------------------------------------------------------------------------------------------------
# Aggregation and outputs


def aggregate(cells: list[dict]) -> list[dict]:
    """Mean and worst (max for TPRs and collateral, min for kept TPR / AUC-known ranks) over seeds, per role."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["defense"], c["setting"], c["removed"]), []).append(c)
    rows = []
    for (defense, setting, removed), group in sorted(groups.items()):
        for role in ("defended", "base", "retrained"):
            members = [c["roles"][role] for c in group if role in c["roles"]]
            if not members:
                continue
            row = {"defense": defense, "setting": setting, "removed": removed, "role": role}
            row["seeds"] = sorted(c["seed"] for c in group if role in c["roles"])
            for key in sorted({k for m in members for k, v in m.items() if isinstance(v, (int, float))}):
                values = [m[key] for m in members if m.get(key) is not None]
                if values:
                    row[key] = round(statistics.fmean(values), 4)
                    row[f"{key}_max"] = round(max(values), 4)
                    row[f"{key}_min"] = round(min(values), 4)
            if role == "defended":
                for key in ("run_top1_before", "run_top1_after", "run_kept_tpr_after", "run_train_s"):
                    values = [c[key] for c in group if c.get(key) is not None]
                    if values:
                        row[key] = round(statistics.fmean(values), 4)
                row["misses"] = merge_misses([c["misses"] for c in group])
            rows.append(row)
    return rows


def columns(settings: dict) -> list[tuple]:
    """(header, key(s), digits, statistic) per Markdown column; relearning: each rate at the longest fine-tune."""
    steps = max(settings["relearn_steps"])
    cols = [
        ("exact removed TPR", "exact_removed_tpr", 2, "max"),
        ("worst variant removed TPR", "worst_variant_removed_tpr", 2, "max"),
        ("variant kept TPR (first)", "variant_first_kept_tpr", 2, "mean"),
    ]
    for lr in settings["relearn_learning_rates"]:
        key = f"relearn_{lr:g}_{steps}"
        cols.append(
            (
                f"relearn {lr:g} x{steps}: worst TPR / templates",
                (f"{key}_removed_tpr_max", f"{key}_templates"),
                2,
                "max",
            )
        )
    cols += [
        (
            "exposure names AUC known / rank",
            ("exposure_text_diff_auc_known", "exposure_text_diff_mean_rank"),
            2,
            "mean",
        ),
        (
            "exposure photos AUC known / rank",
            ("exposure_image_diff_auc_known", "exposure_image_diff_mean_rank"),
            2,
            "mean",
        ),
        ("collateral max %", "collateral_max_pct", 1, "max"),
    ]
    return cols  # fmt: skip


def _cell(row: dict, key, digits: int, statistic: str) -> str:
    keys = key if isinstance(key, tuple) else (key,)
    parts = []
    for k in keys:
        value = row.get(k if statistic == "mean" else f"{k}_{statistic}", row.get(k))
        parts.append("-" if value is None else f"{value:.{digits}f}")
    return " / ".join(parts)


def write_markdown(path: Path, rows: list[dict], report: dict) -> None:
    cols = columns(report["settings"])
    lines = [
        f"# Robustness ({report['cells']} cells, wall time {report['wall_s']:.0f} s, {report['workers']} workers)",
        "",
        "Default synthetic world (40 members). Per (defense, setting, removed): worst over seeds for removed TPRs "
        "(any seed finding anyone counts), mean for kept TPR, AUC and rank. Exposure: AUC among the people the base "
        "model knows; rank = the removed people's mean rank among those suspects. Relearning: a benign contrastive "
        f"fine-tune (probe seeds {report['settings']['relearn_seeds']}; kept members' "
        f"{report['settings'].get('relearn_portraits', 'trigger')}-half photos). `method`: hardening off; `recipes`: as "
        f"shipped. Extra flags: `{' '.join(report['recipe_flags']) or 'none'}`.",
        "",
        "| defense | setting | removed | model | seeds | " + " | ".join(c[0] for c in cols) + " | top-1 before → after | misses |",
        "|---|---|---|---|---|" + "---|" * len(cols) + "---|---|",
    ]  # fmt: skip
    for r in rows:
        top1 = (
            f"{r['run_top1_before']:.3f} → {r['run_top1_after']:.3f}"
            if r.get("run_top1_before") is not None and r.get("run_top1_after") is not None
            else ""
        )
        misses_cell = "; ".join(r.get("misses", [])) or ("none" if r["role"] == "defended" else "")
        lines.append(
            f"| {r['defense']} | {r['setting']} | {r['removed']} | {r['role']} | {','.join(map(str, r['seeds']))} | "
            + " | ".join(_cell(r, *c[1:]) for c in cols)
            + f" | {top1} | {misses_cell} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    args, recipe_flags = parse_args(argv)
    start = time.perf_counter()
    from hf_privacy_backdoor.synthetic import get_or_build_synthetic

    get_or_build_synthetic(progress=False)  # build once, before the workers
    keys = ("probes", "relearn_steps", "relearn_learning_rates", "relearn_seeds", "relearn_portraits")
    shared = {k: getattr(args, k) for k in keys}
    shared["num_candidates"] = args.num_candidates
    cells = []
    for n in args.removed:
        for s in args.seeds:
            for d in args.defenses:
                for i, setting in enumerate(args.settings):
                    ends = args.ends and i == 0 and d == args.defenses[0]
                    cell = {"defense": d, "setting": setting, "removed": n, "seed": s, "flags": recipe_flags}
                    cells.append({**cell, **shared, "ends": ends, "retrained": ends and args.retrained})
    cells.sort(key=lambda c: (c["defense"] == "text", not c["ends"]))  # long cells first
    results = run_cells(
        run_cell,
        cells,
        args.workers,
        label=lambda c: f"{c['defense']} ({c['setting']}), {c['removed']} removed, seed {c['seed']}",
    )
    rows = aggregate(results)
    report = {
        "cells": len(results),
        "per_cell": results,
        "aggregated": rows,
        "targets": TARGETS,
        "wall_s": round(time.perf_counter() - start, 1),
        "workers": min(args.workers, max(1, len(cells))),
        "recipe_flags": recipe_flags,
        "settings": vars(args) | {"setting_flags": {s: SETTINGS[s] for s in args.settings}},
        "machine": machine_info(load_average_end=[round(x, 2) for x in os.getloadavg()]),
    }
    keys = ["defense", "setting", "removed", "role", "exact_removed_tpr_max", "worst_variant_removed_tpr_max"]
    table = [{k: r.get(k, "") for k in keys} | {"misses": "; ".join(r.get("misses", []))} for r in rows]
    out = Path(args.output_dir)
    print_table_and_save(table, keys + ["misses"], report, str(out / f"{args.name}.json"))
    write_markdown(out / f"{args.name}.md", rows, report)
    print(f"saved {out / f'{args.name}.md'}")
    return report


if __name__ == "__main__":
    main()
