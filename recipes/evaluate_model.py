"""Evaluate a CLIP model: the identity inference attack (privacy) and zero-shot accuracy (utility).

One process:

    python recipes/evaluate_model.py --model_name_or_path DIR --faces WORLD/faces --membership WORLD/world.json \\
        --objects WORLD/objects --output_dir out/after

Several processes (photos and prompts are shared between them; the result is identical):

    accelerate launch --multi_gpu --num_processes 2 recipes/evaluate_model.py --model_name_or_path DIR \\
        --faces WORLD/faces --membership WORLD/world.json --output_dir out/after

Judging a defense: evaluate the original model first, then the defended one against it, both on the
evaluation photos only (`--photo_split`: the trigger photos the defense trained on are never evaluated):

    python recipes/evaluate_model.py --model_name_or_path ORIGINAL --faces WORLD/faces \\
        --membership WORLD/world.json --photo_split DEFENSE/photo_split.json --output_dir out/before
    python recipes/evaluate_model.py --model_name_or_path DEFENDED --faces WORLD/faces \\
        --membership WORLD/world.json --photo_split DEFENSE/photo_split.json --before out/before/attack.json \\
        --removed "Ada Lovelace" --output_dir out/after

From a YAML file (command-line flags win): `python recipes/evaluate_model.py --config recipes/evaluate_synthetic.yaml`.
Writes `attack.json`, `report.json`, `report.md` and `correct_templates.png` to `--output_dir`.
(This recipe was `recipes/evaluate.py`; its logic lives in `hf_privacy_backdoor.run_evaluation`.)
"""

from hf_privacy_backdoor.cli import parse_args as parse_dataclasses
from hf_privacy_backdoor.cli import run_recipe, setup_logging
from hf_privacy_backdoor.run_evaluation import (
    EvaluateArguments,
    EvaluationResult,
    format_evaluation_summary,
    run_evaluation,
)


def parse_args(argv: list[str] | None = None) -> EvaluateArguments:
    """Parse flags; `--config file.yaml` supplies defaults that command-line flags override."""
    return parse_dataclasses([EvaluateArguments], argv)[0]


def main(argv: list[str] | None = None) -> EvaluationResult:
    args = parse_args(argv)
    setup_logging()
    result = run_evaluation(args)
    if result.report_paths is not None:  # the main process
        print(format_evaluation_summary(result))
    if result.metrics_commit:
        print(f"card metrics updated on {args.push_metrics_to}: {result.metrics_commit}")
    return result


if __name__ == "__main__":
    run_recipe(main)  # a bad input: `error: ...` and exit 2; a failed metrics push: exit 1
