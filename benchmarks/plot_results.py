"""Figures for the documentation, drawn from the benchmark JSON results (never by hand).

    python benchmarks/plot_results.py                      # every figure, into docs/assets/
    python benchmarks/plot_results.py --run_dir outputs/demo/text   # first refresh the run snapshot from a run folder

Figures:

* `grid.png`: removed people's IDIA TPR after the defense and the change in object top-1 (points) against the
  number of people removed in one run, one line per defense (mean over seeds, bars: min-max), from
  `benchmarks/results/grid.json` (`bench_grid.py`).
* `robustness.png`: the robustness table as a heatmap (worst removed TPR per probe over seeds, exposure AUC,
  collateral), one row per defense as the recipes ship plus the base model as the control, from
  `benchmarks/results/robustness_{text,image,both}.json` (`bench_robustness.py`).
* `methods.png`: every method side by side: removed people's IDIA TPR after against the object top-1 drop, and
  the seconds of training, one panel per towers setting, from `benchmarks/results/methods*.json`
  (`bench_methods.py`).
* `correct_templates_demo_text.png`: a run's own plot (`evaluation.report.plot_correct_templates`, the one every
  run writes to `private/report/correct_templates.png`), redrawn from `benchmarks/results/run_demo_text.json`, a
  snapshot of the synthetic demo's text run (fictional people). `--run_dir` rewrites that snapshot from a run
  folder's `private/report/` (per-photo details left out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ASSETS = ROOT / "docs" / "assets"
DEFENSE_COLOURS = {"text": "tab:blue", "image": "tab:orange", "both": "tab:green"}
ROBUSTNESS_FILES = {"text": "robustness_text.json", "image": "robustness_image.json", "both": "robustness_both.json"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"saved {_shown(path)}")
    return path


def plot_grid(grid_json: Path, out: Path) -> Path:
    """Removed TPR after, and top-1 change, vs people removed, per defense (mean over seeds, min-max bars)."""
    data = json.loads(grid_json.read_text())
    cells: dict[tuple[str, int], list[dict]] = {}
    for cell in data["per_cell"]:
        cells.setdefault((cell["defense"], cell["removed"]), []).append(cell)
    fig = _figure(10, 3.8)
    ax_tpr, ax_top1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for defense in sorted({d for d, _ in cells}):
        sizes = sorted(n for d, n in cells if d == defense)
        tpr = [np.array([c["removed_tpr_after"] for c in cells[(defense, n)]]) for n in sizes]
        top1 = [np.array([100 * (c["top1_after"] - c["top1_before"]) for c in cells[(defense, n)]]) for n in sizes]
        for ax, values in ((ax_tpr, tpr), (ax_top1, top1)):
            mean = np.array([v.mean() for v in values])
            err = np.array([[m - v.min() for m, v in zip(mean, values)], [v.max() - m for m, v in zip(mean, values)]])
            ax.errorbar(sizes, mean, yerr=err, marker="o", ms=4, capsize=3, label=defense,
                        color=DEFENSE_COLOURS.get(defense))  # fmt: skip
    targets = data.get("targets", {})
    ax_tpr.axhline(targets.get("removed_tpr_after", 0.0), color="black", lw=0.8, ls="--")
    ax_top1.axhline(-targets.get("top1_drop_points", 2.0), color="black", lw=0.8, ls="--", label="target")
    ax_top1.axhline(0, color="grey", lw=0.5)
    for ax in (ax_tpr, ax_top1):
        ax.set_xscale("log", base=2)
        sizes = sorted({n for _, n in cells})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("people removed in one run")
        ax.grid(alpha=0.3)
    ax_tpr.set_ylim(-0.05, 1.05)
    ax_tpr.set_ylabel("IDIA TPR on removed people after (goal 0)")
    ax_top1.set_ylabel("object top-1 change (points)")
    ax_top1.legend(fontsize=8)
    world = data.get("base_model", {})
    seeds = sorted({c["seed"] for c in data["per_cell"]})
    fig.suptitle(
        f"Forgetting grid: {world.get('members', '?')}-member synthetic world, recipes as shipped, "
        f"seeds {','.join(map(str, seeds))} (mean; bars min-max)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, out)


def _robustness_rows(results: Path) -> list[tuple[str, dict]]:
    rows, base = [], None
    for defense, name in ROBUSTNESS_FILES.items():
        data = json.loads((results / name).read_text())
        for agg in data["aggregated"]:
            if agg["setting"] == "recipes" and agg["role"] == "defended":
                rows.append((f"{defense} (recipe)", agg))
            if agg["role"] == "base" and base is None:
                base = (f"base model ({defense} picks)", agg)
    return rows + ([base] if base else [])


def _relearn_keys(agg: dict) -> list[str]:
    keys = [k for k in agg if k.startswith("relearn_") and k.endswith("_removed_tpr_max")]
    return sorted(keys, key=lambda k: float(k.split("_")[1]))


def plot_robustness(results: Path, out: Path) -> Path:
    """The robustness table as a heatmap: rows = defenses (and the base model), columns = probes."""
    rows = _robustness_rows(results)
    relearn = _relearn_keys(rows[0][1])
    columns = [("exact name", "exact_removed_tpr_max", "tpr")]
    columns += [("worst name variant", "_worst_variant", "tpr")]
    for key in relearn:
        _, lr, steps = key.split("_")[:3]
        columns.append((f"relearn lr {float(lr):g} x{steps}", key + "_max", "tpr"))
    columns += [
        ("exposure names AUC", "exposure_text_diff_auc_known", "auc"),
        ("exposure photos AUC", "exposure_image_diff_auc_known", "auc"),
        ("collateral max %", "collateral_max_pct_max", "pct"),
    ]
    values = np.full((len(rows), len(columns)), np.nan)
    for i, (_, agg) in enumerate(rows):
        for j, (_, key, _) in enumerate(columns):
            if key == "_worst_variant":
                found = [v for k, v in agg.items() if k.startswith("variant_") and k.endswith("_removed_tpr_max")]
                values[i, j] = max(found) if found else np.nan
            elif agg.get(key) is not None:
                values[i, j] = agg[key]
    # colour = how badly the removed people are given away: TPR as is, AUC 0.5 -> 0 and 1 -> 1, collateral / 10 %
    badness = values.copy()
    for j, (_, _, kind) in enumerate(columns):
        if kind == "auc":
            badness[:, j] = np.clip((values[:, j] - 0.5) * 2, 0, 1)
        elif kind == "pct":
            badness[:, j] = np.clip(values[:, j] / 10.0, 0, 1)
    fig = _figure(10, 0.6 * len(rows) + 2.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.nan_to_num(badness, nan=0.0), cmap="RdYlGn_r", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j, (_, _, kind) in enumerate(columns):
            v = values[i, j]
            text = "n/a" if np.isnan(v) else (f"{v:.1f}" if kind == "pct" else f"{v:.2f}")
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(columns)), [c[0] for c in columns], rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    seeds = rows[0][1].get("seeds", [])
    ax.set_title(
        f"Robustness, 2 people removed, seeds {','.join(map(str, seeds))}: worst removed TPR over seeds "
        "(goal 0), exposure AUC (0.5 = hidden), collateral",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out)


METHOD_MARKERS = {"backdoor": "o", "retain_finetune": "s", "grad_ascent": "v", "grad_diff": "^", "slug": "D"}


def plot_methods(results: Path, out: Path) -> Path:
    """Removal (removed TPR after) vs utility (top-1 drop) and training seconds, per method, one panel per towers."""
    cells = [c for f in sorted(results.glob("methods*.json")) for c in json.loads(f.read_text())["per_cell"]]
    towers = sorted({c["towers"] for c in cells})
    fig = _figure(5.2 * len(towers), 7.6)
    for i, tower in enumerate(towers):
        ax, ax_time = fig.add_subplot(2, len(towers), i + 1), fig.add_subplot(2, len(towers), len(towers) + i + 1)
        for method, marker in METHOD_MARKERS.items():
            mine = [c for c in cells if c["towers"] == tower and c["method"] == method]
            if not mine:
                continue
            x, y = [c["top1_drop_points"] for c in mine], [c["removed_tpr"] for c in mine]
            ax.scatter(x, y, marker=marker, s=[30 + 20 * c["removed"] for c in mine], label=method, alpha=0.8)
            sizes = [c["removed"] for c in mine]
            ax_time.scatter(sizes, [c["train_seconds"] for c in mine], marker=marker, label=method, alpha=0.8)
        ax.set(title=f"towers: {tower}", xlabel="object top-1 drop (points; lower is better)")
        ax.set(ylabel="IDIA TPR on removed people, after (goal 0)", ylim=(-0.05, 1.05))
        ax_time.set(xlabel="people removed", ylabel="seconds of training", yscale="log")
        ax_time.set_xticks(sorted({c["removed"] for c in cells}))
        ax.legend(fontsize=8)
    fig.suptitle("Methods side by side (marker size: people removed)")
    fig.tight_layout()
    return _save(fig, out)


def snapshot_run(run_dir: Path, out: Path) -> Path:
    """A small JSON of a run's attack before / after and comparison (per-photo details and candidates dropped)."""
    report = run_dir / "private" / "report"

    def attack(path: Path) -> dict:
        data = json.loads(path.read_text())
        data["candidates"] = []
        for person in data["people"]:
            person["photos"], person["majority_names"] = [], []
        return data

    full = json.loads((report / "report.json").read_text())
    snapshot = {
        "source": "a run folder's private/report/ (attack.json, attack_before.json, report.json)",
        "attack": attack(report / "attack.json"),
        "before": attack(report / "attack_before.json"),
        "comparison": full["comparison"],
    }
    out.write_text(json.dumps(snapshot, indent=1) + "\n")
    print(f"saved {_shown(out)}")
    return out


