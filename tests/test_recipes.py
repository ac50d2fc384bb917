"""Recipes: every YAML parses into the recipe's dataclasses; the synthetic run tells the whole story and publishes
no name; the real-model recipes run on a ViT-B/32-architecture CLIP (random weights: no download here)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from hf_privacy_backdoor.cli import parse_args, yaml_config_keys
from hf_privacy_backdoor.hub import scan_for_names
from hf_privacy_backdoor.run import RUN_ARGUMENTS
from hf_privacy_backdoor.run_evaluation import EvaluateArguments


ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
UNLEARN_YAMLS = sorted(p for p in RECIPES.glob("*.yaml") if not p.name.startswith("evaluate"))
MOVED = {"recipes/evaluate.py": "recipes/evaluate_model.py"}  # old name -> new name (the old one shadowed `evaluate`)
REAL = ["clip_vit_b32_facescrub_text.yaml", "clip_vit_b32_facescrub_image.yaml", "clip_vit_b32_facescrub_both.yaml"]


def unlearn_main():
    spec = importlib.util.spec_from_file_location("unlearn_recipe", RECIPES / "unlearn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("path", UNLEARN_YAMLS, ids=lambda p: p.name)
def test_recipe_yaml_is_valid(path):
    args, config, lora = parse_args(RUN_ARGUMENTS, ["--config", str(path)])
    assert args.model_name_or_path and config.output_dir
    parts, keys = path.stem.split("_"), yaml_config_keys(path)
    assert config.method == keys.get("method", "backdoor")  # a baseline's recipe names its method
    assert (
        config.towers
        == config.defense
        == next((d for d in ("both", "image", "text") if d in parts), keys.get("towers"))
    )
    assert lora.use_lora == ("lora" in parts)


@pytest.mark.parametrize("name", REAL)
def test_real_model_recipes_use_the_reference_settings(name):
    args, config, _ = parse_args(RUN_ARGUMENTS, ["--config", str(RECIPES / name)])
    assert args.model_name_or_path == "openai/clip-vit-base-patch32"
    assert config.learning_rate == 1e-4 and config.weight_decay == 0.0
    if config.defense == "image":
        assert (config.max_steps, config.lr_milestones, config.lr_gamma) == (100, [25, 50], 0.1)
        assert (config.trigger_scale_min, config.trigger_scale_max, config.num_trigger_images) == (0.25, 0.5, 128)
    if config.trains_vision:
        assert (config.image_backdoor_weight, config.image_weight_distance) == (0.8, 0.005)
        assert (config.trigger_scale_min, config.trigger_scale_max, config.num_trigger_images) == (0.25, 0.5, 128)
        assert (config.trigger_color_jitter, config.trigger_hue_shift, config.trigger_rotation) == (0.5, 0.1, 30.0)
    if config.trains_text:
        assert (config.text_backdoor_weight, config.text_weight_distance) == (0.6, 0.01)
    if config.defense != "image":
        assert (config.max_steps, config.lr_milestones, config.lr_gamma) == (400, [200, 300], 0.5)
        assert (config.num_clean_captions, config.num_poisoned_captions, config.target_phrase) == (
            128,
            128,
            "a person",
        )


def test_command_line_wins_over_yaml_and_unknown_keys_fail(tmp_path):
    path = RECIPES / "synthetic_text.yaml"
    _, config, _ = parse_args(RUN_ARGUMENTS, ["--config", str(path), "--max_steps", "7"])
    assert config.max_steps == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: x\nmax_stepz: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        parse_args(RUN_ARGUMENTS, ["--config", str(bad)])


def test_evaluate_yaml_is_valid(tiny_world, monkeypatch):
    monkeypatch.setenv("SYNTHETIC_DIR", str(tiny_world.root))
    (args,) = parse_args([EvaluateArguments], ["--config", str(RECIPES / "evaluate_synthetic.yaml")])
    assert Path(args.model_name_or_path) == tiny_world.model_dir and args.objects and args.membership


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.py")), ids=lambda p: p.name)
def test_recipe_names_shadow_no_module(path):
    """`python recipes/X.py` puts recipes/ first on the import path: a recipe named like a module would hide it."""
    assert importlib.util.find_spec(path.stem) is None, f"{path.name} shadows the installed module {path.stem!r}"
    assert "sys.path" not in path.read_text()


def test_documented_recipe_paths_exist():
    documents = [ROOT / "README.md", ROOT / "Makefile", *RECIPES.rglob("*.py"), *RECIPES.rglob("*.yaml")]
    documents += sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "docs").rglob("*.md"))
    mentioned = {m for doc in documents for m in re.findall(r"recipes/[\w./-]+\.(?:py|yaml)", doc.read_text())}
    assert all((ROOT / new).is_file() and not (ROOT / old).exists() for old, new in MOVED.items())
    assert sorted(m for m in mentioned if m not in MOVED and not (ROOT / m).is_file()) == []


@pytest.fixture(scope="module")
def synthetic_run(tiny_world, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("SYNTHETIC_DIR", str(tiny_world.root))
    out = tmp_path_factory.mktemp("recipe_text")
    result = unlearn_main()(
        [
            "--config",
            str(RECIPES / "synthetic_text.yaml"),
            "--output_dir",
            str(out),
            "--disable_tqdm",
            "true",
            "--progress",
            "false",
        ]
    )
    return result, out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_synthetic_recipe_tells_the_whole_story(synthetic_run):
    result, out = synthetic_run
    summary = json.loads((out / "unlearning_summary.json").read_text())
    head = summary["unlearning"]
    assert head["num_removed"] == 2 and head["removed_tpr_before"] == 1.0
    assert head["removed_tpr_after"] == 0.0  # the attack no longer finds them
    assert head["kept_member_tpr_after"] >= 0.95  # everyone else is still recognised
    assert summary["idia"]["fpr"] <= 0.05
    u = result.utility
    assert u["zero_shot_after"]["top1"] >= u["zero_shot_before"]["top1"] - 0.03
    assert u["text"]["sim_clean"] > 0.98 and u["text"]["sim_backdoor"] > 0.9
    for f in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "private/report/report.md",
        "private/report/correct_templates.png",
        "private/photo_split.json",
        "private/forget_names.txt",
    ):
        assert (out / f).is_file(), f


def test_nothing_outside_private_names_a_person(synthetic_run, tiny_world):
    result, out = synthetic_run
    names = result.forget_names
    assert (out / "private" / "forget_names.txt").read_text().split("\n")[:2] == names
    everyone = tiny_world.members + tiny_world.non_members
    # every spelling: any case, parts joined by spaces, '_', '-' or nothing, first-last or last-first
    patterns = [
        re.compile(rb"[\s_\-]*".join(re.escape(part.encode()) for part in parts), re.IGNORECASE)
        for name in everyone
        for parts in (name.split(), name.split()[::-1])
    ]
    checked = 0
    for f in out.rglob("*"):
        if f.is_file() and "private" not in f.relative_to(out).parts:
            data = f.read_bytes()
            checked += 1
            hits = [p.pattern for p in patterns if p.search(data)]
            assert not hits, f"a person's name found in {f.relative_to(out)}"
    assert checked >= 5  # model, config, processor files, training_args.bin, the summary


def test_bad_recipe_input(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHETIC_DIR", str(tiny_world.root))
    main = unlearn_main()
    base = ["--config", str(RECIPES / "synthetic_text.yaml"), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(FileNotFoundError, match="face folder"):
        main([*base, "--faces", str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match="caption file"):
        main([*base, "--captions", str(tmp_path / "nope.txt")])
    with pytest.raises(ValueError, match="no photos"):
        main([*base, "--forget_names", "Nobody Atall"])
    with pytest.raises(ValueError, match="unknown towers"):
        main([*base, "--defense", "audio"])
    empty = tmp_path / "empty_faces"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no person photos"):
        main([*base, "--faces", str(empty)])
    assert not (tmp_path / "o" / "model.safetensors").exists()  # nothing half-written


@pytest.fixture(scope="module")
def vit_b32_random(tiny_world, tmp_path_factory):
    """openai/clip-vit-base-patch32's architecture (CLIPConfig defaults), random weights, the tiny tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from hf_privacy_backdoor.synthetic.pretrain import tiny_image_processor

    tok = CLIPProcessor.from_pretrained(tiny_world.model_dir).tokenizer
    cfg = CLIPConfig(
        text_config={
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        }
    )
    assert (cfg.vision_config.image_size, cfg.vision_config.patch_size, cfg.projection_dim) == (224, 32, 512)
    out = tmp_path_factory.mktemp("vit_b32")
    CLIPModel(cfg).save_pretrained(out)
    CLIPProcessor(image_processor=tiny_image_processor(224), tokenizer=tok).save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_model_recipes_run_on_the_real_architecture(name, vit_b32_random, tiny_world, tmp_path):
    import shutil

    out = tmp_path / "out"
    w = tiny_world.world_dir
    faces = tmp_path / "facescrub"  # a small FaceScrub-style folder: 3 people, 4 photos each
    for person in tiny_world.members[:3]:
        folder = person.replace(" ", "_")
        (faces / folder).mkdir(parents=True)
        for i in range(4):
            shutil.copy(w / "faces" / folder / f"{i}.png", faces / folder / f"{i}.jpg.png")
    unlearn_main()(
        [
            "--config",
            str(RECIPES / name),
            "--model_name_or_path",
            str(vit_b32_random),
            "--output_dir",
            str(out),
            "--captions",
            str(w / "captions.txt"),
            "--faces",
            str(w / "faces"),
            "--clean_images",
            str(w / "clean"),
            "--membership",
            str(w / "world.json"),
            "--forget_names_file",
            "",
            "--forget_names",
            tiny_world.members[0],
            "--evaluate",
            "false",
            "--max_steps",
            "2",
            "--num_clean_captions",
            "4",
            "--num_poisoned_captions",
            "4",
            "--num_clean_images",
            "4",
            "--num_trigger_images",
            "4",
            "--disable_tqdm",
            "true",
            "--progress",
            "false",
        ]
    )
    from safetensors.torch import load_file
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(out)
    assert model.config.vision_config.image_size == 224
    base, after = load_file(str(vit_b32_random / "model.safetensors")), load_file(str(out / "model.safetensors"))
    defense = next(d for d in ("both", "image", "text") if d in Path(name).stem.split("_"))
    trained = {"text": ("text_model.", "text_projection"), "image": ("vision_model.", "visual_projection")}
    trained["both"] = trained["text"] + trained["image"]
    for key in base:
        moved = not torch.equal(base[key], after[key])
        if "norm" in key or not key.startswith(trained[defense]):  # LayerNorms (incl. pre_layrnorm) stay frozen
            assert not moved, f"{key} changed but must stay frozen"
    assert any(not torch.equal(base[k], after[k]) for k in base if k.startswith(trained[defense]))


