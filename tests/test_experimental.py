"""`hf_privacy_backdoor.experimental`: fenced off (it warns on import), and its two image terms: the relearning guard
(the image backdoor trained at a fine-tuned copy of the student) and the name-affinity term."""

import importlib
import json
import sys
import warnings

import pytest
import torch
from test_image_defense import image_config, train_image

from hf_privacy_backdoor.data.faces import load_face_folder
from hf_privacy_backdoor.losses import grouped_backdoor_loss
from hf_privacy_backdoor.modeling import image_features, load_clip, pixel_values_for


with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from hf_privacy_backdoor.experimental.backdoor import (
        ExperimentalBackdoorConfig,
        ExperimentalBackdoorTrainer,
        relearn_guard_pairs,
    )
    from hf_privacy_backdoor.experimental.name_affinity import NAME_AFFINITY_TEMPLATES, name_affinity_loss
    from hf_privacy_backdoor.experimental.relearn_guard import RelearnSimulation, guarded_backdoor

EXPERIMENTAL = dict(trainer_class=ExperimentalBackdoorTrainer, config_class=ExperimentalBackdoorConfig)


def test_importing_experimental_warns_and_the_core_never_imports_it():
    sys.modules.pop("hf_privacy_backdoor.experimental", None)
    with pytest.warns(FutureWarning, match="may change or be removed"):
        importlib.import_module("hf_privacy_backdoor.experimental")
    from hf_privacy_backdoor import config, run, trainer
    from hf_privacy_backdoor.methods import backdoor

    for module in (config, trainer, run, backdoor):
        assert "experimental" not in open(module.__file__).read().replace("`experimental/`", "")
    fields = set(config.BackdoorUnlearningConfig.__dataclass_fields__)
    assert not {f for f in fields if "relearn" in f or "affinity" in f or "sam_rho" in f}


@pytest.fixture(scope="module")
def portraits(tiny_world, image_data):
    """Photos of 4 people who are not forgotten, captioned with their names (benign fine-tune pairs)."""
    names = image_data[0]
    faces = load_face_folder(tiny_world.faces_dir)
    others = [n for n in tiny_world.members if n not in names][:4]
    images, captions = [], []
    for person in others:
        loaded = faces.load(person, image_data[4]["trigger"][person][:4])
        images += loaded
        captions += [f"a photo of {person}"] * len(loaded)
    return images, captions


def simulation(processor, portraits, **kw):
    images, captions = portraits
    settings = dict(steps=2, lr=1e-3, batch_size=8, seed=0) | kw
    return RelearnSimulation(pixel_values_for(processor, images), captions, **settings)


def test_simulated_finetune_moves_a_copy_reproducibly_and_never_the_model(tiny_clip, portraits):
    model, processor = tiny_clip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sim = simulation(processor, portraits)
    a, b, c = (sim.finetuned_copy(model, processor.tokenizer, step) for step in (3, 3, 4))
    key = "vision_model.encoder.layers.0.mlp.fc1.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])  # seeded by the training step
    assert not torch.equal(a.state_dict()[key], before[key])  # the copy is fine-tuned, text tower included
    assert not torch.equal(a.state_dict()["text_projection.weight"], before["text_projection.weight"])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])  # another step draws other batches
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for bad in (dict(steps=0), dict(lr=0.0), dict(batch_size=1)):
        with pytest.raises(ValueError, match="relearning guard"):
            simulation(processor, portraits, **bad)
    with pytest.raises(ValueError, match="captions"):
        RelearnSimulation(pixel_values_for(processor, portraits[0][:2]), portraits[1][:3], steps=1, lr=1e-3)


