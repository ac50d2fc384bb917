"""Remove people from a CLIP model with backdoor unlearning, and measure it with the identity inference attack.

    accelerate launch recipes/unlearn.py --config recipes/synthetic_text.yaml
    accelerate launch recipes/unlearn.py --config recipes/synthetic_text.yaml --forget_auto 3 --output_dir out/x
    accelerate launch --multi_gpu --num_processes 2 recipes/unlearn.py --config recipes/synthetic_both.yaml

`${SYNTHETIC}` in a recipe's paths is the synthetic world's folder: `SYNTHETIC_DIR` if set, else the cached
build (made once by `python recipes/make_synthetic.py` or on first use). Every flag of
`BackdoorUnlearningConfig` (transformers.TrainingArguments included) and of `UnlearnArguments` works, from
the YAML or the command line (the command line wins). `--help` lists them.

Outputs in --output_dir: the defended model + processor (`save_pretrained`; with LoRA the adapter),
`unlearning_summary.json` (aggregate numbers, no names), and `private/` (names, photo split, reports with
names: never publish it).
"""

import os
import sys


# recipes/evaluate.py must not shadow the `evaluate` package for anything this script imports
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from hf_privacy_backdoor.cli import parse_args, setup_logging  # noqa: E402
from hf_privacy_backdoor.config import BackdoorUnlearningConfig  # noqa: E402
from hf_privacy_backdoor.run import UnlearnArguments, format_run_summary, run_unlearning  # noqa: E402


def main(argv=None):
    setup_logging()
    args, config = parse_args([UnlearnArguments, BackdoorUnlearningConfig], argv)
    result = run_unlearning(args, config)
    if result.summary:
        print(format_run_summary(result))
    return result


if __name__ == "__main__":
    main()
