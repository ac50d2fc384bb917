"""Two CPU processes under accelerate (gloo): replicas stay identical and match a one-process run; a launch that
starts fewer processes than it was asked for fails."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_privacy_backdoor.distributed import check_launch


ROOT = Path(__file__).resolve().parents[1]


# what accelerate's single-process launcher exports when asked for 2 processes (`--cpu`, a MULTI_CPU config)
SIMPLE_LAUNCHER_ASKED_FOR_TWO = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize(
    "environ",
    [{}, {"ACCELERATE_USE_CPU": "False"}, {"WORLD_SIZE": "1"}, {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"}],
    ids=["plain python", "accelerate launch, one process", "torchrun, one process", "exported MASTER_ADDR"],
)
def test_a_one_process_launch_passes(environ):
    check_launch(1, environ)


@pytest.mark.parametrize(
    "environ",
    [{**SIMPLE_LAUNCHER_ASKED_FOR_TWO, "WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}],
    ids=["accelerate --multi_gpu", "torchrun"],
)
def test_a_full_process_group_passes(environ):
    check_launch(2, environ)


@pytest.mark.parametrize(
    "num_processes, environ, message",
    [
        (1, SIMPLE_LAUNCHER_ASKED_FOR_TWO, "asked for several processes but started only this one"),
        (1, {"WORLD_SIZE": "2"}, r"one of 2 processes \(WORLD_SIZE=2\), but the process group has 1"),
        (2, {"OMPI_COMM_WORLD_SIZE": "4"}, r"one of 4 processes \(OMPI_COMM_WORLD_SIZE=4\)"),
    ],
    ids=["accelerate's single-process launcher", "torchrun group not formed", "MPI"],
)
def test_fewer_processes_than_asked_fail_with_how_to_launch(num_processes, environ, message):
    with pytest.raises(ValueError, match=message) as err:
        check_launch(num_processes, environ)
    assert "accelerate launch --multi_gpu --num_processes N" in str(err.value)
    assert "recipes/accelerate_configs/multi_cpu.yaml" in str(err.value)


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
