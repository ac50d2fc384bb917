"""Probe a defended run folder with stronger attacks than the exact-name IDIA, against the base model as control.

    python recipes/robustness.py --run_dir outputs/synthetic_text
    python recipes/robustness.py --run_dir outputs/synthetic_image --probes relearn,exposure --relearn_seeds 0 1 2
    python recipes/robustness.py --run_dir outputs/synthetic_both --quick true --retrained_reference true

Probes (`--probes`, comma-separated): variants (first name, typo, title, ...), relearn (a benign contrastive
fine-tune, then the attack), exposure (who moved most between the base and the defended model; what the
defended model alone gives away), collateral (other seeded candidate lists), precision (fp16, bf16, int8).
`--quick true` is a small preset for demos and tests; explicit flags win. `--retrained_reference true`
(synthetic world only) pretrains the tiny CLIP again without the removed people (cached) and probes it too.
Every flag of `RobustnessConfig` works; `--help` lists them.

Writes `<run_dir>/private/report/robustness.{json,md}` (names: never publish) and the name-free `robustness`
section of `<run_dir>/unlearning_summary.json`, and prints the table.
"""

from dataclasses import dataclass, field

from hf_privacy_backdoor.cli import parse_args, run_recipe, setup_logging
from hf_privacy_backdoor.robustness import RobustnessConfig, format_table, run_robustness
from hf_privacy_backdoor.run_folder import ROBUSTNESS_MD, RunFiles


@dataclass
class RobustnessArguments:
    run_dir: str | None = field(
        default=None, metadata={"help": "Run folder of recipes/unlearn.py (with its private/ folder; required)."}
    )
    write: bool = field(default=True, metadata={"help": "Write the reports and the summary section."})
    verbose: bool = field(default=False, metadata={"help": "Log each probe."})


def main(argv=None):
    args, config = parse_args((RobustnessArguments, RobustnessConfig), argv)
    setup_logging(args.verbose)
    if not args.run_dir:
        raise ValueError("--run_dir is required (the output_dir of recipes/unlearn.py)")
    report = run_robustness(args.run_dir, config, write=args.write)
    public = report.public()
    print(f"Robustness of {args.run_dir} ({public['settings']['num_removed']} people removed, "
          f"{public['settings']['seconds']} s)")  # fmt: skip
    print(format_table(public))
    if args.write:
        print(f"private report (names): {RunFiles(report.run_dir).report_dir / ROBUSTNESS_MD}")
    return report


if __name__ == "__main__":
    run_recipe(main)  # a bad input: `error: ...` and exit 2
