"""Stop when forgotten: training ends once a cheap attack on trigger photos finds nobody, and the result holds."""

import json
import os
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState

from hf_privacy_backdoor.cli import parse_args
from hf_privacy_backdoor.config import BackdoorUnlearningConfig
from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning
from hf_privacy_backdoor.trainer import StopWhenForgottenCallback


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_text.yaml"


def _drive(callback, steps):
    state, control = TrainerState(), TrainerControl()
    for step in range(1, steps + 1):
        state.global_step = step
        callback.on_step_end(None, state, control, model=None)
        if control.should_training_stop:
            return step
    return None


def test_stops_after_patience_checks_plus_margin():
    answers = iter([False, True, False, True, True, True])
    callback = StopWhenForgottenCallback(lambda model: next(answers), every=10, patience=2, margin=5)
    assert _drive(callback, 200) == 55  # forgotten at 40 and 50 -> 5 more steps
    assert callback.history == [(10, False), (20, True), (30, False), (40, True), (50, True)]


def test_never_forgotten_never_stops():
    callback = StopWhenForgottenCallback(lambda model: False, every=10, patience=1, margin=0)
    assert _drive(callback, 100) is None and len(callback.history) == 10


def test_bad_settings_are_errors():
    for bad in (dict(forgotten_check_steps=0), dict(forgotten_patience=0), dict(forgotten_margin_steps=-1)):
        with pytest.raises(ValueError, match="forgotten_"):
            BackdoorUnlearningConfig(output_dir="x", use_cpu=True, **bad)


def test_text_recipe_stops_early_and_still_forgets(tiny_world, tmp_path):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    argv = ["--config", str(RECIPE), "--output_dir", str(tmp_path), "--progress", "false", "--disable_tqdm", "true"]
    argv += ["--stop_when_forgotten", "true", "--forgotten_check_steps", "10", "--forgotten_margin_steps", "10"]
    argv += ["--num_candidates", "300"]
    result = run_unlearning(*parse_args(RUN_ARGUMENTS, argv))
    summary = json.loads((tmp_path / "unlearning_summary.json").read_text())
    steps = summary["defense"]["steps_trained"]
    assert steps < summary["defense"]["max_steps"] == 200
    assert steps % 10 == 0 and steps >= 30  # two forgotten checks (patience 2) + the 10-step margin
    assert summary["unlearning"]["removed_tpr_after"] == 0.0  # the real attack, on the evaluation photos
    kept = [c for c in result.comparison.people if not c.removed]
    assert sum(c.category == "wrongfully_unlearned" for c in kept) <= 0.05 * len(kept)
