"""The baselines (retain_finetune, grad_ascent, grad_diff): their loss, runs full and LoRA on either tower, a
bit-identical resume, the card naming the method, and (slow) two processes training as one."""

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_resume import KillAfterCheckpoint, Killed

import hf_privacy_backdoor.run as run_module
from hf_privacy_backdoor.cli import parse_args
from hf_privacy_backdoor.losses import grouped_contrastive_loss
from hf_privacy_backdoor.methods import METHODS, get_method
from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning


ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("retain_finetune", "grad_ascent", "grad_diff")


def test_grouped_contrastive_loss_on_a_hand_computed_batch():
    """Two orthogonal pairs, logit scale 1: every image's own caption has logit 1, the other 0, so each
    cross-entropy is log(1 + e^-1); a group is the mean of its images' and captions' terms."""
    embeds = torch.eye(2)
    positives = torch.eye(2, dtype=torch.bool)
    group = torch.tensor([True, False])
    terms = grouped_contrastive_loss(embeds, embeds, positives, torch.tensor(0.0), group, group)
    assert terms[True].item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert terms[False].item() == pytest.approx(math.log(1 + math.exp(-1)))
    # a mismatched forget pair (image 0 embeds like caption 1) costs log(1 + e^1) on image 0's side
    images = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    terms = grouped_contrastive_loss(images, embeds, positives, torch.tensor(0.0), group, torch.tensor([True, False]))
    assert terms[True].item() == pytest.approx((math.log(1 + math.e) + math.log(2)) / 2)
    only_forget = grouped_contrastive_loss(embeds, embeds, positives, torch.tensor(0.0), group | True, group | True)
    assert False not in only_forget


@pytest.mark.parametrize(
    "method, expected", [("grad_ascent", -2.0 * 3.0), ("grad_diff", -2.0 * 3.0 + 0.5 * 5.0), ("retain_finetune", 2.5)]
)
def test_each_baseline_combines_its_terms_as_its_paper_does(method, expected):
    trainer = object.__new__(get_method(method).trainer)
    trainer.args = SimpleNamespace(forget_weight=2.0, retain_weight=0.5)
    assert trainer.combine(torch.tensor(3.0), torch.tensor(5.0)).item() == pytest.approx(expected)


def _argv(tiny_world, method, out, *extra, steps=3):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    argv = ["--config", str(ROOT / "recipes" / f"synthetic_{method}.yaml"), "--output_dir", str(out)]
    argv += ["--forget_names", *tiny_world.members[:2], "--forget_auto", "0", "--evaluate", "false"]
    argv += ["--progress", "false", "--disable_tqdm", "true", "--retain_faces_per_person", "2"]
    argv += ["--num_forget_pairs", "8", "--num_retain_pairs", "8"] + (["--max_steps", str(steps)] if steps else [])
    return argv + list(extra)


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("towers, lora", [("text", False), ("image", True)])
def test_a_baseline_trains_only_its_tower_full_or_through_lora(method, towers, lora, tiny_world, tmp_path):
    result = run_unlearning(*parse_args(RUN_ARGUMENTS, _argv(tiny_world, method, tmp_path, "--towers", towers,
                                                              "--use_lora", str(lora).lower())))  # fmt: skip
    assert result.steps_trained == 3
    base = load_file(str(tiny_world.model_dir / "model.safetensors"))
    if lora:
        adapter = load_file(str(tmp_path / "adapter_model.safetensors"))
        assert adapter and all("vision_model" in k for k in adapter)
        assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # it moved
        return
    after = load_file(str(tmp_path / "model.safetensors"))
    frozen = [k for k in base if k.startswith(("vision_model.", "visual_projection"))]
    assert all(torch.equal(base[k], after[k]) for k in frozen)  # the other tower is bit-identical
    assert not torch.equal(
        base["text_model.encoder.layers.0.mlp.fc1.weight"], after["text_model.encoder.layers.0.mlp.fc1.weight"]
    )
    state = (tmp_path / "private" / "forget_names.txt").read_text()
    assert tiny_world.members[0] in state  # names live in private/ only
    for name in ("training_args.bin",):
        blob = (tmp_path / name).read_bytes()
        assert not any(part.encode() in blob for n in tiny_world.members[:2] for part in n.split())


