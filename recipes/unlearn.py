"""Remove people from a CLIP model with backdoor unlearning, and measure it with the identity inference attack.

    accelerate launch recipes/unlearn.py --config recipes/synthetic_text.yaml
    accelerate launch recipes/unlearn.py --config recipes/synthetic_text.yaml --forget_auto 3 --output_dir out/x
    accelerate launch --multi_gpu --num_processes 2 recipes/unlearn.py --config recipes/synthetic_both.yaml
    accelerate launch recipes/unlearn.py --config recipes/synthetic_text.yaml --push_to_hub true \
        --hub_model_id OWNER/NAME --base_model_id OWNER/BASE      # then publish (private by default)

`${SYNTHETIC}` in a recipe's paths is the synthetic world's folder: `SYNTHETIC_DIR` if set, else the cached
build (made once by `python recipes/make_synthetic.py` or on first use). Every flag of
`BackdoorUnlearningConfig` (transformers.TrainingArguments included), `UnlearnArguments` and `LoraArguments`
works, from the YAML or the command line (the command line wins). `--help` lists them.

Outputs in --output_dir: the defended model + processor (`save_pretrained`; with LoRA the adapter),
`unlearning_summary.json` (aggregate numbers, no names), the model card `README.md`, and `private/` (names,
photo split, reports with names: never publish it). `--push_to_hub true` publishes an allow-list of files
after the run (never `private/`), refusing if a forgotten name would go out; a failed push exits 1 with the
`recipes/publish.py` command that retries it.
"""

from hf_privacy_backdoor.cli import parse_args, run_recipe, setup_logging
from hf_privacy_backdoor.run import RUN_ARGUMENTS, format_run_summary, run_unlearning


def main(argv=None):
    setup_logging()
    result = run_unlearning(*parse_args(RUN_ARGUMENTS, argv))
    if result.summary:
        print(format_run_summary(result))
    return result


if __name__ == "__main__":
    run_recipe(main)  # a bad input: `error: ...` and exit 2; a failed push: exit 1
