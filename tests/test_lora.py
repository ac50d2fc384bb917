"""LoRA (peft) adapters for the defense: module presets, training, the exact weight term, saving and loading back.

One short LoRA text defense on the synthetic world's tiny CLIP (`run_unlearning`, ~25 s) is shared by the
module; everything else is built around it.
"""

import copy
import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from hf_privacy_backdoor import BackdoorUnlearningConfig, BackdoorUnlearningTrainer
from hf_privacy_backdoor.losses import lora_weight_distance
from hf_privacy_backdoor.modeling import encode_images, encode_texts, load_clip
from hf_privacy_backdoor.peft_utils import (
    LORA_PRESETS,
    LoraArguments,
    base_clip,
    get_peft_config,
    hub_id_or_none,
    list_lora_targets,
    load_adapter,
    lora_factors,
    preset_regex,
)


# peft looks the (made-up, offline) base id up on the Hub when saving, to compare vocabularies
pytestmark = pytest.mark.filterwarnings("ignore:Could not find a config file")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
BASE_MODEL_ID = "my-org/tiny-clip-base"
# Two members the short defense below removes on the synthetic world (the recipe's forget_auto=2 picks, seed 0).
FORGET = ["Antonio Bryant", "Gabrielle Clayton"]
TEXT_PREFIXES = ("text_model.", "text_projection")
CAPTIONS = ["a photo of a red circle", "Antonio Bryant at a gala", "a woman named Vivienne Howard", "a blue star"]


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _face_photos(tiny_world):
    from hf_privacy_backdoor.data.faces import load_face_folder

    return load_face_folder(str(tiny_world.faces_dir)).load(FORGET[0], [0, 1, 2])


def _features(model, processor, images):
    return encode_texts(model, processor.tokenizer, CAPTIONS), encode_images(model, processor, images)


@pytest.fixture(scope="module")
def lora_run(tiny_world, tmp_path_factory):
    """One LoRA text defense through `run_unlearning`; yields (result, in-memory peft model, trainer)."""
    from hf_privacy_backdoor.run import UnlearnArguments, run_unlearning

    assert set(FORGET) <= set(tiny_world.members), "synthetic world changed: pick two flagged members again"
    out = tmp_path_factory.mktemp("lora_run")
    args = UnlearnArguments(
        model_name_or_path=str(tiny_world.model_dir),
        captions=str(tiny_world.captions_file),
        faces=str(tiny_world.faces_dir),
        membership=str(tiny_world.membership_file),
        forget_names=FORGET,
        num_candidates=200,
        save_merged=True,
        progress=False,
        base_model_id=BASE_MODEL_ID,
    )
    config = BackdoorUnlearningConfig(
        output_dir=str(out),
        defense="text",
        max_steps=100,
        learning_rate=2e-3,
        num_clean_captions=32,
        num_poisoned_captions=32,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        logging_steps=1000,
        seed=0,
    )
    trainers = []
    original_save = BackdoorUnlearningTrainer.save_model

    def recording_save(self, *a, **kw):
        trainers.append(self)
        return original_save(self, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BackdoorUnlearningTrainer, "save_model", recording_save)
        result = run_unlearning(args, config, LoraArguments(use_lora=True))
    trainer = trainers[0]
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    return result, model, trainer


# ----------------------------------------------------------------------------------------------------------
# Presets and target patterns


@pytest.mark.parametrize("preset", [p + s for p in LORA_PRESETS for s in ("", "+proj")])
def test_preset_matches_only_its_tower(tiny_clip, preset):
    model, _ = tiny_clip
    names = list_lora_targets(model, preset_regex(preset))
    tower = preset.split("_")[0]
    text = [n for n in names if n.startswith(TEXT_PREFIXES)]
    vision = [n for n in names if n.startswith(("vision_model.", "visual_projection"))]
    assert len(text) + len(vision) == len(names)
    assert bool(text) == (tower in ("text", "both"))
    assert bool(vision) == (tower in ("vision", "both"))
    mlp = [n for n in names if ".mlp." in n]
    assert bool(mlp) == ("attn_mlp" in preset)
    projections = {n for n in names if n.endswith("projection")}
    with_proj = {"text": {"text_projection"}, "vision": {"visual_projection"}}
    with_proj["both"] = with_proj["text"] | with_proj["vision"]
    assert projections == (with_proj[tower] if preset.endswith("+proj") else set())
    per_layer = 6 if "attn_mlp" in preset else 4
    layers = {
        "text": model.config.text_config.num_hidden_layers,
        "vision": model.config.vision_config.num_hidden_layers,
    }
    layers["both"] = layers["text"] + layers["vision"]
    assert len(names) - len(projections) == per_layer * layers[tower]


