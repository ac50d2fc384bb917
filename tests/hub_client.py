"""Runs publishing steps against a (fake) Hub in a fresh process, and prints what happened as JSON.

    HF_ENDPOINT=http://127.0.0.1:PORT HF_TOKEN=dummy HF_HUB_OFFLINE=0 HF_HOME=$(mktemp -d) \
        python tests/hub_client.py plan.json

huggingface_hub reads HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE once, at import, so tests run the Hub side here,
in a process started with those set. `plan.json` is a list of steps `{"op": ..., ...}`; the output is one JSON
list with a result per step (`ok`, `seconds`, and the step's values, or `error` for a PublishError).
"""

import json
import os
import sys
import time


def op_publish(step):
    from hf_privacy_backdoor.hub import publish

    result = publish(**step["kwargs"])
    return {"commit_url": result.commit_url, "pr_url": result.pr_url, "files": result.files}


def op_push_metrics(step):
    from hf_privacy_backdoor.hub import push_metrics

    return {"commit_url": push_metrics(step["repo_id"], step["summary"], forget_names=step["forget_names"])}


def op_upload(step):
    """Upload a local folder (plus extra files) as one commit: the base model the adapter names."""
    from pathlib import Path

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(step["repo_id"], private=False, exist_ok=True)
    files = {p.name: p.read_bytes() for p in Path(step["folder"]).iterdir() if p.is_file()}
    files.update({k: v.encode() for k, v in step.get("extra", {}).items()})
    ops = [CommitOperationAdd(path_in_repo=k, path_or_fileobj=v) for k, v in files.items()]
    return {"commit_url": api.create_commit(step["repo_id"], ops, commit_message="upload base").commit_url}


def _embeddings(model, seed=0):
    import torch

    torch.manual_seed(seed)
    ids = torch.randint(2, 200, (3, 12))
    ids[:, -1] = model.config.text_config.eos_token_id
    size = model.config.vision_config.image_size
    pixels = torch.rand(2, 3, size, size)
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
    return text, image


def _max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def op_load_full(step):
    """The pushed full model vs the local run folder: embeddings, and a zero-shot pipeline on a picture."""
    from PIL import Image
    from transformers import CLIPModel, pipeline

    remote = CLIPModel.from_pretrained(step["repo_id"]).eval()
    local = CLIPModel.from_pretrained(step["local"]).eval()
    classifier = pipeline("zero-shot-image-classification", model=step["repo_id"])
    labels = ["a photo of a person", "a red square"]
    out = classifier(Image.new("RGB", (64, 64), (200, 30, 30)), candidate_labels=labels)
    return {
        "max_diff": _max_diff(_embeddings(remote), _embeddings(local)),
        "pipeline_labels": [o["label"] for o in out],
    }


def op_load_adapter(step):
    """The pushed adapter loaded three ways vs the local adapter on the local base: embeddings."""
    from peft import AutoPeftModel, PeftModel
    from transformers import CLIPModel

    local = PeftModel.from_pretrained(CLIPModel.from_pretrained(step["local_base"]), step["local"]).eval()
    reference = _embeddings(local)
    ways = {
        "peft_on_hub_base": lambda: PeftModel.from_pretrained(
            CLIPModel.from_pretrained(step["base_repo"]), step["repo_id"]
        ),
        "auto_peft": lambda: AutoPeftModel.from_pretrained(step["repo_id"]),
        "clip_from_adapter_repo": lambda: CLIPModel.from_pretrained(step["repo_id"]),
    }
    base = _embeddings(CLIPModel.from_pretrained(step["local_base"]).eval())
    out = {name: _max_diff(_embeddings(load().eval()), reference) for name, load in ways.items()}
    return {**out, "adapter_changes_base": _max_diff(base, reference)}


def op_card(step):
    """The card as the Hub serves it: metadata, model-index, text; and whether the Hub validates it."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(step["repo_id"])
    try:
        card.validate()
        valid = True
    except ValueError as err:
        valid = str(err)
    return {"data": card.data.to_dict(), "text": card.text, "content": str(card), "valid": valid}


def op_validate_local(step):
    """Validate a card text with the Hub (returns the Hub's objection, if any)."""
    from huggingface_hub import ModelCard

    try:
        ModelCard(step["content"]).validate()
        return {"valid": True}
    except ValueError as err:
        return {"valid": str(err)}


def main(plan_path: str) -> None:
    from hf_privacy_backdoor.hub import PublishError

    results = []
    for step in json.loads(open(plan_path, encoding="utf-8").read()):
        start = time.monotonic()
        try:
            out = {"ok": True, **globals()[f"op_{step['op']}"](step)}
        except Exception as err:  # reported, not raised: the test asserts on the kind of failure
            out = {"ok": False, "error": str(err), "error_type": type(err).__name__}
            out["publish_error"] = isinstance(err, PublishError)
        out["seconds"] = round(time.monotonic() - start, 3)
        results.append(out)
    print(json.dumps(results))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(sys.argv[1])