def test_guarded_term_is_the_backdoor_after_the_finetune_with_its_gradient_taken_there(
    tiny_world, tiny_clip, image_data, portraits
):
    _, processor = tiny_clip
    model, _ = load_clip(str(tiny_world.model_dir))
    names, trigger, _, target, _ = image_data
    pixels = pixel_values_for(processor, trigger[names[0]][:2] + trigger[names[1]][:2])
    owners = [names[0]] * 2 + [names[1]] * 2

    def backdoor_at(m):
        return grouped_backdoor_loss(image_features(m, pixels), owners, target)

    sim = simulation(processor, portraits)
    trainable = [(n, p) for n, p in model.named_parameters() if n.startswith("vision_model.encoder")]
    term = guarded_backdoor(model, sim, processor.tokenizer, 5, backdoor_at, trainable)
    tuned = sim.finetuned_copy(model, processor.tokenizer, 5)
    expected = backdoor_at(tuned)
    assert term.item() == pytest.approx(expected.item(), rel=1e-6)
    assert term.item() != pytest.approx(backdoor_at(model).item(), rel=1e-4)  # not the loss at the student
    term.backward()
    expected.backward()
    tuned_params = dict(tuned.named_parameters())
    for name, param in trainable:
        assert torch.allclose(param.grad, tuned_params[name].grad, atol=1e-7), name
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("text_model"))


def test_trainer_adds_the_guard_every_n_steps_and_keeps_the_text_tower(
    tiny_world, tiny_clip, image_data, portraits, tmp_path
):
    """Every `image_relearn_guard_every` steps the loss gains w * (backdoor after the simulated fine-tune);
    the other terms and the frozen text tower stay as without it; logs stay name-free."""
    plain = train_image(tiny_world, tmp_path / "plain", image_data, max_steps=2)
    kw = dict(image_relearn_guard_steps=2, image_relearn_guard_every=2, image_relearn_guard_weight=2.0)
    guarded = train_image(
        tiny_world, tmp_path / "guard", image_data, relearn_pairs=portraits, max_steps=2, **EXPERIMENTAL, **kw
    )
    first, second = guarded.state.log_history[:2]
    assert "image_relearn_guard" in first and "image_relearn_guard" not in second
    reference = plain.state.log_history[0]
    for key in ("image_utility", "image_backdoor", "image_weight"):
        assert first[key] == pytest.approx(reference[key])
    assert first["loss"] - reference["loss"] == pytest.approx(2.0 * first["image_relearn_guard"], rel=1e-4)
    w = [t.model.vision_model.encoder.layers[0].mlp.fc1.weight for t in (plain, guarded)]
    assert not torch.equal(w[0], w[1])  # the guard's gradient reached the student
    original = tiny_clip[0].state_dict()
    after = guarded.model.state_dict()
    assert all(torch.equal(original[k], after[k]) for k in original if k.startswith(("text_model.", "text_proj")))
    logged = json.dumps(guarded.state.log_history)
    assert not any(part in logged for n in image_data[0] for part in n.split())