def test_unknown_preset_and_empty_pattern_fail(tiny_clip):
    model, _ = tiny_clip
    with pytest.raises(ValueError, match="unknown LoRA preset"):
        preset_regex("audio_attn")
    with pytest.raises(ValueError, match="unknown lora_preset"):
        LoraArguments(use_lora=True, lora_preset="text_ffn")
    with pytest.raises(ValueError, match="use_lora"):
        LoraArguments(lora_preset="text_attn")
    with pytest.raises(ValueError, match="matches no Linear module"):
        list_lora_targets(model, r".*text_model.*\.no_such_proj")
    with pytest.raises(ValueError, match="invalid LoRA target regex"):
        list_lora_targets(model, r".*(q_proj")


def test_list_lora_targets_flag_prints_modules(tiny_world, tiny_clip, tmp_path, capsys):
    unlearn = _recipe("unlearn")
    argv = ["--model_name_or_path", str(tiny_world.model_dir), "--output_dir", str(tmp_path), "--use_lora", "true"]
    argv += ["--lora_preset", "text_attn+proj", "--list_lora_targets", "true", "--use_cpu", "true"]
    unlearn.main(argv)
    printed = capsys.readouterr().out.split()
    assert printed == list_lora_targets(tiny_clip[0], preset_regex("text_attn+proj"))
    assert "text_projection" in printed and not any(n.startswith("vision_model") for n in printed)
    assert not any(tmp_path.iterdir())  # listing trains and writes nothing


def test_recipe_presets_build_a_lora_config():
    args = LoraArguments(use_lora=True, lora_r=4, lora_alpha=8, lora_preset="vision_attn+proj")
    config = get_peft_config(args, towers="image")
    assert (config.r, config.lora_alpha, config.task_type) == (4, 8, None)
    assert config.target_modules == preset_regex("vision_attn+proj")
    assert get_peft_config(LoraArguments(use_lora=True), "both").target_modules == preset_regex("both_attn_mlp")
    assert get_peft_config(LoraArguments(), "text") is None


def test_trainer_takes_any_peft_config(tiny_world, tmp_path):
    """TRL-style: bring your own `LoraConfig` (here DoRA on the text tower's value projections)."""
    from peft import LoraConfig

    from hf_privacy_backdoor.data.captions import load_captions

    model, processor = load_clip(str(tiny_world.model_dir))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    own = LoraConfig(r=2, target_modules=r".*text_model.*\.v_proj", use_dora=True, task_type=None)
    config = BackdoorUnlearningConfig(
        output_dir=str(tmp_path), max_steps=3, num_clean_captions=8, num_poisoned_captions=8, use_cpu=True,
        report_to="none", disable_tqdm=True,
    )  # fmt: skip
    trainer = BackdoorUnlearningTrainer(
        model=model, args=config, processing_class=processor, forget_names=FORGET[:1],
        captions=load_captions(tiny_world.captions_file), peft_config=own,
    )  # fmt: skip
    trainer.train()
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    trained = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trained and all(".v_proj." in n and "text_model" in n for n in trained)
    assert any("lora_magnitude_vector" in n for n in trained)  # DoRA's own parameters train too
    for name, tensor in base_clip(peft_model).state_dict().items():
        key = name.replace(".base_layer", "")
        if key in before and "lora_" not in name:
            assert torch.equal(tensor, before[key]), f"base weight {key} changed"
    with pytest.raises(ValueError, match="task_type=None"):
        BackdoorUnlearningTrainer(
            model=load_clip(str(tiny_world.model_dir))[0], args=config, processing_class=processor,
            forget_names=FORGET[:1], captions=["a red circle"],
            peft_config=LoraConfig(target_modules=["q_proj"], task_type="FEATURE_EXTRACTION"),
        )  # fmt: skip


def test_hub_id_or_none(tmp_path):
    assert hub_id_or_none("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert hub_id_or_none(str(tmp_path)) is None
    assert hub_id_or_none("./model") is None
    assert hub_id_or_none(None) is None


# ----------------------------------------------------------------------------------------------------------
# The defense with LoRA


def test_lora_defense_forgets_chosen_people(lora_run):
    result, _, _ = lora_run
    unlearning = result.summary["unlearning"]
    assert unlearning["num_removed"] == 2 and unlearning["removed_tpr_before"] == 1.0
    assert unlearning["removed_tpr_after"] == 0.0
    assert unlearning["kept_member_tpr_after"] >= 0.95 * unlearning["kept_member_tpr_before"]
    assert result.summary["defense"]["use_lora"] is True


def test_base_weights_unchanged_and_adapters_moved(lora_run, tiny_world):
    _, model, _ = lora_run
    fresh, _ = load_clip(str(tiny_world.model_dir))
    expected = fresh.state_dict()
    seen = 0
    for name, tensor in base_clip(model).state_dict().items():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(tensor, expected[key]), f"base weight {key} changed"
        seen += 1
    assert seen == len(expected)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".text_model." in n for n in trainable)
    factors = list(lora_factors(model, ("",)))
    assert len(factors) == len(trainable) // 2
    for _, lora_b, _ in factors:
        assert lora_b.abs().max() > 0  # every B started at zero and moved


