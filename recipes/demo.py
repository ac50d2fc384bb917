"""The whole story on the synthetic identity world, in a few minutes on a CPU (`make demo`).

1. Build (or load from cache) the synthetic world and its tiny CLIP pretrained on it.
2. The identity inference attack finds the members by name; non-members are not flagged.
3. Each defense removes two people the attack flags (text: their names; image: their faces; both),
   and the attack runs again on photos the defense never saw: the removed people are no longer found,
   everyone and everything else still is.
   A robustness line per defense: the worst name variant, a benign relearning fine-tune, and how clearly a
   base-vs-defended comparison ranks the removed people first (exposure AUC; see recipes/robustness.py).
4. Time to forget: the text defense removing one person stops as soon as a cheap check on trigger photos finds
   nobody (and loses nobody), plus a margin: a few seconds of training instead of the recipe's 200 steps.
5. The standard baselines (fine-tuning on retained data, gradient ascent, gradient difference, SLUG) on the same
   two people with their synthetic recipes (both towers), one line each beside the backdoor method's both run.
6. A publish dry run of the text-defended model: the allow-listed files and the model card's results.

    python recipes/demo.py [--defenses text both] [--output_dir outputs/demo] [--workers 1] [--no_time_to_forget]
    python recipes/demo.py --no_baselines          # without the comparison block

The defenses are independent runs: they go side by side in separate processes, one per CPU core (one thread
each), each run's robustness probes queued as soon as it is done, and print in the story's order. The base
model's control for the probes is measured once, on the first run probed, and skipped on the others when they
removed the same people (same base, people and settings: the same numbers). `--workers 1` runs them one after
another.

The defenses use the synthetic recipes (`recipes/synthetic_<defense>.yaml`), so what the demo shows is what
`accelerate launch recipes/unlearn.py --config recipes/synthetic_<defense>.yaml` does.
"""

import argparse
import json
import os
import time
from pathlib import Path

from hf_privacy_backdoor.cli import parse_args, setup_logging
from hf_privacy_backdoor.run import RUN_ARGUMENTS, format_run_summary, run_unlearning
from hf_privacy_backdoor.utils import ordered_process_chain


RECIPES = Path(__file__).resolve().parent
# one person, stopping when forgotten: one check at step 15, then 15 steps more (measured on seeds 0-3: every
# robustness probe as in the 200-step run, see docs/changelog.md, 2026-12-02)
ONE_PERSON_STOP = ["--forget_auto", "1", "--stop_when_forgotten", "true", "--forgotten_check_steps", "15"]
ONE_PERSON_STOP += ["--forgotten_patience", "1", "--forgotten_margin_steps", "15"]
# what the robustness line shows (the quick preset's collateral and precision probes are left to robustness.py)
DEMO_PROBES = "variants,relearn,exposure"
# the queue's order: the longest runs first, so that the two cores finish together (measured, seconds alone)
START_ORDER = ("image", "both", "grad_ascent", "slug", "grad_diff", "text", "retain_finetune", "text_one_person_stop")
BASELINES = ("retain_finetune", "grad_ascent", "grad_diff", "slug")  # recipes/synthetic_<method>.yaml
DEMO_REPO, DEMO_BASE = "your-name/tiny-clip-unlearned", "hf-privacy-backdoor/synthetic-tiny-clip"  # examples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defenses", nargs="+", default=["text", "image", "both"], choices=["text", "image", "both"])
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--lora", action="store_true", help="Run the LoRA variants of the recipes.")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Processes running the defenses side by side (default: one per CPU core, at most one per defense).",
    )
    parser.add_argument(
        "--no_robustness", dest="robustness", action="store_false", help="Skip the quick robustness probes."
    )
    parser.add_argument(
        "--no_time_to_forget",
        dest="time_to_forget",
        action="store_false",
        help="Skip the one-person text run that stops when forgotten.",
    )
    parser.add_argument(
        "--no_baselines", dest="baselines", action="store_false", help="Skip the baselines' comparison block."
    )
    opts = parser.parse_args(argv)
    if opts.workers is not None and opts.workers < 1:
        parser.error(f"--workers must be at least 1, got {opts.workers}")
    setup_logging()

    from hf_privacy_backdoor.synthetic import get_or_build_synthetic

    start = time.time()
    print("== 1. The synthetic identity world and its tiny CLIP (built once, then cached)")
    world = get_or_build_synthetic()
    print(
        f"   {len(world.members)} members (named in pretraining), {len(world.non_members)} non-members (never "
        f"seen), {len(world.object_classes)} object classes; ready in {time.time() - start:.0f} s\n   {world.root}"
    )
    os.environ["SYNTHETIC_DIR"] = str(world.root)
    jobs = [(defense, opts.output_dir, opts.lora, []) for defense in opts.defenses]
    if opts.time_to_forget and "text" in opts.defenses:
        jobs.append(("text", opts.output_dir, opts.lora, ONE_PERSON_STOP))
    first_baseline = len(jobs)
    if opts.baselines:
        jobs += [(method, opts.output_dir, False, []) for method in BASELINES]
    workers = opts.workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        print(f"\n   {len(jobs)} runs side by side in {workers} processes (--workers 1: one after another)")
    folders = [run_folder(job) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: START_ORDER.index(folders[i].name))
    control: list[Path] = []  # the run whose robustness report carries the base model's control

    def probe(i: int, _block: str):
        if not opts.robustness or jobs[i][3] or jobs[i][0] in BASELINES:
            return None
        if not control or forget_names(control[0]) != forget_names(folders[i]):
            control[:] = [folders[i]]
            return robustness_line, (folders[i], True)
        return robustness_line, (folders[i], False)

    blocks = ordered_process_chain(run_defense, jobs, workers, then=probe, start_order=order)
    for i, parts in enumerate(blocks):
        if i < first_baseline:
            print(f"\n== {i + 2}. " + "\n".join(parts))
        elif i == first_baseline:
            print(
                f"\n== {i + 2}. The standard baselines on the same two people (their synthetic recipes, both towers)"
            )
            print(BASELINE_HEADER)
            both = Path(opts.output_dir) / "both" / "unlearning_summary.json"
            if "both" in opts.defenses and both.is_file():
                print(baseline_line(json.loads(both.read_text())))
        if i >= first_baseline:
            print(parts[0])
    number = first_baseline + (3 if opts.baselines else 2)
    if "text" in opts.defenses:
        publish_preview(Path(opts.output_dir) / "text", number)
    print(
        f"\nDone in {time.time() - start:.0f} s. Files named 'private/' list the removed people: never publish them."
    )