def test_guard_refuses_bad_input_without_naming_anyone(tiny_world, image_data, portraits, tmp_path):
    from peft import LoraConfig

    names, trigger, clean, target, _ = image_data
    model, processor = load_clip(str(tiny_world.model_dir))
    config = image_config(tmp_path, ExperimentalBackdoorConfig, image_relearn_guard_steps=2)
    common = dict(
        model=model, args=config, processing_class=processor, forget_names=names, trigger_photos=trigger,
        clean_images=clean, target_embedding=target,
    )  # fmt: skip
    leaky = (portraits[0][:2], [portraits[1][0], f"a photo of {names[1]}"])
    with pytest.raises(ValueError, match="forgotten person #2") as err:
        ExperimentalBackdoorTrainer(**common, relearn_pairs=leaky)
    assert not any(part in str(err.value) for n in names for part in n.split())
    with pytest.raises(ValueError, match="image-caption pairs"):
        ExperimentalBackdoorTrainer(**common)
    with pytest.raises(ValueError, match="full fine-tuning"):
        ExperimentalBackdoorTrainer(
            **common, relearn_pairs=portraits, peft_config=LoraConfig(r=2, target_modules=["q_proj"], task_type=None)
        )
    for bad in (
        dict(image_relearn_guard_steps=-1),
        dict(image_relearn_guard_every=0),
        dict(image_relearn_guard_lr=0),
        dict(image_relearn_guard_weight=-1.0),
        dict(image_relearn_guard_batch_size=0),
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            image_config(tmp_path, ExperimentalBackdoorConfig, **bad)


def test_guard_pairs_come_from_a_folder_and_a_forgotten_persons_folder_is_refused(tiny_world, tmp_path):
    forgotten, other = tiny_world.members[:2], tiny_world.non_members[0]
    faces = load_face_folder(tiny_world.faces_dir)
    folder = tmp_path / "guard"
    (folder / other.replace(" ", "_")).mkdir(parents=True)
    for i, image in enumerate(faces.load(other)[:3]):
        image.save(folder / other.replace(" ", "_") / f"{i}.png")
    images, captions = relearn_guard_pairs(str(folder), forgotten, ["unused"], ["a photo of someone"])
    assert len(images) == 3 and captions == [f"a photo of {other}"] * 3
    assert relearn_guard_pairs(None, forgotten, ["x"], ["a photo of y"]) == (["x"], ["a photo of y"])
    with pytest.raises(ValueError, match="give portraits or a face folder"):
        relearn_guard_pairs(None, forgotten, [], [])
    (folder / forgotten[1].replace(" ", "_")).mkdir()
    faces.load(forgotten[1])[0].save(folder / forgotten[1].replace(" ", "_") / "0.png")
    with pytest.raises(ValueError, match="forgotten person") as err:
        relearn_guard_pairs(str(folder), forgotten, [], [])
    assert not any(part in str(err.value) for n in forgotten for part in n.split())


def test_name_affinity_term_joins_the_objective_with_prompts_the_attack_never_uses(tiny_world, image_data, tmp_path):
    """image_name_affinity_weight > 0 adds w * name_affinity to the image loss (logged name-free, as a number);
    the term's prompts are not the attack's templates; 0 (default) leaves the method's loss as it was."""
    from hf_privacy_backdoor.evaluation import idia_templates

    assert not set(NAME_AFFINITY_TEMPLATES) & set(idia_templates())
    plain = train_image(tiny_world, tmp_path / "plain", image_data, max_steps=1)
    term = train_image(
        tiny_world,
        tmp_path / "term",
        image_data,
        max_steps=1,
        image_name_affinity_weight=3.0,
        image_name_affinity_margin=0.5,
        **EXPERIMENTAL,
    )
    first = [t.state.log_history[0] for t in (plain, term)]
    assert "image_name_affinity" not in first[0]
    assert first[1]["image_name_affinity"] > 0  # a margin of 0.5 is never met by the base model
    for key in ("image_utility", "image_backdoor", "image_weight"):
        assert first[1][key] == pytest.approx(first[0][key])
    assert first[1]["loss"] - first[0]["loss"] == pytest.approx(3.0 * first[1]["image_name_affinity"], rel=1e-4)
    names = image_data[0]
    logged = json.dumps(term.state.log_history)
    assert not any(part in logged for n in names for part in n.split())
    for bad in (dict(image_name_affinity_weight=-1), dict(image_name_affinity_margin=2)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            image_config(tmp_path, ExperimentalBackdoorConfig, **bad)


def test_name_affinity_is_zero_below_the_target_and_pushes_a_photo_off_its_own_name():
    target = torch.tensor([1.0, 0.0, 0.0])
    prompts = {"A": torch.tensor([[0.6, 0.8, 0.0]]), "B": torch.tensor([[0.6, 0.0, 0.8]])}  # cos(target, .) = 0.6
    at_target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert name_affinity_loss(at_target, ["A", "B"], prompts, target, margin=0.0).item() == 0.0
    # within the margin of the target's own affinity, the term is the margin
    assert name_affinity_loss(at_target, ["A", "B"], prompts, target, margin=0.05).item() == pytest.approx(0.05)
    # A's photo points at A's name: cos 0.8 against the target's 0.6 -> 0.2 for A, 0 for B
    photo = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], requires_grad=True)
    loss = name_affinity_loss(photo, ["A", "B"], prompts, target, margin=0.0)
    assert loss.item() == pytest.approx((0.8 - 0.6) / 2)  # mean over people
    loss.backward()
    assert photo.grad[0].abs().sum() > 0 and photo.grad[1].abs().sum() == 0  # only A's photo is pushed
    stepped = (photo - 0.5 * photo.grad).detach()
    assert name_affinity_loss(stepped, ["A", "B"], prompts, target, margin=0.0) < loss  # and descent lowers it
