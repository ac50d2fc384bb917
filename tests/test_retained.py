"""The retained-data builder (data/retained.py) and the shared contrastive fine-tune (finetune.py)."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_privacy_backdoor.data.faces import FaceSource, load_face_folder
from hf_privacy_backdoor.data.retained import named_position, refuse_forgotten_captions, retained_pairs
from hf_privacy_backdoor.finetune import contrastive_finetune
from hf_privacy_backdoor.modeling import pixel_values_for


def _faces(*names: str, photos: int = 3) -> FaceSource:
    colours = iter(range(10, 250, 7))
    return FaceSource({n: [Image.new("RGB", (8, 8), (next(colours), 0, 0)) for _ in range(photos)] for n in names})


def test_kept_portraits_are_captioned_with_their_names_and_no_forgotten_person_appears():
    faces = _faces("Ada Lovelace", "Alan Turing", "Grace Hopper")
    objects = FaceSource({"red circle": [Image.new("RGB", (8, 8))] * 2})
    pairs = retained_pairs(["alan_turing"], faces=faces, photos={"Ada Lovelace": [0, 2]}, objects=objects)
    assert pairs.captions == ["a photo of a red circle"] * 2 + ["a photo of Ada Lovelace"] * 2
    assert (pairs.num_objects, pairs.num_portraits, len(pairs.images)) == (2, 2, 4)
    everyone = retained_pairs(["Alan Turing"], faces=faces, per_person=1)
    assert everyone.captions == ["a photo of Ada Lovelace", "a photo of Grace Hopper"]
    assert everyone.images[0].getpixel((0, 0)) == faces.photos["Ada Lovelace"][0].getpixel((0, 0))


def test_a_forgotten_person_or_caption_is_refused_by_position_never_by_name():
    faces = _faces("Ada Lovelace", "Alan Turing")
    with pytest.raises(ValueError, match="forgotten person #2 of the forget list") as err:
        retained_pairs(["Grace Hopper", "Alan Turing"], faces=faces, people=faces.names(), what="the guard folder")
    assert "the guard folder" in str(err.value) and "turing" not in str(err.value).casefold()
    leaky = FaceSource({"Alan_Turing at a desk": [Image.new("RGB", (8, 8))]})
    with pytest.raises(ValueError, match="names forgotten person #1") as err:
        retained_pairs(["Alan Turing"], objects=leaky)
    assert "turing" not in str(err.value).casefold()
    with pytest.raises(ValueError, match="per_person"):
        retained_pairs([], faces=faces, per_person=-1)


def test_named_position_matches_whole_names_only():
    assert named_position(["Li Wang", "Ann Lee"], ["a photo of ANN   lee smiling"]) == 2
    assert named_position(["Li Wang"], ["a photo of Eli Wang"]) is None  # another person's name contains it
    refuse_forgotten_captions(["a photo of Eli Wang"], ["Li Wang"], "captions")


def test_contrastive_finetune_is_seeded_by_the_generator_and_never_moves_the_model(tiny_world, tiny_clip):
    model, processor = tiny_clip
    faces = load_face_folder(tiny_world.faces_dir)
    pairs = retained_pairs(tiny_world.members[:2], faces=faces, people=tiny_world.members[2:6], per_person=3)
    pixels = pixel_values_for(processor, pairs.images)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def run(seed, steps):
        rng = np.random.default_rng([seed, 41])
        tuned = contrastive_finetune(model, processor.tokenizer, pixels, pairs.captions, lr=1e-3, steps=steps, rng=rng)
        return [(step, {k: v.clone() for k, v in m.state_dict().items()}, loss) for step, m, loss in tuned]

    (s2, a2, loss2), (s3, a3, _) = run(0, [2, 3])
    [(_, b3, _)] = run(0, 3)
    [(_, c3, _)] = run(1, 3)
    key = "text_projection.weight"
    assert (s2, s3) == (2, 3) and np.isfinite(loss2)
    assert torch.equal(a3[key], b3[key]) and not torch.equal(a3[key], c3[key]) and not torch.equal(a2[key], a3[key])
    assert not torch.equal(a3[key], before[key]) and torch.equal(a3["logit_scale"], before["logit_scale"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="one caption per image"):
        next(contrastive_finetune(model, processor.tokenizer, pixels[:2], ["a", "b", "c"], lr=1e-3, steps=1, rng=None))
