"""The synthetic identity world and its pretrained tiny CLIP: layout, determinism, and what the model knows."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_privacy_backdoor.data.faces import load_face_folder
from hf_privacy_backdoor.finetune import contrastive_loss
from hf_privacy_backdoor.synthetic import WorldConfig, build_world, draw_face, make_world


SMALL = WorldConfig(
    num_members=3,
    num_non_members=2,
    num_extras=2,
    photos_per_person=3,
    heldout_images_per_object_class=1,
    clean_images_per_object_class=1,
    clean_photos_per_extra=1,
    clean_scenes=2,
    num_captions=50,
)


def test_world_layout_on_disk(tmp_path):
    world = build_world(tmp_path, SMALL)
    meta = json.loads((tmp_path / "world.json").read_text())
    assert meta["members"] == [p.name for p in world.members]
    assert len(meta["non_members"]) == 2
    assert not set(meta["members"]) & set(meta["non_members"])
    for name in meta["members"] + meta["non_members"]:
        folder = tmp_path / "faces" / name.replace(" ", "_")
        assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png", "2.png"]
    assert len(list((tmp_path / "objects").iterdir())) == len(meta["object_classes"]) == 30
    assert (tmp_path / "clean").is_dir() and any((tmp_path / "clean").iterdir())
    captions = (tmp_path / "captions.txt").read_text().splitlines()
    assert len(captions) == 50
    # member names are in the corpus, non-member names never are
    corpus = "\n".join(captions)
    assert any(m in corpus for m in meta["members"])
    assert not any(n in corpus for n in meta["non_members"])
    # loadable as a FaceScrub-style folder and with datasets' imagefolder
    faces = load_face_folder(tmp_path / "faces")
    assert set(faces.names()) == set(meta["members"] + meta["non_members"])
    from datasets import load_dataset

    ds = load_dataset("imagefolder", data_dir=str(tmp_path / "faces"), split="train")
    assert len(ds) == 5 * 3
    assert set(ds.features["label"].names) == {n.replace(" ", "_") for n in meta["members"] + meta["non_members"]}


def test_world_is_deterministic(tmp_path):
    a, b = make_world(SMALL), make_world(SMALL)
    assert [p.name for p in a.people] == [p.name for p in b.people]
    assert [p.traits for p in a.people] == [p.traits for p in b.people]
    other = make_world(WorldConfig(**{**SMALL.__dict__, "seed": 1}))
    assert [p.name for p in other.people] != [p.name for p in a.people]
    build_world(tmp_path / "x", SMALL)
    build_world(tmp_path / "y", SMALL)
    for rel in ("faces", "objects", "clean"):
        for f in sorted((tmp_path / "x" / rel).rglob("*.png")):
            g = tmp_path / "y" / f.relative_to(tmp_path / "x")
            assert f.read_bytes() == g.read_bytes()


def test_people_are_distinct_and_photos_vary():
    world = make_world(WorldConfig())
    assert len(world.members) >= 40 and len(world.non_members) >= 40
    names = [p.name for p in world.people]
    assert len(set(names)) == len(names)
    traits = [tuple(sorted(p.traits.items())) for p in world.people]
    assert len(set(traits)) == len(traits)
    rng = np.random.default_rng(0)
    photos = [np.asarray(draw_face(world.members[0].traits, rng, 64), dtype=float) for _ in range(2)]
    assert photos[0].shape == (64, 64, 3)
    assert np.abs(photos[0] - photos[1]).mean() > 5  # position, lighting, background differ


def test_contrastive_loss_handles_duplicate_captions():
    """Two images share one caption: both are its positives. With perfect embeddings the only loss left is
    the text side's uniform choice between the two equal images: (0 + (ln 2 + 0) / 2) / 2 = ln 2 / 4."""
    t0, t1 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    images = torch.stack([t0, t0, t1])
    captions = torch.stack([t0, t1])  # de-duplicated captions
    positives = torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.bool)
    loss = contrastive_loss(images, captions, positives, torch.tensor(np.log(100.0)))
    assert loss.item() == pytest.approx(np.log(2) / 4, abs=1e-3)
    # had the duplicate been a negative of image 0 (hard labels), the loss could not get that low
    hard = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    naive = contrastive_loss(images, torch.stack([t0, t0, t1]), hard, torch.tensor(np.log(100.0)))
    assert naive > loss + 0.2


def test_pretrained_model_loads_with_standard_apis(tiny_world):
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(tiny_world.model_dir)
    processor = CLIPProcessor.from_pretrained(tiny_world.model_dir)
    tok = processor.tokenizer
    cfg = model.config.text_config
    assert (cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id) == (
        tok.eos_token_id,
        tok.bos_token_id,
        tok.pad_token_id,
    )
    # different captions pool to different vectors (a wrong eos id would make them identical)
    batch = tok(["a photo of a red circle", "a blue star"], padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = model.get_text_features(**batch).pooler_output
    assert not torch.allclose(emb[0], emb[1])
    image = Image.open(next((tiny_world.faces_dir).rglob("0.png")))
    px = processor(images=image, return_tensors="pt")["pixel_values"]
    assert px.shape == (1, 3, model.config.vision_config.image_size, model.config.vision_config.image_size)


def test_model_knows_objects_well_above_chance(tiny_clip, tiny_world):
    from hf_privacy_backdoor.evaluation import zero_shot_folder

    model, processor = tiny_clip
    acc = zero_shot_folder(model, processor, tiny_world.objects_dir, str(tiny_world.membership_file), progress=False)
    chance = 1 / len(tiny_world.object_classes)
    assert acc["top1"] > 10 * chance


class _Rebuilt(Exception):
    pass


def test_cached_build_is_reused_and_other_parameters_are_built_anew(tiny_world, tmp_path, monkeypatch):
    """Same parameters: the cached build comes back and nothing is rebuilt; other parameters never get it.
    (How long a fresh build takes is measured by benchmarks/bench_synthetic.py.)"""
    from hf_privacy_backdoor.synthetic import PretrainConfig, get_or_build_synthetic, pretrain

    def rebuild(*args, **kwargs):
        raise _Rebuilt

    monkeypatch.setattr(pretrain, "build_synthetic", rebuild)
    assert get_or_build_synthetic(progress=False).root == tiny_world.root
    (tmp_path / tiny_world.root.name).symlink_to(tiny_world.root)  # the same build in another cache folder
    assert get_or_build_synthetic(cache_dir=tmp_path, progress=False).root == tmp_path / tiny_world.root.name
    with pytest.raises(_Rebuilt):
        get_or_build_synthetic(pretrain_config=PretrainConfig(steps=PretrainConfig().steps + 1), cache_dir=tmp_path)
    with pytest.raises(_Rebuilt):
        get_or_build_synthetic(WorldConfig(seed=1), cache_dir=tmp_path, progress=False)


@pytest.mark.slow  # a second world build in a subprocess (~30 s); the in-process determinism test stays fast
def test_same_seed_builds_the_same_tokenizer_and_model_in_another_process(tmp_path):
    """`tokenizers`' own BPE trainer breaks ties differently in every process; ours must not."""
    import subprocess
    import sys

    from hf_privacy_backdoor.synthetic import PretrainConfig, build_synthetic

    world = SMALL
    code = (
        "import sys; from hf_privacy_backdoor.synthetic import *; "
        f"build_synthetic(sys.argv[1], WorldConfig(**{world.__dict__!r}), PretrainConfig(steps=3), progress=False)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], check=True, capture_output=True)
    build_synthetic(tmp_path / "b", world, PretrainConfig(steps=3), progress=False)
    for f in ("model/tokenizer.json", "model/model.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
