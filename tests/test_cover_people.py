"""Cover people and a training length that scales with the forget list, through the recipe's run."""

import json
from pathlib import Path

import pytest

from hf_privacy_backdoor.cli import parse_args
from hf_privacy_backdoor.config import BackdoorUnlearningConfig
from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _run(tiny_world, out, *extra):
    argv = ["--config", str(RECIPES / "synthetic_text.yaml"), "--output_dir", str(out), "--num_candidates", "100"]
    argv += ["--objects", "", "--progress", "false", "--disable_tqdm", "true", *extra]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHETIC_DIR", str(tiny_world.root))
        return run_unlearning(*parse_args(RUN_ARGUMENTS, argv))


def test_cover_people_are_forgotten_with_the_requested_ones_and_steps_scale_with_the_list(tiny_world, tmp_path):
    out = tmp_path / "run"
    result = _run(tiny_world, out, "--max_steps", "2", "--steps_per_name", "1.5", "--cover_auto", "2")
    private = out / "private"
    forgotten = private.joinpath("forget_names.txt").read_text().splitlines()
    cover = private.joinpath("cover_names.txt").read_text().splitlines()
    requested = [n for n in forgotten if n not in cover]
    assert len(forgotten) == 4 and len(cover) == 2 and len(requested) == 2  # forget_auto 2 + 2 cover
    members = json.loads((tiny_world.root / "world" / "world.json").read_text())["members"]
    assert set(forgotten) <= set(members)
    # the requested people are the ones forget_auto picks without cover (cover does not change who asked)
    alone = _run(tiny_world, tmp_path / "alone", "--max_steps", "1", "--steps_per_name", "0")
    assert requested == alone.forget_names
    summary = json.loads((out / "unlearning_summary.json").read_text())
    assert summary["defense"]["num_forgotten"] == 4
    assert summary["defense"]["max_steps"] == summary["defense"]["steps_trained"] == 6  # ceil(1.5 x 4 names)
    published = (out / "unlearning_summary.json").read_text().casefold()
    assert not any(n.casefold() in published for n in forgotten)
    assert not any(
        n.casefold() in json.dumps(json.loads((private / "report" / "report.json").read_text())["settings"]).casefold()
        for n in cover
    )
    assert result.forget_names == forgotten


def test_explicit_cover_names_join_the_forget_list(tiny_world, tmp_path):
    members = json.loads((tiny_world.root / "world" / "world.json").read_text())["members"]
    out = tmp_path / "explicit"
    cover_file = tmp_path / "cover.txt"
    cover_file.write_text(f"# agreed to be removed too\n{members[3]}\n")
    flags = ["--forget_names", *members[:2], "--cover_names", members[2], "--cover_names_file", str(cover_file)]
    result = _run(tiny_world, out, *flags, "--evaluate", "false", "--max_steps", "1", "--steps_per_name", "0")
    assert result.forget_names == members[:4]
    assert (out / "private" / "cover_names.txt").read_text().splitlines() == members[2:4]
    public = [f for f in out.rglob("*") if f.is_file() and "private" not in f.relative_to(out).parts]
    assert public  # the model, its config, the training arguments
    for file in public:  # cover people are as private as the requested ones
        data = file.read_bytes().lower()
        assert not any(n.lower().encode() in data for n in members[:4]), file.name


@pytest.mark.slow  # runs the attack for the cover_auto error; keeps make test under 10 min
def test_cover_and_steps_errors(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="either as names"):
        _run(tiny_world, tmp_path / "a", "--cover_auto", "1", "--cover_names", "Zed Quux")
    with pytest.raises(ValueError, match="on the forget list already"):
        _run(
            tiny_world,
            tmp_path / "b",
            "--forget_names",
            "Zed Quux",
            "--cover_names",
            "zed quux",
            "--evaluate",
            "false",
        )
    with pytest.raises(ValueError, match="cover_auto=99"):
        _run(tiny_world, tmp_path / "c", "--cover_auto", "99", "--max_steps", "1")
    with pytest.raises(ValueError, match="steps_per_name"):
        BackdoorUnlearningConfig(output_dir=str(tmp_path), steps_per_name=-1)
    config = BackdoorUnlearningConfig(output_dir=str(tmp_path), max_steps=200, steps_per_name=12.5)
    assert config.scale_steps(8) == 200 and config.scale_steps(64) == 800
    # the schedule keeps its shape: milestones stretch with the steps (the both recipe: 500 steps, x0.1 at 400, 450)
    config = BackdoorUnlearningConfig(
        output_dir=str(tmp_path), max_steps=500, lr_milestones=[400, 450], steps_per_name=12.5
    )
    assert config.scale_steps(40) == 500 and config.lr_milestones == [400, 450]
    assert config.scale_steps(64) == 800 and config.lr_milestones == [640, 720]
    assert config.scale_steps(64) == 800 and config.lr_milestones == [640, 720]  # once only
    assert not any((tmp_path / d / "private").exists() for d in "abc")  # nothing half-written
