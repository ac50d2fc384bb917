"""Resumable training: a run killed after a checkpoint and resumed ends bit-identical to an uninterrupted run."""

import os
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

import hf_privacy_backdoor.run as run_module
from hf_privacy_backdoor.cli import parse_args
from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_text.yaml"
FORGET = ["Antonio Bryant", "Gabrielle Clayton"]


class Killed(RuntimeError):
    pass


class KillAfterCheckpoint(TrainerCallback):
    """Stops training right after checkpoint `step` is written, as a kill would (no final save)."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after checkpoint-{self.step}")


def _run(tiny_world, out, *extra):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    argv = ["--config", str(RECIPE), "--output_dir", str(out), "--forget_names", *FORGET, "--forget_auto", "0"]
    argv += ["--evaluate", "false", "--progress", "false", "--disable_tqdm", "true", "--max_steps", "12"]
    argv += ["--steps_per_name", "0"]  # exactly 12 steps
    # milestones inside the run, so a scheduler that restarted on resume would show
    argv += ["--lr_milestones", "4", "9", "--lr_gamma", "0.5", "--save_strategy", "steps", "--save_steps", "6"]
    return run_unlearning(*parse_args(RUN_ARGUMENTS, argv + list(extra)))


def _weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    _run(tiny_world, out)
    return out


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tiny_world, tmp_path, uninterrupted, monkeypatch):
    build = run_module.build_trainer

    def build_and_arm(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(KillAfterCheckpoint(6))
        return trainer

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "build_trainer", build_and_arm)
        with pytest.raises(Killed):
            _run(tiny_world, tmp_path)
    assert (tmp_path / "checkpoint-6").is_dir() and not (tmp_path / "model.safetensors").exists()

    _run(tiny_world, tmp_path, "--resume_from_checkpoint", "true")  # the newest checkpoint in output_dir
    resumed, reference = _weights(tmp_path), _weights(uninterrupted)
    assert resumed.keys() == reference.keys()
    different = [k for k in reference if not (resumed[k] == reference[k]).all()]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:3]}"
    # and training did move the text tower (so equality is not trivial)
    base = load_file(str(tiny_world.model_dir / "model.safetensors"))
    assert any(not (base[k] == reference[k]).all() for k in reference if k.startswith("text_model."))


def test_a_checkpoint_never_names_a_forgotten_person(uninterrupted):
    spellings = {s for n in FORGET for s in (n, n.replace(" ", "_"), n.replace(" ", ""), n.lower())}
    checkpoints = sorted(uninterrupted.glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
    assert [c.name for c in checkpoints] == ["checkpoint-6", "checkpoint-12"]
    for file in (f for c in checkpoints for f in c.rglob("*") if f.is_file()):
        data = file.read_bytes().lower()
        hits = [s for s in spellings if s.lower().encode() in data]
        assert not hits, f"{file.relative_to(uninterrupted)} names a forgotten person"


def test_resume_from_a_missing_checkpoint_is_a_clear_error(tiny_world, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint-\\* folder"):
        _run(tiny_world, tmp_path / "fresh", "--resume_from_checkpoint", "true")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _run(tiny_world, tmp_path / "fresh", "--resume_from_checkpoint", str(tmp_path / "nowhere"))
