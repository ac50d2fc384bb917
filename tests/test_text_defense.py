"""Text-encoder defense on the pretrained tiny CLIP: forgets the names, keeps everything else (issue 3)."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel

from hf_privacy_backdoor.config import BackdoorUnlearningConfig
from hf_privacy_backdoor.data.captions import load_captions
from hf_privacy_backdoor.evaluation import run_idia, text_similarities
from hf_privacy_backdoor.modeling import encode_texts, load_clip
from hf_privacy_backdoor.trainer import BackdoorUnlearningTrainer


def make_config(out, **kw):
    base = dict(
        output_dir=str(out),
        defense="text",
        max_steps=200,
        learning_rate=1e-3,  # the synthetic recipe's rate: the tiny model needs a larger step than ViT-B/32
        num_clean_captions=64,
        num_poisoned_captions=64,
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=50,
        seed=0,
    )
    base.update(kw)
    return BackdoorUnlearningConfig(**base)


def train_text(world, out, names, **kw):
    model, processor = load_clip(str(world.model_dir))
    trainer = BackdoorUnlearningTrainer(
        model=model,
        args=make_config(out, **kw),
        processing_class=processor,
        forget_names=names,
        captions=load_captions(world.captions_file),
    )
    trainer.train()
    trainer.save_model(str(out))
    return trainer


@pytest.fixture(scope="module")
def one_name(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("text_one")
    names = tiny_world.members[:1]
    return names, train_text(tiny_world, out, names), out


@pytest.fixture(scope="module")
def several_names(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("text_several")
    names = tiny_world.members[1:4]
    return names, train_text(tiny_world, out, names), out


# 300 candidates (fewer rivals than the paper's 1,000: a stricter test of "the name is gone"), to keep make test short
ATTACK = dict(num_candidates=300, progress=False)


@pytest.fixture(scope="module")
def attack_before(tiny_world, tiny_clip):
    model, processor = tiny_clip
    return run_idia(model, processor, tiny_world.faces_dir, membership=tiny_world.membership_file, **ATTACK)


# several names: `make test-all` (the recipe, cover-people and LoRA tests remove several people in the fast run)
@pytest.mark.parametrize("which", ["one_name", pytest.param("several_names", marks=pytest.mark.slow)])
def test_forgets_names_and_keeps_the_rest(which, request, tiny_world, tiny_clip, attack_before):
    names, trainer, _ = request.getfixturevalue(which)
    original, processor = tiny_clip
    defended = trainer.model.eval()
    after = run_idia(defended, processor, tiny_world.faces_dir, membership=tiny_world.membership_file, **ATTACK)
    for name in names:
        assert attack_before.person(name).flagged
        assert after.person(name).correct_templates == 0, name  # the attack no longer finds the name
    kept = [p for p in after.people if p.membership == "member" and p.name not in names]
    assert sum(p.flagged for p in kept) / len(kept) >= 0.95  # the other members are still recognised
    assert after.totals()["fpr"] <= 0.05
    # embeddings: the name now reads as "a person"; clean captions barely move
    captions = load_captions(tiny_world.captions_file)
    clean = [c for c in captions if not any(n in c for n in tiny_world.members[:4])][:300]
    poisoned = [f"a photo of {n} in the city" for n in names]
    target = ["a photo of a person in the city"] * len(names)
    sims = text_similarities(original, defended, processor.tokenizer, clean, poisoned, target)
    assert sims["sim_backdoor"] > 0.9
    assert sims["sim_clean"] > 0.98


def test_untouched_tower_and_layernorms_are_bit_identical(one_name, tiny_clip):
    _, trainer, _ = one_name
    original, _ = tiny_clip
    before = original.state_dict()
    after = trainer.model.state_dict()
    frozen = [
        k for k in before if k.startswith(("vision_model.", "visual_projection", "logit_scale")) or "layer_norm" in k
    ]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    moved = [k for k in before if k.startswith("text_model.encoder") and "layer_norm" not in k]
    assert any(not torch.equal(before[k], after[k]) for k in moved)


def test_saved_model_has_no_teacher_and_works_in_a_pipeline(one_name, tiny_world):
    names, trainer, out = one_name
    processor = trainer.processing_class
    saved = load_file(str(out / "model.safetensors"))
    base = load_file(str(tiny_world.model_dir / "model.safetensors"))
    assert set(saved) == set(base)  # no teacher weights, no extra tensors
    model = CLIPModel.from_pretrained(out).eval()
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    captions = ["a photo of a red circle", f"a photo of {names[0]}", "a person at a gala"]
    assert torch.equal(
        encode_texts(model, processor.tokenizer, captions), encode_texts(trained, processor.tokenizer, captions)
    )
    from PIL import Image
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=str(out))
    image = Image.open(tiny_world.objects_dir / "red_circle" / "0.png")
    result = classifier(image, candidate_labels=["red circle", "blue star", "green cross"])
    assert result[0]["label"] == "red circle"


def test_precomputed_and_per_step_teacher_give_the_same_losses(tiny_world, tmp_path):
    names = tiny_world.members[:2]
    logs = []
    for precompute in (True, False):
        trainer = train_text(
            tiny_world, tmp_path / str(precompute), names, max_steps=6, logging_steps=1, precompute_teacher=precompute
        )
        logs.append([h for h in trainer.state.log_history if "text_backdoor" in h])
    assert len(logs[0]) == len(logs[1]) == 6
    for a, b in zip(*logs):
        for key in ("loss", "text_utility", "text_backdoor", "text_weight"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key


def test_same_seed_same_weights(tiny_world, tmp_path):
    names = tiny_world.members[:1]
    runs = [train_text(tiny_world, tmp_path / f"r{i}", names, max_steps=4, seed=s) for i, s in enumerate((7, 7, 8))]
    w = [r.model.text_model.encoder.layers[0].mlp.fc1.weight for r in runs]
    assert torch.equal(w[0], w[1])
    assert not torch.equal(w[0], w[2])


def test_reference_schedule_and_defaults():
    cfg = BackdoorUnlearningConfig(output_dir="x", use_cpu=True)
    assert (cfg.max_steps, cfg.lr_milestones, cfg.lr_gamma, cfg.learning_rate) == (400, [200, 300], 0.5, 1e-4)
    assert (cfg.text_backdoor_weight, cfg.text_weight_distance, cfg.num_clean_captions) == (0.6, 0.01, 128)
    assert cfg.target_phrase == "a person" and cfg.remove_unused_columns is False and not cfg.push_to_hub
    img = BackdoorUnlearningConfig(output_dir="x", defense="image", use_cpu=True)
    assert (img.max_steps, img.lr_milestones, img.lr_gamma) == (100, [25, 50], 0.1)
    assert (img.image_backdoor_weight, img.image_weight_distance) == (0.8, 0.005)


def test_learning_rate_follows_the_milestones(tiny_world, tmp_path):
    trainer = train_text(
        tiny_world, tmp_path, tiny_world.members[:1], max_steps=6, lr_milestones=[2, 4], lr_gamma=0.5, logging_steps=1
    )
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    # a recipe's empty milestone list with another scheduler is that scheduler (it crashed before)
    trainer = train_text(
        tiny_world, tmp_path / "linear", tiny_world.members[:1], max_steps=4, lr_milestones=[],
        lr_scheduler_type="linear", logging_steps=1,
    )  # fmt: skip
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_bad_input_gets_clear_errors(tiny_world, tiny_clip, tmp_path):
    model, processor = tiny_clip
    captions = load_captions(tiny_world.captions_file)
    cfg = make_config(tmp_path, max_steps=1)
    with pytest.raises(ValueError, match="forget list is empty"):
        BackdoorUnlearningTrainer(
            model=model, args=cfg, processing_class=processor, forget_names=[], captions=captions
        )
    with pytest.raises(ValueError, match="caption corpus"):
        BackdoorUnlearningTrainer(model=model, args=cfg, processing_class=processor, forget_names=["Ada Lovelace"])
    with pytest.raises(ValueError, match="no usable clean caption"):
        BackdoorUnlearningTrainer(
            model=model,
            args=cfg,
            processing_class=processor,
            forget_names=["Ada Lovelace"],
            captions=["Ada Lovelace smiling", "hello"],
        )
    with pytest.raises(ValueError, match="unknown towers"):
        BackdoorUnlearningConfig(output_dir="x", defense="audio", use_cpu=True)
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        BackdoorUnlearningConfig(output_dir="x", per_device_train_batch_size=8, use_cpu=True)
    with pytest.raises(TypeError, match="needs a CLIPModel"):
        BackdoorUnlearningTrainer(
            model=model.text_model, args=cfg, processing_class=processor, forget_names=["A B"], captions=captions
        )
    from transformers import BertConfig, BertModel

    bert_dir = tmp_path / "bert"
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    ).save_pretrained(bert_dir)
    with pytest.raises(ValueError, match="not a CLIP model"):
        load_clip(str(bert_dir))