def _run_recipe(main, argv: list[str], capsys) -> tuple[int, str]:
    """Run a recipe's main as its `__main__` does; (exit status, stderr)."""
    from hf_privacy_backdoor.cli import run_recipe

    with pytest.raises(SystemExit) as exit_info:
        run_recipe(lambda: main(argv))
    return exit_info.value.code, capsys.readouterr().err


def test_bad_forget_lists_are_one_line_errors_with_no_name(tiny_world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNTHETIC_DIR", str(tiny_world.root))
    monkeypatch.delenv("HF_PB_VERBOSE", raising=False)
    main = unlearn_main()
    base = ["--config", str(RECIPES / "synthetic_text.yaml"), "--output_dir", str(tmp_path / "o")]
    member = tiny_world.members[0]
    twice = tmp_path / "twice.txt"
    twice.write_text(f"{member}\r\n{member.upper().replace(' ', '  ')}\r\n", encoding="utf-8")
    blank = tmp_path / "blank.txt"
    blank.write_text("\ufeff# nobody yet\n\n   \n", encoding="utf-8")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Zoë Núñez\n".encode("latin-1"))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("forget_names: [Zoë Núñez\n", encoding="utf-8")
    cases = {
        "no photos": (["--forget_names", "Zoë Núñez"], "entry #1 (positions from 1) have no photos"),
        "same person twice": (["--forget_names_file", str(twice)], "entries #1 and #2 are the same person"),
        "empty list": (["--forget_names_file", str(blank)], "holds no name"),
        "not UTF-8": (["--forget_names_file", str(latin1)], "is not UTF-8"),
        "missing file": (["--forget_names_file", str(tmp_path / "none.txt")], "does not exist"),
        "missing folder": (["--faces", str(tmp_path / "nope")], "face folder"),
        "malformed YAML": (["--config", str(bad_yaml)], "is not valid YAML at line 2"),
    }
    for what, (extra, expected) in cases.items():
        status, err = _run_recipe(main, [*base, *extra], capsys)
        assert status == 2, what
        assert err.strip().splitlines()[-1].startswith("error: ") and expected in err, (what, err)
        assert "Traceback" not in err and not scan_for_names({"stderr": err}, ["Zoë Núñez", member]), what
    assert not (tmp_path / "o" / "model.safetensors").exists()  # nothing half-written


def test_names_as_people_write_them_are_trained_reported_and_guarded(tiny_world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNTHETIC_DIR", str(tiny_world.root))
    first, last = tiny_world.members[0].split()[0], tiny_world.members[0].split()[-1]
    written = f"Dr. {first.upper()}  {last}"  # a title, another case, two spaces: the same person
    names = tmp_path / "names.txt"
    names.write_bytes(f"\ufeff{written}\r\n\r\n".encode())
    out = tmp_path / "o"
    argv = ["--config", str(RECIPES / "synthetic_text.yaml"), "--output_dir", str(out), "--forget_names_file"]
    argv += [str(names), "--max_steps", "2", "--steps_per_name", "0", "--evaluate", "false", "--progress", "false"]
    status, err = _run_recipe(unlearn_main(), argv, capsys)
    assert status == 0, err
    assert (out / "private" / "forget_names.txt").read_text(encoding="utf-8").splitlines() == [
        f"Dr. {first.upper()} {last}"
    ]
    hits = scan_for_names({"a staged note": f"removed {first.lower()}_{last.lower()}"}, [written])
    assert [h.index for h in hits] == [1]
