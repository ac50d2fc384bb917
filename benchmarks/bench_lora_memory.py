"""Benchmark LoRA against full fine-tuning: peak memory, mean step time, trainable parameters.

Trains the same text-defense recipe twice for a few steps, once with full fine-tuning and once with LoRA, each
in a fresh process (so that peak memory is the mode's own). Default: the synthetic world's recipe, 50 steps:

    OMP_NUM_THREADS=1 python benchmarks/bench_lora_memory.py
    OMP_NUM_THREADS=1 python benchmarks/bench_lora_memory.py --random_vit_b32 --max_steps 10 \\
        --output outputs/bench_lora_vit_b32.json
    python benchmarks/bench_lora_memory.py --config recipes/clip_vit_b32_facescrub_text_lora.yaml --max_steps 20 \\
        --captions /data/captions.txt --output outputs/bench_lora_b32.json

Flags this script does not know are passed on to the recipe (command line wins over the YAML). Full fine-tuning
keeps a frozen copy of the model as teacher; LoRA reuses the same weights with the adapter switched off.
Memory: peak resident set size of the process (and its growth from the moment the model is loaded), plus
`torch.cuda.max_memory_allocated` on a GPU. Step time: mean wall time per optimizer step, first step excluded.

Prints one table and writes the numbers (with the machine and versions) as JSON to `--output`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import machine_info, print_table_and_save  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("full", "lora")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "recipes" / "synthetic_text.yaml"), help="text recipe YAML")
    parser.add_argument("--max_steps", type=int, default=50, help="training steps per mode")
    parser.add_argument("--full_learning_rate", type=float, default=1e-4, help="learning rate, full fine-tuning")
    parser.add_argument("--lora_learning_rate", type=float, default=1e-3, help="learning rate, LoRA")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--random_vit_b32",
        action="store_true",
        help="train openai/clip-vit-base-patch32's architecture with random weights (memory at real scale, "
        "no download) instead of the recipe's model",
    )
    parser.add_argument("--output", default="outputs/bench_lora.json", help="where the JSON results go")
    parser.add_argument("--quick", action="store_true", help="5 steps per mode (a smoke run)")
    parser.add_argument("--worker", choices=MODES, default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.quick:
        args.max_steps = 5
    return args, rest


def _rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def build_random_vit_b32(folder: Path) -> Path:
    """openai/clip-vit-base-patch32's architecture (CLIPConfig defaults), random weights, the synthetic tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from hf_privacy_backdoor.synthetic import get_or_build_synthetic
    from hf_privacy_backdoor.synthetic.pretrain import tiny_image_processor

    tok = CLIPProcessor.from_pretrained(get_or_build_synthetic(progress=False).model_dir).tokenizer
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    CLIPModel(CLIPConfig(text_config=ids)).save_pretrained(folder)
    CLIPProcessor(image_processor=tiny_image_processor(224), tokenizer=tok).save_pretrained(folder)
    return folder