def plot_run(snapshot: Path, out: Path) -> Path:
    """The run's own correct-templates plot, drawn by the library function every run uses."""
    from hf_privacy_backdoor.evaluation.report import plot_correct_templates
    from hf_privacy_backdoor.evaluation.results import AttackResult, Comparison

    data = json.loads(snapshot.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_correct_templates(
        out,
        AttackResult.from_dict(data["attack"]),
        AttackResult.from_dict(data["before"]),
        Comparison.from_dict(data["comparison"]),
    )
    print(f"saved {_shown(out)}")
    return out


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS), help="Folder of the benchmark JSON results.")
    parser.add_argument("--output_dir", default=str(ASSETS), help="Where the PNGs go.")
    parser.add_argument("--run_dir", default=None, help="Refresh the run snapshot from this run folder first.")
    args = parser.parse_args(argv)
    results, out = Path(args.results), Path(args.output_dir)
    snapshot = results / "run_demo_text.json"
    if args.run_dir:
        snapshot_run(Path(args.run_dir), snapshot)
    return [
        plot_grid(results / "grid.json", out / "grid.png"),
        plot_robustness(results, out / "robustness.png"),
        plot_methods(results, out / "methods.png"),
        plot_run(snapshot, out / "correct_templates_demo_text.png"),
    ]


if __name__ == "__main__":
    main()