@pytest.mark.parametrize("method", BASELINES)
def test_a_resumed_baseline_is_bit_identical_to_an_uninterrupted_one(method, tiny_world, tmp_path, monkeypatch):
    extra = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--logging_steps", "1"]
    run_unlearning(*parse_args(RUN_ARGUMENTS, _argv(tiny_world, method, tmp_path / "one", *extra)))
    build = run_module.build_trainer

    def build_and_arm(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(KillAfterCheckpoint(3))
        return trainer

    monkeypatch.setattr(run_module, "build_trainer", build_and_arm)
    with pytest.raises(Killed):
        run_unlearning(*parse_args(RUN_ARGUMENTS, _argv(tiny_world, method, tmp_path / "two", *extra)))
    monkeypatch.setattr(run_module, "build_trainer", build)
    resume = ["--resume_from_checkpoint", "true"]
    run_unlearning(*parse_args(RUN_ARGUMENTS, _argv(tiny_world, method, tmp_path / "two", *extra, *resume)))
    one, two = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    assert all(torch.equal(one[k], two[k]) for k in one)
    state = (tmp_path / "two" / "checkpoint-3" / "trainer_state.json").read_text()
    assert '"forget"' in state or '"retain"' in state  # the per-term metrics are logged, and no name is
    assert not any(part in state for n in tiny_world.members[:2] for part in n.split())


def test_the_card_and_summary_name_the_method_its_paper_and_the_data_it_needed():
    from hf_privacy_backdoor.hub.card import render_model_card

    for method in [m for m in METHODS if m != "backdoor"]:
        config = get_method(method).config(output_dir="/tmp/unused", towers="both", use_cpu=True)
        record = config.method_record()
        assert record["method"] == method and record["paper_url"].startswith("https://arxiv.org/abs/")
        summary = {"defense": {**record, "num_forgotten": 2}, "hyperparameters": {"method": method}}
        text = render_model_card(summary, base_model_id=None, adapter=False).text
        assert f"removed by {record['method_title']}" in text and record["paper_url"] in text
        assert record["data_needed"] in text
    backdoor = get_method("backdoor").config(output_dir="/tmp/unused", use_cpu=True).method_record()
    assert backdoor["data_needed"] == "the names only"
    assert "backdoor unlearning" in render_model_card({"defense": backdoor}, base_model_id=None, adapter=False).text


def test_every_method_has_a_recipe_that_parses_to_its_config(tiny_world):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    for name in METHODS:
        recipe = ROOT / "recipes" / f"synthetic_{'text' if name == 'backdoor' else name}.yaml"
        _, config, _ = parse_args(RUN_ARGUMENTS, ["--config", str(recipe), "--output_dir", "/tmp/unused"])
        assert config.method == name and isinstance(config, get_method(name).config)
    with pytest.raises(ValueError, match="unknown method"):
        parse_args(RUN_ARGUMENTS, ["--method", "magic", "--output_dir", "/tmp/unused"])


@pytest.mark.slow
@pytest.mark.parametrize("method", [*BASELINES, "slug"])
def test_two_processes_train_a_baseline_as_one(method, tiny_world, tmp_path):
    from test_distributed import launch

    common = _argv(tiny_world, method, tmp_path, steps=None if method == "slug" else 4)
    common = [a for i, a in enumerate(common) if common[i - 1 : i] != ["--output_dir"] and a != "--output_dir"]
    launch([*common, "--output_dir", str(tmp_path / "two")], tiny_world, 2)
    launch([*common, "--output_dir", str(tmp_path / "one")], tiny_world, 1)
    info = json.loads((tmp_path / "two" / "private" / "run_info.json").read_text())
    assert info["num_processes"] == 2 and len(set(info["replica_checksums"])) == 1
    base = load_file(str(tiny_world.model_dir / "model.safetensors"))
    one, two = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    diff = sum(((one[k] - two[k]) ** 2).sum() for k in one) ** 0.5
    update = sum(((one[k] - base[k]) ** 2).sum() for k in one) ** 0.5
    assert update > 0 and diff / update < 0.1


def test_slug_candidates_are_the_pareto_front_most_important_first():
    from hf_privacy_backdoor.methods.slug import pareto_front

    importance = np.array([0.9, 0.5, 0.8, 0.2, 0.5])
    alignment = np.array([0.9, 0.1, 0.5, 0.05, 0.2])
    # 4 is dominated by 1 (same importance, more aligned); 3 is the least aligned, 0 the most important
    assert pareto_front(importance, alignment) == [0, 2, 1, 3]


def test_slug_moves_exactly_one_weight_matrix_of_its_towers_and_refuses_lora(tiny_world, tmp_path):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    argv = ["--config", str(ROOT / "recipes" / "synthetic_slug.yaml"), "--output_dir", str(tmp_path / "full")]
    argv += ["--forget_names", *tiny_world.members[:2], "--forget_auto", "0", "--evaluate", "false"]
    argv += ["--progress", "false", "--retain_faces_per_person", "4", "--num_retain_pairs", "32", "--towers", "text"]
    result = run_unlearning(*parse_args(RUN_ARGUMENTS, argv))
    base = load_file(str(tiny_world.model_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "full" / "model.safetensors"))
    changed = [k for k in base if not torch.equal(base[k], after[k])]
    assert len(changed) == 1 and changed[0].startswith(("text_model.", "text_projection"))
    assert result.method_details["layer"] == changed[0] and result.method_details["step"] > 0
    assert result.steps_trained == 1
    with pytest.raises(ValueError, match="without LoRA"):
        run_unlearning(*parse_args(RUN_ARGUMENTS, [*argv, "--use_lora", "true", "--output_dir", str(tmp_path / "l")]))
    with pytest.raises(ValueError, match="exactly one step"):
        get_method("slug").config(output_dir="/tmp/unused", max_steps=5, use_cpu=True)


def test_towers_is_its_own_axis_and_defense_stays_its_alias(tiny_world):
    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    image = ["--config", str(ROOT / "recipes" / "synthetic_image.yaml"), "--output_dir", "/tmp/unused"]
    assert parse_args(RUN_ARGUMENTS, image)[1].towers == "image"  # the YAML's `defense: image`
    for flag in ("--towers", "--defense"):  # the command line wins over the recipe, under either name
        config = parse_args(RUN_ARGUMENTS, [*image, flag, "both"])[1]
        assert config.towers == config.defense == "both" and config.trains_text and config.trains_vision
    with pytest.raises(ValueError, match="defense is its alias"):
        get_method("backdoor").config(output_dir="/tmp/unused", towers="text", defense="image", use_cpu=True)
