"""Benchmark building the synthetic world and pretraining its tiny CLIP, and reading the build back from the cache.

The tests, the demo and the other benchmarks share one cached build (`get_or_build_synthetic`); this times a
fresh one in a temporary folder (the cache is left alone) against its budget of 300 s on 2 CPU cores:

    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py
    OMP_NUM_THREADS=1 python benchmarks/bench_synthetic.py --pretrain_steps 50 --output outputs/bench_synthetic.json

Prints one table and writes the numbers (with the machine and versions) as JSON to `--output`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import machine_info, print_table_and_save  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUDGET_S = 300.0  # a fresh build of the default world + model on 2 CPU cores (docs/synthetic.md: a few minutes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain_steps", type=int, default=None, help="pretraining steps (default: the model's)")
    parser.add_argument("--budget_s", type=float, default=BUDGET_S, help="seconds a default build may take")
    parser.add_argument("--quick", action="store_true", help="20 pretraining steps (a smoke run of the build)")
    parser.add_argument("--output", default="outputs/bench_synthetic.json", help="where the JSON results go")
    args = parser.parse_args(argv)
    if args.quick:
        args.pretrain_steps = 20
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    from hf_privacy_backdoor.synthetic import PretrainConfig, WorldConfig, get_or_build_synthetic

    world_config = WorldConfig()
    pretrain_config = PretrainConfig()
    if args.pretrain_steps is not None:
        pretrain_config = dataclasses.replace(pretrain_config, steps=args.pretrain_steps)
    with tempfile.TemporaryDirectory(prefix="bench_synthetic_") as tmp:
        start = time.perf_counter()
        get_or_build_synthetic(world_config, pretrain_config, cache_dir=tmp, progress=False)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        get_or_build_synthetic(world_config, pretrain_config, cache_dir=tmp, progress=False)  # reads it back
        reuse_s = time.perf_counter() - start
    row = {
        "pretrain_steps": pretrain_config.steps,
        "build_s": round(build_s, 1),
        "budget_s": args.budget_s,
        "within_budget": build_s <= args.budget_s,
        "cached_reuse_s": round(reuse_s, 3),
    }
    report = {
        "results": row,
        "settings": {**vars(args), "world_config": dataclasses.asdict(world_config)},
        "machine": machine_info(),
    }
    print_table_and_save([row], list(row), report, args.output)
    return report


if __name__ == "__main__":
    main()
