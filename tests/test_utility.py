"""Utility numbers: zero-shot accuracy (hand-built top-k, class embeddings, the tiny world's objects) and the
text / image similarities of a defense."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_privacy_backdoor.evaluation.prompts import embed_prompts, imagenet_templates, load_templates
from hf_privacy_backdoor.evaluation.utility import (
    LabelledImages,
    class_embeddings,
    image_similarities,
    labelled_dataset,
    load_labelled_folder,
    text_similarities,
    topk_accuracy,
    zero_shot_accuracy,
    zero_shot_dataset,
    zero_shot_folder,
)


def test_topk_accuracy_hand_built():
    logits = torch.tensor(
        [
            [9.0, 8, 7, 6, 5, 4, 3],  # label 0: top-1
            [9.0, 8, 7, 6, 5, 4, 3],  # label 4: 5th best -> top-5 only
            [9.0, 8, 7, 6, 5, 4, 3],  # label 5: 6th best -> neither
            [0.0, 1, 0, 0, 0, 0, 2],  # label 1: 2nd best -> top-5 only
        ]
    )
    labels = torch.tensor([0, 4, 5, 1])
    assert topk_accuracy(logits, labels) == {"top1": 0.25, "top5": 0.75}
    labels[2] = 4  # now inside the top 5
    assert topk_accuracy(logits, labels)["top5"] == 1.0
    # fewer classes than k: top-k over all classes
    assert topk_accuracy(torch.tensor([[0.0, 1.0]]), torch.tensor([0])) == {"top1": 0.0, "top5": 1.0}


def test_template_sets(tiny_world, tmp_path):
    assert len(imagenet_templates()) == 80 and load_templates(None) == load_templates("imagenet")
    assert load_templates(tiny_world.membership_file) == tiny_world.object_templates
    text = tmp_path / "t.txt"
    text.write_text("a {} here\n\nthe {}\n")
    assert load_templates(text) == ["a {} here", "the {}"]
    with pytest.raises(ValueError, match="placeholder"):
        load_templates(["a photo of a thing"])
    with pytest.raises(FileNotFoundError):
        load_templates(str(tmp_path / "nope.txt"))
    no_templates = tmp_path / "world.json"
    no_templates.write_text(json.dumps({"members": []}))
    with pytest.raises(ValueError, match="object_templates"):
        load_templates(no_templates)


def test_prompt_embeddings_come_back_in_the_given_order(tiny_clip):
    """Prompts are batched by token length; the embeddings must still line up with the prompts given."""
    from hf_privacy_backdoor.modeling import encode_texts

    model, processor = tiny_clip
    prompts = ["a photo of a big red circle on a table", "a star", "two blue circles here", "a", "a green cross"]
    emb = embed_prompts(model, processor, prompts, batch_size=2)
    one_by_one = torch.cat([F.normalize(encode_texts(model, processor.tokenizer, [p]), dim=-1) for p in prompts])
    assert torch.allclose(emb, one_by_one, atol=1e-5)
    with pytest.raises(ValueError, match="no prompts"):
        embed_prompts(model, processor, [])


def test_class_embeddings_are_the_renormalised_mean_of_normalised_prompts(tiny_clip):
    model, processor = tiny_clip
    templates = ["a photo of a {}.", "a {}."]
    classes = class_embeddings(model, processor, ["red circle", "blue star", "green cross"], templates)
    assert classes.shape == (3, model.config.projection_dim)
    assert torch.allclose(classes.norm(dim=-1), torch.ones(3), atol=1e-5)
    from hf_privacy_backdoor.modeling import encode_texts

    prompts = F.normalize(
        encode_texts(model, processor.tokenizer, ["a photo of a blue star.", "a blue star."]), dim=-1
    )
    expected = F.normalize(prompts.mean(dim=0), dim=0)
    assert torch.allclose(classes[1], expected, atol=1e-5)


def test_zero_shot_on_the_world_objects_is_well_above_chance(tiny_world, tiny_clip):
    model, processor = tiny_clip
    result = zero_shot_folder(
        model, processor, tiny_world.objects_dir, templates=tiny_world.object_templates, progress=False
    )
    chance = 1 / len(tiny_world.object_classes)
    assert result["num_classes"] == len(tiny_world.object_classes)
    assert result["num_templates"] == len(tiny_world.object_templates)
    assert result["num_images"] == len(load_labelled_folder(tiny_world.objects_dir).images)
    assert result["top1"] >= 5 * chance, result
    assert result["top5"] >= 0.6, result
    per_class = result["per_class_top1"]
    assert set(per_class) == set(tiny_world.object_classes)
    # every class has the same number of images: overall top-1 is the mean of the per-class top-1
    assert result["top1"] == pytest.approx(np.mean(list(per_class.values())), abs=1e-6)


def test_zero_shot_on_a_dataset_matches_the_folder(tiny_world, tiny_clip):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    model, processor = tiny_clip
    folder = load_labelled_folder(tiny_world.objects_dir)
    keep = [i for i, label in enumerate(folder.labels) if label < 4]
    subset = LabelledImages([folder.images[i] for i in keep], [folder.labels[i] for i in keep], folder.class_names[:4])
    names = [n.replace(" ", "_") for n in subset.class_names]
    dataset = Dataset.from_dict(
        {"image": subset.images, "label": subset.labels},
        features=Features({"image": ImageFeature(), "label": ClassLabel(names=names)}),
    )
    templates = tiny_world.object_templates
    from_folder = zero_shot_accuracy(model, processor, subset, templates, batch_size=16, progress=False)
    assert labelled_dataset(dataset).class_names == subset.class_names  # underscores read as spaces
    from_dataset = zero_shot_dataset(model, processor, dataset, templates=templates, batch_size=16, progress=False)
    assert from_dataset == from_folder
    with pytest.raises(ValueError, match="ClassLabel"):
        labelled_dataset(Dataset.from_dict({"image": subset.images[:2], "label": [0, 1]}))


def test_labelled_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_labelled_folder(tmp_path / "missing")
    (tmp_path / "empty" / "red_circle").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        load_labelled_folder(tmp_path / "empty")


def test_text_similarities(tiny_clip):
    model, processor = tiny_clip
    clean = ["a photo of a red circle.", "a person with glasses"]
    poisoned = ["a photo of Ann Lee", "Ann Lee in the city"]
    target = ["a photo of a person", "a person in the city"]
    same = text_similarities(model, model, processor, clean, poisoned, target)
    assert same["sim_clean"] == pytest.approx(1.0, abs=1e-5) and same["sim_target"] == pytest.approx(1.0, abs=1e-5)
    from hf_privacy_backdoor.modeling import encode_texts

    expected = F.cosine_similarity(
        encode_texts(model, processor.tokenizer, poisoned), encode_texts(model, processor.tokenizer, target)
    ).mean()
    assert same["sim_backdoor"] == pytest.approx(expected.item(), abs=1e-5) and same["sim_backdoor"] < 0.999
    with pytest.raises(ValueError, match="aligned"):
        text_similarities(model, model, processor, None, poisoned, target[:1])
    with pytest.raises(ValueError, match="both"):
        text_similarities(model, model, processor, None, poisoned, None)


def test_image_similarities(tiny_world, tiny_clip):
    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.modeling import encode_images

    model, processor = tiny_clip
    faces = load_face_folder(tiny_world.faces_dir)
    people = [img for name in tiny_world.non_members[:4] for img in faces.load(name, range(3))]
    removed = faces.load(tiny_world.members[0], range(4))
    clean = faces.load(tiny_world.members[1], range(2))
    target = encode_images(model, processor, people).mean(dim=0)
    sims = image_similarities(model, model, processor, target, removed, clean, people)
    assert sims["sim_target"] == pytest.approx(1.0, abs=1e-5)  # undefended: the same mean
    assert sims["sim_clean"] == pytest.approx(1.0, abs=1e-5)
    expected = F.cosine_similarity(encode_images(model, processor, removed), target[None, :]).mean()
    assert sims["sim_id"] == pytest.approx(expected.item(), abs=1e-5) and sims["sim_id"] < 0.999
    with pytest.raises(ValueError, match="original model"):
        image_similarities(None, model, processor, target, clean_images=clean)
