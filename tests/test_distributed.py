"""Two CPU processes under accelerate (gloo): replicas stay identical and match a one-process run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


ROOT = Path(__file__).resolve().parents[1]


def launch(args, tiny_world, num_processes):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "SYNTHETIC_DIR": str(tiny_world.root)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if num_processes > 1:
        cmd += ["--multi_gpu", "--num_processes", str(num_processes)]
    else:
        cmd += ["--num_processes", "1"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = subprocess.run(
        cmd + [str(ROOT / "recipes" / "unlearn.py"), *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["synthetic_text.yaml", "synthetic_both.yaml"])
def test_two_processes_keep_replicas_identical_and_match_one(recipe, tiny_world, tmp_path):
    names = tiny_world.members[:2]
    common = [
        "--config",
        str(ROOT / "recipes" / recipe),
        "--evaluate",
        "false",
        "--forget_names",
        *names,
        "--max_steps",
        "8",
        "--disable_tqdm",
        "true",
        "--progress",
        "false",
    ]
    launch([*common, "--output_dir", str(tmp_path / "two")], tiny_world, 2)
    launch([*common, "--output_dir", str(tmp_path / "one")], tiny_world, 1)
    info = json.loads((tmp_path / "two" / "private" / "run_info.json").read_text())
    assert info["num_processes"] == 2  # a real process group, not two independent runs
    assert len(set(info["replica_checksums"])) == 1
    # the global batch is the same whatever the process count: same training up to float summation order
    # (Adam turns float noise on near-zero gradients into +-lr steps, hence a relative tolerance)
    base = load_file(str(tiny_world.model_dir / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    diff = sum(((one[k] - two[k]) ** 2).sum() for k in one) ** 0.5
    update = sum(((one[k] - base[k]) ** 2).sum() for k in one) ** 0.5
    assert update > 0 and diff / update < 0.1
    assert not torch.equal(
        one["text_model.encoder.layers.0.mlp.fc1.weight"], base["text_model.encoder.layers.0.mlp.fc1.weight"]
    )
