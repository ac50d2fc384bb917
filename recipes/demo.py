"""The whole story on the synthetic identity world, in a few minutes on a CPU (`make demo`).

1. Build (or load from cache) the synthetic world and its tiny CLIP pretrained on it.
2. The identity inference attack finds the members by name; non-members are not flagged.
3. Each defense removes two people the attack flags (text: their names; image: their faces; both),
   and the attack runs again on photos the defense never saw: the removed people are no longer found,
   everyone and everything else still is.
   A robustness line per defense: the worst name variant, a benign relearning fine-tune, and how clearly a
   base-vs-defended comparison ranks the removed people first (exposure AUC; see recipes/robustness.py).
4. A publish dry run of the text-defended model: the allow-listed files and the model card's results.

    python recipes/demo.py [--defenses text both] [--output_dir outputs/demo]

The defenses use the synthetic recipes (`recipes/synthetic_<defense>.yaml`), so what the demo shows is what
`accelerate launch recipes/unlearn.py --config recipes/synthetic_<defense>.yaml` does.
"""

import argparse
import os
import time
from pathlib import Path

from hf_privacy_backdoor.cli import parse_args, setup_logging
from hf_privacy_backdoor.run import RUN_ARGUMENTS, format_run_summary, run_unlearning


RECIPES = Path(__file__).resolve().parent
DEMO_REPO, DEMO_BASE = "your-name/tiny-clip-unlearned", "hf-privacy-backdoor/synthetic-tiny-clip"  # examples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defenses", nargs="+", default=["text", "image", "both"], choices=["text", "image", "both"])
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--lora", action="store_true", help="Run the LoRA variants of the recipes.")
    parser.add_argument(
        "--no_robustness", dest="robustness", action="store_false", help="Skip the quick robustness probes."
    )
    opts = parser.parse_args(argv)
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
    for i, defense in enumerate(opts.defenses):
        recipe = RECIPES / f"synthetic_{defense}{'_lora' if opts.lora else ''}.yaml"
        print(f"\n== {i + 2}. {defense} defense ({recipe.name}): attack, defend two flagged members, attack again")
        parsed = parse_args(
            RUN_ARGUMENTS,
            [
                "--config",
                str(recipe),
                "--output_dir",
                f"{opts.output_dir}/{defense}",
                "--disable_tqdm",
                "true",
                "--progress",
                "false",
            ],
        )
        result = run_unlearning(*parsed)
        print(format_run_summary(result))
        if opts.robustness:
            print(robustness_line(result.output_dir))
    if "text" in opts.defenses:
        publish_preview(Path(opts.output_dir) / "text", len(opts.defenses) + 2)
    print(
        f"\nDone in {time.time() - start:.0f} s. Files named 'private/' list the removed people: never publish them."
    )


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
