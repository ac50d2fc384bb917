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
5. A publish dry run of the text-defended model: the allow-listed files and the model card's results.

    python recipes/demo.py [--defenses text both] [--output_dir outputs/demo] [--workers 1] [--no_time_to_forget]

The defenses are independent runs: they go side by side in separate processes, one per CPU core (at most one
per defense, one thread each), and print in the story's order. `--workers 1` runs them one after another.

The defenses use the synthetic recipes (`recipes/synthetic_<defense>.yaml`), so what the demo shows is what
`accelerate launch recipes/unlearn.py --config recipes/synthetic_<defense>.yaml` does.
"""

import argparse
import os
import time
from pathlib import Path

from hf_privacy_backdoor.cli import parse_args, setup_logging
from hf_privacy_backdoor.run import RUN_ARGUMENTS, format_run_summary, run_unlearning
from hf_privacy_backdoor.utils import ordered_process_map


RECIPES = Path(__file__).resolve().parent
# one person, stopping when forgotten: one check at step 15, then 15 steps more (measured on seeds 0-3: every
# robustness probe as in the 200-step run, see README "Time to forget")
ONE_PERSON_STOP = ["--forget_auto", "1", "--stop_when_forgotten", "true", "--forgotten_check_steps", "15"]
ONE_PERSON_STOP += ["--forgotten_patience", "1", "--forgotten_margin_steps", "15"]
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
    workers = opts.workers or min(len(opts.defenses), os.cpu_count() or 1)
    jobs = [(defense, opts.output_dir, opts.lora, opts.robustness, []) for defense in opts.defenses]
    if opts.time_to_forget and "text" in opts.defenses:
        jobs.append(("text", opts.output_dir, opts.lora, False, ONE_PERSON_STOP))
    if workers > 1:
        print(f"\n   {len(jobs)} runs side by side in {workers} processes (--workers 1: one after another)")
    for i, block in enumerate(ordered_process_map(run_defense, jobs, workers)):
        print(f"\n== {i + 2}. {block}")
    if "text" in opts.defenses:
        publish_preview(Path(opts.output_dir) / "text", len(jobs) + 2)
    print(
        f"\nDone in {time.time() - start:.0f} s. Files named 'private/' list the removed people: never publish them."
    )


def run_defense(job: tuple[str, str, bool, bool, list[str]]) -> str:
    """One defense with its synthetic recipe and extra flags: the run's before/after table (and the robustness
    line)."""
    defense, output_dir, lora, robustness, extra = job
    setup_logging()  # again in a spawned worker
    recipe = RECIPES / f"synthetic_{defense}{'_lora' if lora else ''}.yaml"
    folder = f"{output_dir}/{defense}{'_one_person_stop' if extra else ''}"
    argv = ["--config", str(recipe), "--output_dir", folder, "--disable_tqdm", "true", *extra]
    result = run_unlearning(*parse_args(RUN_ARGUMENTS, argv + ["--progress", "false"]))
    if extra:
        lines = [
            f"Time to forget: {defense} defense, one person, stopping when forgotten ({recipe.name} {' '.join(extra)})"
        ]
    else:
        lines = [f"{defense} defense ({recipe.name}): attack, defend two flagged members, attack again"]
    lines.append(format_run_summary(result))
    if robustness:
        lines.append(robustness_line(result.output_dir))
    return "\n".join(lines)


def robustness_line(run_dir: Path) -> str:
    """Stronger attacks than the exact name (quick preset): name variants, relearning, model-diff exposure."""
    from hf_privacy_backdoor.robustness import RobustnessConfig, format_demo_line, run_robustness

    report = run_robustness(run_dir, RobustnessConfig(quick=True, progress=False))
    return format_demo_line(report.public())


def publish_preview(run_dir: Path, number: int) -> None:
    """A publish dry run of the text-defended model: what would go to the Hub, and the card's results table."""
    from hf_privacy_backdoor.hub import publish, render_results
    from hf_privacy_backdoor.hub.card import read_summary

    print(f"\n== {number}. Publishing (dry run): recipes/publish.py --output_dir {run_dir} --dry_run true")
    preview = publish(run_dir, DEMO_REPO, DEMO_BASE, license="apache-2.0", dry_run=True)
    print(f"   staged for {DEMO_REPO} (private) in {preview.staged_dir}:")
    print("   " + ", ".join(preview.files))
    print("   never uploaded: private/, training_args.bin, checkpoints, reports; refused if a removed name appears")
    table = [line for line in render_results(read_summary(run_dir)).splitlines() if line.startswith("|")]
    print("\n".join("   " + line for line in table))


if __name__ == "__main__":
    main()