def worker(args: argparse.Namespace, recipe_argv: list[str]) -> dict:
    """One mode, in this process: parse the recipe, train `max_steps`, measure."""
    import torch
    import yaml
    from transformers import TrainerCallback

    from hf_privacy_backdoor.cli import parse_args as parse_recipe
    from hf_privacy_backdoor.cli import setup_logging, yaml_config_keys
    from hf_privacy_backdoor.data.captions import load_captions, read_name_file
    from hf_privacy_backdoor.data.faces import load_membership
    from hf_privacy_backdoor.modeling import load_clip
    from hf_privacy_backdoor.peft_utils import get_peft_config
    from hf_privacy_backdoor.run import RUN_ARGUMENTS
    from hf_privacy_backdoor.trainer import BackdoorUnlearningTrainer

    setup_logging()
    lora = args.worker == "lora"
    lr = args.lora_learning_rate if lora else args.full_learning_rate
    with tempfile.TemporaryDirectory() as tmp:
        recipe = yaml_config_keys(args.config)
        if not lora:  # the LoRA keys of a LoRA recipe do not apply to the full fine-tuning run
            recipe = {k: v for k, v in recipe.items() if not k.startswith("lora_") and k != "base_model_id"}
        config_file = Path(tmp) / "recipe.yaml"
        config_file.write_text(yaml.safe_dump(recipe))
        argv = ["--config", str(config_file), *recipe_argv, "--max_steps", str(args.max_steps)]
        argv += ["--use_lora", str(lora).lower(), "--learning_rate", str(lr), "--output_dir", tmp]
        argv += ["--disable_tqdm", "true", "--logging_steps", str(10**9), "--report_to", "none"]
        run_args, config, lora_args = parse_recipe(RUN_ARGUMENTS, argv)
        if config.defense != "text":
            raise SystemExit(f"this benchmark trains the text defense; {args.config} sets defense {config.defense!r}")
        names = list(run_args.forget_names or [])
        if run_args.forget_names_file:
            names += read_name_file(run_args.forget_names_file)
        if not names:  # who is forgotten does not change the cost: take the first members (no attack needed)
            names = load_membership(run_args.membership)["members"][: max(1, run_args.forget_auto)]

        model, processor = load_clip(run_args.model_name_or_path)
        device = "cuda" if torch.cuda.is_available() and not config.use_cpu else "cpu"
        model.to(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss_start = _rss_mb()
        trainer = BackdoorUnlearningTrainer(
            model=model,
            args=config,
            processing_class=processor,
            forget_names=names,
            captions=load_captions(run_args.captions),
            peft_config=get_peft_config(lora_args, config.defense),
        )
        step_times: list[float] = []

        class StepTimer(TrainerCallback):
            def on_step_begin(self, *_, **__):
                if device == "cuda":
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

            def on_step_end(self, *_, **__):
                if device == "cuda":
                    torch.cuda.synchronize()
                step_times.append(time.perf_counter() - self.start)

        trainer.add_callback(StepTimer())
        trainer.train()
        measured = step_times[1:] or step_times
        params = list(trainer.model.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        teacher = sum(p.numel() for p in trainer.teacher.parameters()) if trainer.teacher is not None else 0
        row = {
            "mode": args.worker,
            "learning_rate": lr,
            "steps": len(step_times),
            "mean_step_s": round(sum(measured) / len(measured), 4),
            "trainable_params": trainable,
            "total_params": sum(p.numel() for p in params),
            "teacher_copy_params": teacher,
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "rss_growth_mb": round(max(0.0, _peak_rss_mb() - rss_start), 1),
            "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
            "device": device,
            "num_clean_captions": config.num_clean_captions,
            "num_poisoned_captions": config.num_poisoned_captions,
        }
        if lora:
            row.update(lora_r=lora_args.lora_r, lora_target_modules=lora_args.target_modules(config.defense))
    return row


def main(argv: list[str] | None = None) -> dict:
    args, recipe_argv = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args, recipe_argv)))
        return {}
    rows = []
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--random_vit_b32"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.random_vit_b32:
            from hf_privacy_backdoor.cli import setup_logging

            setup_logging()
            forwarded += ["--model_name_or_path", str(build_random_vit_b32(Path(tmp) / "vit_b32"))]
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--worker", mode, *forwarded]
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                raise SystemExit(f"the {mode} run failed (exit {done.returncode})")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    import torch

    report = {
        "results": rows,
        "settings": {**{k: v for k, v in vars(args).items() if k != "worker"}, "recipe_flags": recipe_argv},
        "model": "random-weight ViT-B/32 architecture" if args.random_vit_b32 else "the recipe's",
        "machine": machine_info(torch_threads=int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))),
    }
    keys = ["mode", "trainable_params", "total_params", "teacher_copy_params", "mean_step_s", "peak_rss_mb"]
    keys += ["rss_growth_mb"] + (["cuda_peak_mb"] if any(r["cuda_peak_mb"] is not None for r in rows) else [])
    print_table_and_save(rows, keys, report, args.output)
    return report


if __name__ == "__main__":
    main()
