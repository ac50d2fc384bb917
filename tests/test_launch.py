"""Every shipped accelerate config does what it says: the CPU one really starts its processes (launched here);
the GPU ones load, validate and reach the right launcher with the right process count (not launched)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands import launch as accelerate_launch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate_configs"
CPU_CONFIGS = {"multi_cpu.yaml": 2}  # launched by the tests: name -> processes it must start
GPU_CONFIGS = {  # name -> (distributed type, processes, the accelerate launcher it must reach)
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 8, "multi_gpu_launcher"),
    "fsdp.yaml": (DistributedType.FSDP, 8, "multi_gpu_launcher"),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 8, "deepspeed_launcher"),
}
LAUNCHERS = ("simple_launcher", "multi_gpu_launcher", "deepspeed_launcher", "tpu_launcher", "sagemaker_launcher")
COUNT_SCRIPT = """
from hf_privacy_backdoor.distributed import distributed_state

state = distributed_state()
print(f"process {0 if state is None else state.process_index} of {1 if state is None else state.num_processes}")
"""


def accelerate_launch_subprocess(launch_args, tmp_path):
    script = tmp_path / "count_processes.py"
    script.write_text(COUNT_SCRIPT)
    # CUDA_VISIBLE_DEVICES="": stay on the CPU (gloo) even where GPUs are visible, as multi_cpu.yaml explains
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, str(script)]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def resolve_launch(config: Path, monkeypatch, *flags: str) -> tuple[str, object]:
    """Which launcher `accelerate launch --config_file config [flags]` would call, and with what: accelerate's own
    argument parsing and validation, the launchers replaced by a recorder."""
    calls = []
    for name in LAUNCHERS:
        monkeypatch.setattr(accelerate_launch, name, lambda *a, _name=name: calls.append((_name, a[-1])))
    args = accelerate_launch.launch_command_parser().parse_args(["--config_file", str(config), *flags, "train.py"])
    accelerate_launch.launch_command(args)
    assert len(calls) == 1
    return calls[0]


def test_every_shipped_config_is_tested():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted({**CPU_CONFIGS, **GPU_CONFIGS})


@pytest.mark.parametrize("name", sorted(CPU_CONFIGS))
def test_cpu_config_starts_the_processes_it_names(name, tmp_path):
    proc = accelerate_launch_subprocess(["--config_file", str(CONFIGS / name)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = CPU_CONFIGS[name]
    # two processes share one pipe: their lines can interleave, so find the reports anywhere in the output
    assert sorted(re.findall(r"process \d+ of \d+", proc.stdout)) == [f"process {rank} of {n}" for rank in range(n)]


@pytest.mark.parametrize("name", sorted(CPU_CONFIGS))
def test_cpu_config_reaches_a_multi_process_launcher(name, monkeypatch):
    launcher, args = resolve_launch(CONFIGS / name, monkeypatch)
    assert launcher == "multi_gpu_launcher"  # accelerate's simple launcher (MULTI_CPU, --cpu) starts ONE process
    assert args.num_processes == CPU_CONFIGS[name] and args.mixed_precision == "no"


@pytest.mark.parametrize("name", sorted(GPU_CONFIGS))
def test_gpu_config_loads_and_validates(name, monkeypatch):
    distributed_type, num_processes, expected_launcher = GPU_CONFIGS[name]
    config = load_config_from_file(str(CONFIGS / name))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == distributed_type and config.num_processes == num_processes
    launcher, args = resolve_launch(CONFIGS / name, monkeypatch)
    assert launcher == expected_launcher and args.num_processes == num_processes and args.num_machines == 1
    assert args.mixed_precision == "bf16"
    assert resolve_launch(CONFIGS / name, monkeypatch, "--num_processes", "4")[1].num_processes == 4  # flag wins
    if distributed_type == DistributedType.FSDP:
        from transformers.models.clip import modeling_clip

        assert args.fsdp_version == 2 and hasattr(modeling_clip, args.fsdp_transformer_layer_cls_to_wrap)
    if distributed_type == DistributedType.DEEPSPEED:
        assert config.deepspeed_config["zero_stage"] == 2


def test_a_launch_that_starts_fewer_processes_than_asked_fails_loudly(tmp_path):
    one_process_config = tmp_path / "multi_cpu_type.yaml"  # what multi_cpu.yaml used to say: starts ONE process
    one_process_config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nnum_machines: 1\nnum_processes: 2\n"
        "machine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\n"
    )
    proc = accelerate_launch_subprocess(["--config_file", str(one_process_config)], tmp_path)
    assert proc.returncode != 0 and "process 0 of 1" not in proc.stdout
    assert "asked for several processes but started only this one" in proc.stderr
    assert "--multi_gpu --num_processes N" in proc.stderr  # says how to launch instead
