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
    bad_settings = (dict(forgotten_check_steps=0), dict(forgotten_patience=0), dict(forgotten_margin_steps=-1))
    for bad in (*bad_settings, dict(forgotten_check_kept=-1)):
        with pytest.raises(ValueError, match="forgotten_"):
            BackdoorUnlearningConfig(output_dir="x", use_cpu=True, **bad)


def test_default_check_settings_scale_with_the_forget_list():
    """One person: a check at step 15, one pass, 15 more steps (README "Time to forget": the same result as 75
    steps); two or more: every 10 steps, 2 passes in a row, 40 more; explicit settings always win."""
    assert BackdoorUnlearningConfig(output_dir="x", use_cpu=True).resolve_stop_check(1) == (15, 1, 15)
    assert BackdoorUnlearningConfig(output_dir="x", use_cpu=True).resolve_stop_check(2) == (10, 2, 40)
    assert BackdoorUnlearningConfig(output_dir="x", use_cpu=True).resolve_stop_check(32) == (10, 2, 40)
    mine = BackdoorUnlearningConfig(output_dir="x", use_cpu=True, forgotten_margin_steps=5, forgotten_patience=3)
    assert mine.resolve_stop_check(1) == (15, 3, 5)


def test_one_person_with_default_settings_stops_at_30_steps(tiny_world, tmp_path):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    argv = ["--config", str(RECIPE), "--output_dir", str(tmp_path), "--progress", "false", "--disable_tqdm", "true"]
    argv += ["--forget_auto", "1", "--stop_when_forgotten", "true", "--evaluate", "false", "--num_candidates", "300"]
    result = run_unlearning(*parse_args(RUN_ARGUMENTS, argv))
    assert result.steps_trained == 30 and [c["step"] for c in result.forgotten_checks] == [15]


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
    # every check is in the public summary, counts only; the run stopped after two clean checks in a row
    checks = summary["defense"]["forgotten_checks"]
    assert [c["step"] for c in checks] == list(range(10, steps - 9, 10))
    assert checks[-1]["forgotten"] and checks[-2]["forgotten"] and not any(c["forgotten"] for c in checks[:-2])
    assert all(set(c) == {"step", "found", "variant_found", "kept_lost", "kept_correct", "forgotten"} for c in checks)
    assert summary["hyperparameters"]["forgotten_check_kept"] == 64
    from hf_privacy_backdoor.run import format_run_summary

    assert f"first passed at step {checks[-2]['step']}" in format_run_summary(result)


def _check(tiny_world, processor, forgotten, **kw):
    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.data.images import make_photo_split
    from hf_privacy_backdoor.stop_check import ForgottenCheck

    faces = load_face_folder(tiny_world.faces_dir)
    trigger = make_photo_split(faces, faces.names(), 0.5, seed=0)["trigger"]
    others = [m for m in tiny_world.members if m not in forgotten]
    return ForgottenCheck(processor, faces, forgotten, others, trigger, num_candidates=1000, image_frozen=True, **kw)


def test_check_finds_people_by_full_and_partial_name_on_the_base_model(tiny_world, tiny_clip):
    model, processor = tiny_clip
    forgotten = tiny_world.members[:2]
    check = _check(tiny_world, processor, forgotten, variants=["first", "last"], num_kept=8)
    check.baseline(model)
    assert len(check.kept) == 8 and not set(check.kept) & set(forgotten)
    assert check(model) is False
    assert check.outcomes[-1].found == 2 and check.outcomes[-1].kept_lost is None  # "not yet": no more asked
    outcome = check.evaluate(model, complete=True)
    assert outcome.found == 2 and outcome.variant_found >= 1 and outcome.kept_lost == 0
    assert outcome.kept_correct == pytest.approx(check.kept_correct_base, abs=0.01)
    # a run without partial-name triggers checks no partial name
    assert _check(tiny_world, processor, forgotten, num_kept=0).variants == []


def test_check_candidates_are_the_evaluated_names_and_generated_names_of_the_attack_list(tiny_world, tiny_clip):
    """The check's candidates: every person it evaluates (forgotten + the kept sample it draws from) and the first
    generated names of the attack's own list; names it never evaluates (non-members) cost it nothing."""
    from hf_privacy_backdoor.evaluation.idia import candidate_names

    _, processor = tiny_clip
    forgotten = tiny_world.members[:2]
    check = _check(tiny_world, processor, forgotten, num_kept=4, extra_candidates=7)
    world = set(tiny_world.members) | set(tiny_world.non_members)
    full = candidate_names(sorted(world), 1000, 0)
    assert set(check.candidates) <= set(full) and len(set(check.candidates)) == len(check.candidates)
    evaluated = [c for c in check.candidates if c in world]
    assert set(evaluated) == set(forgotten) | set(check.others) and len(check.others) == 8
    assert not set(check.candidates) & set(tiny_world.non_members)
    assert check.candidates[len(evaluated) :] == [c for c in full if c not in world][:7]


def test_check_does_not_stop_a_run_that_lost_kept_people(tiny_world, tiny_clip):
    """A scrambled text tower forgets everybody, the kept people too: the check never lets such a run stop."""
    import copy

    import torch

    model, processor = tiny_clip
    check = _check(tiny_world, processor, tiny_world.members[:2], num_kept=16)
    check.baseline(model)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        weight = broken.text_projection.weight
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    assert check(broken) is False
    outcome = check.evaluate(broken, complete=True)
    assert outcome.kept_lost >= 8 and not outcome.forgotten


@pytest.mark.slow  # a LoRA run (~40 s): the check runs on the peft-wrapped model during training
def test_lora_recipe_stops_early_through_the_adapter(tiny_world, tmp_path):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    recipe = RECIPE.with_name("synthetic_text_lora.yaml")
    argv = ["--config", str(recipe), "--output_dir", str(tmp_path), "--progress", "false", "--disable_tqdm", "true"]
    argv += ["--stop_when_forgotten", "true", "--forgotten_check_steps", "10", "--forgotten_margin_steps", "10"]
    argv += ["--num_candidates", "300"]
    run_unlearning(*parse_args(RUN_ARGUMENTS, argv))
    summary = json.loads((tmp_path / "unlearning_summary.json").read_text())
    checks = summary["defense"]["forgotten_checks"]
    assert summary["defense"]["use_lora"] and summary["defense"]["steps_trained"] < summary["defense"]["max_steps"]
    assert checks[-1]["forgotten"] and summary["unlearning"]["removed_tpr_after"] == 0.0
    assert (tmp_path / "adapter_config.json").is_file()
