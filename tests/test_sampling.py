"""The one batch sampler: shards of a step concatenate to the one-process batch; the preview is what trains."""

import numpy as np
import pytest
from PIL import Image

from hf_privacy_backdoor.data.captions import TargetPhrases
from hf_privacy_backdoor.data.sampling import sample_image_batch, sample_text_batch, shard_indices
from hf_privacy_backdoor.data.triggers import TriggerAugmentation


CAPTIONS = [f"a photo of a {c} {s} on the table" for c in ("red", "blue", "green") for s in ("circle", "star", "cube")]
TARGETS = TargetPhrases.build(["Ada Lovelace", "Alan Turing", "Grace Hopper"])


def _solid(rgb, size=32):
    return Image.new("RGB", (size, size), rgb)


FACES = {"Ada Lovelace": [_solid((255, 0, 0)), _solid((200, 0, 0))], "Alan Turing": [_solid((0, 0, 255))]}
CLEAN = [_solid((0, 40 * i, 0)) for i in range(6)]


@pytest.mark.parametrize("num_shards", [2, 3, 4])
@pytest.mark.parametrize("step", [0, 7, 199])
def test_text_shards_concatenate_to_the_one_process_batch(num_shards, step):
    whole = sample_text_batch(CAPTIONS, TARGETS, 10, 11, seed=3, step=step)
    parts = [sample_text_batch(CAPTIONS, TARGETS, 10, 11, 3, step, i, num_shards) for i in range(num_shards)]
    for key in ("clean", "poisoned", "targets", "owners"):
        assert sum((getattr(p, key) for p in parts), []) == getattr(whole, key)
    assert len(whole.clean) == 10 and len(whole.poisoned) == 11
    # the poisoned caption is its target caption with one word changed to the owner's name
    for poisoned, target, owner in zip(whole.poisoned, whole.targets, whole.owners):
        assert owner in poisoned and poisoned.replace(owner, "a person") == target
    counts = [whole.owners.count(n) for n in TARGETS.mapping]
    assert max(counts) - min(counts) <= 1  # balanced across the forgotten names


@pytest.mark.parametrize("num_shards", [2, 3])
def test_image_shards_concatenate_to_the_one_process_batch(num_shards):
    aug = TriggerAugmentation()
    whole = sample_image_batch(FACES, CLEAN, 5, 7, 32, seed=1, step=4, aug=aug)
    parts = [sample_image_batch(FACES, CLEAN, 5, 7, 32, 1, 4, i, num_shards, aug=aug) for i in range(num_shards)]
    assert sum((p.clean_indices for p in parts), []) == whole.clean_indices
    assert sum((p.owners for p in parts), []) == whole.owners
    shard_triggers = [np.asarray(im) for p in parts for im in p.triggers]
    assert len(shard_triggers) == len(whole.triggers) == 7
    for a, b in zip(shard_triggers, whole.triggers):
        np.testing.assert_array_equal(a, np.asarray(b))
    counts = [whole.owners.count(n) for n in FACES]
    assert max(counts) - min(counts) <= 1


def test_steps_differ_and_the_same_step_repeats():
    a = sample_text_batch(CAPTIONS, TARGETS, 8, 8, seed=0, step=1)
    assert a == sample_text_batch(CAPTIONS, TARGETS, 8, 8, seed=0, step=1)
    assert a != sample_text_batch(CAPTIONS, TARGETS, 8, 8, seed=0, step=2)
    assert a != sample_text_batch(CAPTIONS, TARGETS, 8, 8, seed=1, step=1)
    clean_only = sample_image_batch(FACES, CLEAN, 5, 7, 32, 0, 3, build_triggers=False)
    full = sample_image_batch(FACES, CLEAN, 5, 7, 32, 0, 3)
    assert clean_only.clean_indices == full.clean_indices and not clean_only.triggers


def test_same_seed_same_triggers_and_every_person_across_steps():
    def pixels(seed, step):
        return [im.tobytes() for im in sample_image_batch(FACES, CLEAN, 3, 6, 32, seed, step).triggers]

    assert pixels(7, 0) == pixels(7, 0) and pixels(7, 0) != pixels(8, 0) and pixels(7, 0) != pixels(7, 1)
    # one trigger per step, fewer than people: the random round-robin start still reaches everyone
    seen = {n for step in range(20) for n in sample_image_batch(FACES, CLEAN, 2, 1, 32, 0, step).owners}
    assert seen == set(FACES)
    assert all(im.size == (32, 32) for im in sample_image_batch(FACES, CLEAN, 2, 5, 32, 0, 0).triggers)


def test_bad_shard_is_an_error():
    with pytest.raises(ValueError, match="shard 2 out of range"):
        shard_indices(10, 2, 2)