def test_lora_weight_distance_is_merged_distance(lora_run, tiny_world):
    _, model, _ = lora_run
    merged = copy.deepcopy(model).merge_and_unload()
    base, _ = load_clip(str(tiny_world.model_dir))
    base_params = dict(base.named_parameters())
    with torch.no_grad():
        direct = sum(
            torch.linalg.norm(p - base_params[n])
            for n, p in merged.named_parameters()
            if not torch.equal(p, base_params[n])
        )
    exact = lora_weight_distance(lora_factors(model, TEXT_PREFIXES)).detach()
    assert float(direct) > 0
    assert float(exact) == pytest.approx(float(direct), rel=1e-4)


def test_adapter_round_trip_and_merged_model(lora_run, tiny_world, tiny_clip):
    from peft import PeftModel

    result, model, _ = lora_run
    images = _face_photos(tiny_world)
    processor = tiny_clip[1]
    with torch.no_grad():
        want_text, want_image = _features(model, processor, images)
    loaded = PeftModel.from_pretrained(CLIPModel.from_pretrained(str(tiny_world.model_dir)), str(result.output_dir))
    got_text, got_image = _features(loaded.eval(), processor, images)
    assert torch.equal(got_text, want_text) and torch.equal(got_image, want_image)

    merged, _ = load_clip(str(result.output_dir / "merged"))  # --save_merged
    assert type(merged) is CLIPModel
    merged_text, merged_image = _features(merged, processor, images)
    torch.testing.assert_close(merged_text, want_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged_image, want_image, atol=1e-5, rtol=0)

    via_adapter, _ = load_clip(str(tiny_world.model_dir), adapter=str(result.output_dir))  # merges on load
    torch.testing.assert_close(encode_texts(via_adapter, processor.tokenizer, CAPTIONS), want_text, atol=1e-5, rtol=0)


def test_adapter_config_names_the_given_base(lora_run, tiny_world):
    result, _, _ = lora_run
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_MODEL_ID
    assert config["task_type"] is None
    card = (result.output_dir / "README.md").read_text()
    assert f"base_model: {BASE_MODEL_ID}" in card
    for path in result.output_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md") and "private" not in path.parts:
            assert str(tiny_world.root) not in path.read_text(), f"{path.name} holds a local path"


def test_no_base_model_id_writes_no_local_path(lora_run, tiny_world, tmp_path, caplog):
    _, model, trainer = lora_run
    trainer.base_model_id = None
    try:
        with caplog.at_level(logging.WARNING, logger="hf_privacy_backdoor"):
            trainer.save_model(str(tmp_path))
    finally:
        trainer.base_model_id = BASE_MODEL_ID
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] is None
    assert "no base_model_id" in caplog.text
    card = (tmp_path / "README.md").read_text()
    assert str(tiny_world.root) not in card and "base_model" not in card.split("---")[1]
    assert base_clip(model).name_or_path == str(tiny_world.model_dir)  # the in-memory model is left as it was
    loaded = load_adapter(load_clip(str(tiny_world.model_dir))[0], str(tmp_path), merge=True)  # still loads
    assert type(loaded) is CLIPModel


# ----------------------------------------------------------------------------------------------------------
# Loading back: bad input and the evaluate recipe


def test_adapter_for_other_base_is_rejected(tiny_world, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, _ = load_clip(str(tiny_world.model_dir))
    other_config = CLIPConfig.from_dict(model.config.to_dict())
    text = other_config.text_config
    text.hidden_size, text.intermediate_size = text.hidden_size // 2, text.intermediate_size // 2
    other = get_peft_model(
        CLIPModel(other_config), LoraConfig(r=4, target_modules=preset_regex("text_attn"), task_type=None)
    )
    other.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="different base model"):
        load_adapter(model, str(tmp_path / "other"))


def test_load_adapter_without_adapter_config(tiny_world, tmp_path):
    model, _ = load_clip(str(tiny_world.model_dir))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(model, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_clip(str(tiny_world.model_dir), adapter=str(tiny_world.model_dir))


def test_evaluate_recipe_with_adapter(lora_run, tiny_world, tmp_path):
    result, _, _ = lora_run
    kept = [m for m in tiny_world.members if m not in FORGET]
    out = tmp_path / "eval"
    _recipe("evaluate_model").main(
        ["--model_name_or_path", str(tiny_world.model_dir), "--adapter", str(result.output_dir)]
        + ["--faces", str(tiny_world.faces_dir), "--membership", str(tiny_world.membership_file)]
        + ["--num_candidates", "200", "--output_dir", str(out), "--quiet", "true"]
    )
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file()
    attack = json.loads((out / "attack.json").read_text())
    flagged = {p["name"]: p["flagged"] for p in attack["people"]}
    assert len(flagged) == len(tiny_world.members) + len(tiny_world.non_members)
    assert not any(flagged[n] for n in FORGET)  # the same attack as the run's: merged adapter, same candidates
    assert sum(flagged[n] for n in kept) >= 0.95 * len(kept)
    assert report["attack"]["totals"]["num_people"] == len(flagged)