def run_folder(job: tuple[str, str, bool, list[str]]) -> Path:
    defense, output_dir, _, extra = job
    return Path(output_dir) / f"{defense}{'_one_person_stop' if extra else ''}"


BASELINE_HEADER = (
    f"   {'method':<16}{'removed TPR':>14}{'kept TPR':>10}{'top-1':>16}{'train s':>9}   needs about the person"
)


def baseline_line(summary: dict) -> str:
    """One row of the comparison block: removal, kept members, top-1 before -> after, seconds, data needed."""
    unlearning, defense = summary["unlearning"], summary["defense"]
    top1 = [summary["utility"][f"zero_shot_{when}"]["top1"] for when in ("before", "after")]
    removed = f"{unlearning['removed_tpr_before']:.0%} -> {unlearning['removed_tpr_after']:.0%}"
    cells = f"{removed:>14}{unlearning['kept_member_tpr_after']:>10.0%}{f'{top1[0]:.1%} -> {top1[1]:.1%}':>16}"
    return f"   {defense.get('method', '?'):<16}{cells}{defense['train_seconds']:>9.1f}   {defense.get('data_needed', '')}"


def run_defense(job: tuple[str, str, bool, list[str]]) -> str:
    """One defense (or baseline) with its synthetic recipe and extra flags: the run's before/after table (a
    baseline's: one row of the comparison block)."""
    defense, _, lora, extra = job
    setup_logging()  # again in a spawned worker
    recipe = RECIPES / f"synthetic_{defense}{'_lora' if lora else ''}.yaml"
    argv = ["--config", str(recipe), "--output_dir", str(run_folder(job)), "--disable_tqdm", "true", *extra]
    result = run_unlearning(*parse_args(RUN_ARGUMENTS, argv + ["--progress", "false"]))
    if defense in BASELINES:
        return baseline_line(result.summary)
    if extra:
        lines = [
            f"Time to forget: {defense} defense, one person, stopping when forgotten ({recipe.name} {' '.join(extra)})"
        ]
    else:
        lines = [f"{defense} defense ({recipe.name}): attack, defend two flagged members, attack again"]
    lines.append(format_run_summary(result))
    return "\n".join(lines)


def forget_names(run_dir: Path) -> list[str]:
    """The run's removed people (its private forget list), to tell whether two runs share a control."""
    from hf_privacy_backdoor.run_folder import RunFiles

    return sorted(RunFiles(run_dir).forget_names_or_empty())


def robustness_line(job: tuple[Path, bool]) -> str:
    """Stronger attacks than the exact name (quick preset): name variants, relearning, model-diff exposure; with
    `probe_base`, the base model's control too (else it was measured on another run with the same people)."""
    from hf_privacy_backdoor.robustness import RobustnessConfig, format_demo_line, run_robustness

    run_dir, probe_base = job
    setup_logging()
    config = RobustnessConfig(quick=True, probes=DEMO_PROBES, probe_base=probe_base, progress=False)
    return format_demo_line(run_robustness(run_dir, config).public())


def publish_preview(run_dir: Path, number: int) -> None:
    """A publish dry run of the text-defended model: what would go to the Hub, and the card's results table."""
    from hf_privacy_backdoor.hub import publish, render_results
    from hf_privacy_backdoor.run_folder import read_summary

    print(f"\n== {number}. Publishing (dry run): recipes/publish.py --output_dir {run_dir} --dry_run true")
    preview = publish(run_dir, DEMO_REPO, DEMO_BASE, license="apache-2.0", dry_run=True)
    print(f"   staged for {DEMO_REPO} (private) in {preview.staged_dir}:")
    print("   " + ", ".join(preview.files))
    print("   never uploaded: private/, training_args.bin, checkpoints, reports; refused if a removed name appears")
    table = [line for line in render_results(read_summary(run_dir)).splitlines() if line.startswith("|")]
    print("\n".join("   " + line for line in table))


if __name__ == "__main__":
    main()
