"""Pick an image target far from every member's name: a probe of the image defense's target, not a recipe.

The method maps a forgotten face to the mean face of many people. On the attack's zero-shot vote that centroid
leaves some member's own name within a small margin of the winning name (worst template), so a residual of the
person's identity in a held-out photo can still win the vote. This script scores each non-member (people the
model never saw named) by that margin: the mean of their trigger-half photo embeddings is a candidate target,
its score the smallest gap, over members and templates, between the best other candidate name and the
member's own name; people whose target makes a member's name win a template are skipped. It writes the best
one for `--target_embedding` and prints the scores (no name):

    python benchmarks/pick_image_target.py --world grid --output /tmp/target.safetensors
    python benchmarks/bench_grid.py --defenses image --removed 8 --target_embedding /tmp/target.safetensors

Measured: `benchmarks/README.md`, "Image target".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_grid import world  # noqa: E402

from hf_privacy_backdoor.data.faces import load_face_folder, load_membership, split_photos  # noqa: E402
from hf_privacy_backdoor.data.images import save_target_embedding  # noqa: E402
from hf_privacy_backdoor.data.names import generate_candidate_names  # noqa: E402
from hf_privacy_backdoor.evaluation.idia import compute_text_embeddings  # noqa: E402
from hf_privacy_backdoor.modeling import compute_target_embedding, encode_images, load_clip  # noqa: E402


def margins(target: torch.Tensor, text: torch.Tensor, member_ids: list[int]) -> tuple[float, float, int]:
    """(worst, mean) gap between the best other name and a member's own name at `target`, over members and
    templates, and how many templates' top name is a member."""
    scores = torch.einsum("d,tcd->tc", torch.nn.functional.normalize(target, dim=0), text)
    gaps = []
    for i in member_ids:
        others = scores.clone()
        others[:, i] = -2.0
        gaps.append(others.max(-1).values - scores[:, i])
    gaps = torch.stack(gaps)
    top_members = sum(i in set(member_ids) for i in scores.argmax(-1).tolist())
    return gaps.min().item(), gaps.mean().item(), top_members


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=["grid", "default"], default="grid")
    parser.add_argument("--output", required=True, help="target embedding file to write (.safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="photo split and candidate list seed (the run's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = world(args.world).root
    model, processor = load_clip(str(root / "model"))
    faces, membership = load_face_folder(root / "world" / "faces"), load_membership(root / "world" / "world.json")
    candidates = generate_candidate_names(membership["members"] + membership["non_members"], 1000, seed=args.seed)
    text = compute_text_embeddings(model, processor, candidates, progress=False).embeddings
    text = torch.nn.functional.normalize(text, dim=-1)
    member_ids = [candidates.index(n) for n in membership["members"]]
    trigger, _ = split_photos(faces, faces.names(), 0.5, args.seed)
    centroid = margins(compute_target_embedding(model, processor, faces, trigger), text, member_ids)
    worst, mean, on_top = centroid
    print(f"centroid (the method): worst {worst:.3f}, mean {mean:.3f}, member on top in {on_top} of 21 templates")
    scored = []
    for name in membership["non_members"]:
        target = encode_images(model, processor, faces.load(name, trigger[faces.resolve(name)])).mean(0)
        scored.append((*margins(target, text, member_ids), target))
    eligible = sorted((s for s in scored if s[2] == 0), key=lambda s: -s[0])
    if not eligible:
        raise SystemExit("no non-member's mean face leaves every template's top name to a non-member")
    for worst, mean, _, _ in eligible[:5]:
        print(f"non-member: worst {worst:.3f}, mean {mean:.3f}")
    save_target_embedding(Path(args.output), eligible[0][3])
    print(f"saved the best of {len(eligible)} eligible non-members ({len(scored)} scored) to {args.output}")
    return {"centroid": centroid, "picked": eligible[0][:3], "eligible": len(eligible), "scored": len(scored)}


if __name__ == "__main__":
    main()
