"""Image-encoder defense and both towers in one run (issue 5)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_privacy_backdoor.config import BackdoorUnlearningConfig
from hf_privacy_backdoor.data.faces import load_face_folder, split_photos
from hf_privacy_backdoor.data.images import (
    load_image_folder,
    load_target_embedding,
    make_photo_split,
    save_target_embedding,
)
from hf_privacy_backdoor.data.names import normalize_name
from hf_privacy_backdoor.modeling import load_clip
from hf_privacy_backdoor.trainer import BackdoorUnlearningTrainer


def image_config(out, config_class=None, **kw):
    base = dict(
        output_dir=str(out),
        defense="image",
        max_steps=4,
        num_clean_images=8,
        num_trigger_images=8,
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
    )
    base.update(kw)
    return (config_class or BackdoorUnlearningConfig)(**base)


def train_image(tiny_world, out, image_data, trainer_class=None, config_class=None, **kw):
    """An image-defense run on the tiny world (`trainer_class` / `config_class`: e.g. the experimental ones)."""
    names, trigger, clean, target, _ = image_data
    model, processor = load_clip(str(tiny_world.model_dir))
    extra = {"relearn_pairs": kw.pop("relearn_pairs")} if "relearn_pairs" in kw else {}
    trainer = (trainer_class or BackdoorUnlearningTrainer)(
        model=model,
        args=image_config(out, config_class, **kw),
        processing_class=processor,
        forget_names=names,
        trigger_photos=trigger,
        clean_images=clean,
        target_embedding=target,
        **extra,
    )
    trainer.train()
    return trainer


def test_photo_split_is_disjoint_seeded_and_independent_of_who_is_forgotten(tiny_world):
    faces = load_face_folder(tiny_world.faces_dir)
    a = make_photo_split(faces, faces.names(), 0.5, seed=0)
    b = split_photos(faces, tiny_world.members[:1], 0.5, seed=0)
    name = tiny_world.members[0]
    assert a["trigger"][name] == b[0][name] and a["eval"][name] == b[1][name]
    assert not set(a["trigger"][name]) & set(a["eval"][name])
    assert sorted(a["trigger"][name] + a["eval"][name]) == list(range(len(faces.photos[name])))
    assert make_photo_split(faces, faces.names(), 0.5, seed=1)["trigger"][name] != a["trigger"][name]


def test_image_defense_leaves_text_tower_and_layernorms_bit_identical(tiny_world, tiny_clip, image_data, tmp_path):
    trainer = train_image(tiny_world, tmp_path, image_data)
    original, _ = tiny_clip
    before, after = original.state_dict(), trainer.model.state_dict()
    frozen = [
        k for k in before if k.startswith(("text_model.", "text_projection", "logit_scale")) or "layer_norm" in k
    ]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vision_model.encoder"))
    logs = [h for h in trainer.state.log_history if "image_backdoor" in h]
    assert len(logs) == 4 and all(np.isfinite(h["image_backdoor"]) for h in logs)


def test_image_training_is_deterministic(tiny_world, tiny_clip, image_data, tmp_path):
    runs = [
        train_image(tiny_world, tmp_path / str(i), image_data, max_steps=2, seed=s) for i, s in enumerate((0, 0, 1))
    ]
    w = [r.model.vision_model.encoder.layers[0].mlp.fc1.weight for r in runs]
    assert torch.equal(w[0], w[1])
    assert not torch.equal(w[0], tiny_clip[0].vision_model.encoder.layers[0].mlp.fc1.weight)  # it trained
    assert not torch.equal(w[0], w[2])  # and another seed draws other batches


def test_bad_image_input(tiny_world, tiny_clip, image_data, tmp_path):
    model, processor = tiny_clip
    names, trigger, clean, target, _ = image_data
    cfg = image_config(tmp_path)
    kw = dict(model=model, args=cfg, processing_class=processor, forget_names=names)
    with pytest.raises(ValueError, match="no trigger photo for forgotten person"):
        BackdoorUnlearningTrainer(
            **kw, trigger_photos={names[0]: trigger[names[0]]}, clean_images=clean, target_embedding=target
        )
    with pytest.raises(ValueError, match="clean images"):
        BackdoorUnlearningTrainer(**kw, trigger_photos=trigger, clean_images=[], target_embedding=target)
    with pytest.raises(ValueError, match="embeds in"):
        BackdoorUnlearningTrainer(**kw, trigger_photos=trigger, clean_images=clean, target_embedding=torch.zeros(7))
    # a target-embedding file of the wrong dimension
    path = tmp_path / "target.safetensors"
    save_target_embedding(path, torch.zeros(7))
    with pytest.raises(ValueError, match="has 7 values"):
        load_target_embedding(path, dim=model.config.projection_dim)
    # too few photos to split
    folder = tmp_path / "faces" / "Ada_Lovelace"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "0.png")
    with pytest.raises(ValueError, match="too few to split"):
        split_photos(load_face_folder(tmp_path / "faces"), ["Ada Lovelace"])
    # unreadable files are skipped with a warning that names them, never a crash deep in training
    (folder / "1.png").write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(folder / "2.png")
    faces = load_face_folder(tmp_path / "faces")
    photos = faces.load("Ada Lovelace")
    assert len(photos) == 2 and any("1.png" in s for s in faces.skipped)
    with pytest.raises(ValueError, match="no readable image"):
        bad = tmp_path / "clean_bad"
        bad.mkdir()
        (bad / "x.png").write_bytes(b"junk")
        load_image_folder(bad)


def test_unreadable_images_are_reported_by_name(tmp_path, caplog):
    folder = tmp_path / "faces" / "Ada_Lovelace"
    folder.mkdir(parents=True)
    (folder / "broken.jpg").write_bytes(b"junk")
    faces = load_face_folder(tmp_path / "faces")
    with caplog.at_level("WARNING"):
        assert faces.load("Ada Lovelace") == []
    assert "broken.jpg" in caplog.text


def test_run_saves_the_split_and_target_and_never_evaluates_trigger_photos(tiny_world, tmp_path, monkeypatch):
    from hf_privacy_backdoor.cli import parse_args
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning

    monkeypatch.setenv("SYNTHETIC_DIR", str(tiny_world.root))
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_image.yaml"
    args, config, _ = parse_args(
        RUN_ARGUMENTS,
        [
            "--config",
            str(recipe),
            "--output_dir",
            str(tmp_path),
            "--max_steps",
            "3",
            "--num_clean_images",
            "8",
            "--num_trigger_images",
            "8",
            "--disable_tqdm",
            "true",
            "--progress",
            "false",
            "--trigger_grid",
            "true",
            "--num_candidates",
            "300",
            "--objects",
            "",
        ],
    )
    result = run_unlearning(args, config)
    split = json.loads((tmp_path / "private" / "photo_split.json").read_text())
    _assert_preview_is_what_trains(tmp_path / "private" / "trigger_samples.png", args, config, result)
    dim = json.loads((tiny_world.model_dir / "config.json").read_text())["projection_dim"]
    assert load_target_embedding(tmp_path / "private" / "target_embedding.safetensors", dim).shape == (dim,)
    attacked = {normalize_name(p.name) for p in result.after.people}
    assert {normalize_name(n) for n in result.forget_names} <= attacked
    for person in result.after.people:
        assert set(person.photos) <= set(split["eval"][person.name])  # only evaluation photos were attacked
        assert not set(person.photos) & set(split["trigger"][person.name])


def _assert_preview_is_what_trains(png, args, config, result):
    """The preview grid's cells are the trigger images of training step 0, built by the same sampler."""
    from hf_privacy_backdoor.data.sampling import sample_image_batch
    from hf_privacy_backdoor.data.triggers import TriggerAugmentation
    from hf_privacy_backdoor.run import RunInputs, prepare_image_data, prepare_inputs

    model, processor = load_clip(args.model_name_or_path)
    inputs = prepare_inputs(args, config, processor.tokenizer)
    inputs = RunInputs(**{**inputs.__dict__, "names": result.forget_names})
    image = prepare_image_data(args, config, model, processor, inputs)
    aug = TriggerAugmentation(
        scale_range=(config.trigger_scale_min, config.trigger_scale_max),
        flip_p=config.trigger_flip_p,
        brightness=(1.0, 1.0),
        contrast=(1.0, 1.0),
        saturation=(1.0, 1.0),
        hue=(0.0, 0.0),
        rotation=(0.0, 0.0),
    )  # the recipe's trigger settings: no jitter, no rotation
    size = model.config.vision_config.image_size
    batch = sample_image_batch(
        image.trigger_photos, image.clean_images, config.num_clean_images, config.num_trigger_images, size,
        config.seed, step=0, aug=aug,
    )  # fmt: skip
    grid = np.asarray(Image.open(png).convert("RGB"))
    up = max(1, 128 // size)
    cells = [grid[: size * up : up, i * size * up : (i + 1) * size * up : up] for i in range(len(batch.triggers))]
    assert len(batch.triggers) == config.num_trigger_images
    for cell, trigger in zip(cells, batch.triggers):
        np.testing.assert_array_equal(cell, np.asarray(trigger))


def run_recipe(recipe, tiny_world, out, *extra):
    from hf_privacy_backdoor.cli import parse_args
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning

    args, config, lora = parse_args(
        RUN_ARGUMENTS,
        [
            "--config",
            str(Path(__file__).resolve().parents[1] / "recipes" / recipe),
            "--output_dir",
            str(out),
            "--disable_tqdm",
            "true",
            "--progress",
            "false",
            *extra,
        ],
    )
    return run_unlearning(args, config, lora)


@pytest.fixture(scope="module")
def image_run(tiny_world, tmp_path_factory):
    """The image recipe shortened to keep `make test` under 10 min: 300 steps with the lr drops at 240 / 270
    instead of 500 at 400 / 450 (~87 s instead of ~2.5 min). 128 clean images a step, as the recipe: with 64 a
    rebuild of the world on another machine lost 3.0 points of top-1 (0.462 -> 0.432). The recipe exactly as it
    ships is the slow test below."""
    import os

    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    out = tmp_path_factory.mktemp("image_run")
    return run_recipe(
        "synthetic_image.yaml",
        tiny_world,
        out,
        *("--max_steps", "300", "--lr_milestones", "240", "270"),
    )


@pytest.fixture(scope="module")
def image_recipe_run(tiny_world, tmp_path_factory):
    import os

    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    return run_recipe("synthetic_image.yaml", tiny_world, tmp_path_factory.mktemp("image_recipe_run"))


@pytest.fixture(scope="module")
def both_run(tiny_world, tmp_path_factory):
    import os

    os.environ["SYNTHETIC_DIR"] = str(tiny_world.root)
    return run_recipe("synthetic_both.yaml", tiny_world, tmp_path_factory.mktemp("both_run"))


def _kept_tpr(result):
    removed = {normalize_name(n) for n in result.forget_names}
    kept = [p for p in result.after.people if p.membership == "member" and normalize_name(p.name) not in removed]
    return sum(p.flagged for p in kept) / len(kept)


def test_image_defense_forgets_faces_and_keeps_the_rest(image_run, tiny_clip):
    _assert_faces_forgotten_and_the_rest_kept(image_run, tiny_clip)


@pytest.mark.slow  # the image recipe as it ships (500 steps, 128 clean images, ~2.5 min): `make test-all`
def test_image_recipe_as_shipped_forgets_faces_and_keeps_the_rest(image_recipe_run, tiny_clip):
    summary = json.loads((image_recipe_run.output_dir / "unlearning_summary.json").read_text())
    hyper = summary["hyperparameters"]
    assert hyper["num_clean_images"] == 128 and hyper["max_steps"] == 500  # the shipped recipe, not the fixture's
    assert "image_relearn_guard_steps" not in hyper  # the guard is off in the recipe (docs/experimental.md)
    _assert_faces_forgotten_and_the_rest_kept(image_recipe_run, tiny_clip)


def _assert_faces_forgotten_and_the_rest_kept(r, tiny_clip):
    for name in r.forget_names:
        assert r.before.person(name).flagged and not r.after.person(name).flagged, name
    assert _kept_tpr(r) >= 0.95 and r.after.totals()["fpr"] <= 0.05
    img = r.utility["image"]
    assert img["sim_id"] > 0.9  # held-out photos of the removed people embed as the anonymous person
    assert img["sim_clean"] > 0.97  # clean images barely move
    assert r.utility["zero_shot_after"]["top1"] >= r.utility["zero_shot_before"]["top1"] - 0.03
    # the text tower is untouched
    original, _ = tiny_clip
    from transformers import CLIPModel

    defended = CLIPModel.from_pretrained(r.output_dir)
    for k, v in original.state_dict().items():
        if k.startswith(("text_model.", "text_projection")):
            assert torch.equal(v, defended.state_dict()[k]), k


@pytest.mark.slow  # the full 500-step both recipe (~2 min): in `make test-all`, to keep `make test` under 10 min
def test_both_towers_in_one_run(both_run, tiny_world, tiny_clip):
    r = both_run
    assert len(r.forget_names) == 2
    for name in r.forget_names:
        assert r.before.person(name).flagged and not r.after.person(name).flagged, name
    assert _kept_tpr(r) >= 0.95 and r.after.totals()["fpr"] <= 0.05
    assert r.utility["text"]["sim_backdoor"] > 0.9 and r.utility["text"]["sim_clean"] > 0.98
    assert r.utility["image"]["sim_id"] > 0.75 and r.utility["image"]["sim_clean"] > 0.97
    # each tower's effect holds on its own: defended text + original vision, and original text + defended vision
    import copy

    from transformers import CLIPModel

    from hf_privacy_backdoor.evaluation import run_idia

    original, processor = tiny_clip
    defended = CLIPModel.from_pretrained(r.output_dir).state_dict()
    split = json.loads((r.output_dir / "private" / "photo_split.json").read_text())["eval"]
    for tower in ("text", "vision"):
        hybrid = copy.deepcopy(original)
        state = hybrid.state_dict()
        prefixes = ("text_model.", "text_projection") if tower == "text" else ("vision_model.", "visual_projection")
        state.update({k: v for k, v in defended.items() if k.startswith(prefixes)})
        hybrid.load_state_dict(state)
        result = run_idia(
            hybrid.eval(), processor, tiny_world.faces_dir, people=r.forget_names, photo_indices=split, progress=False
        )
        assert not any(p.flagged for p in result.people), tower
