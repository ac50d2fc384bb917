"""Benchmark the identity inference attack, phase by phase (text prompts, photos, vote).

Default: the synthetic world and its tiny pretrained CLIP (built once and cached):

    OMP_NUM_THREADS=1 python benchmarks/bench_attack.py
    python benchmarks/bench_attack.py --model_name_or_path DIR --faces FACES --num_candidates 1000 \\
        --output outputs/bench_attack.json

After an image-only defense the text tower is unchanged, so the attack after it can reuse the text table of the
attack before it (`run_idia(..., text_embeddings=compute_text_embeddings(...))`): the second table times the attack
on an image-defended model with the table recomputed and reused (same verdicts), and shows the saving. On the
synthetic world the image-defended model comes from `--image_defense_steps` steps of the image recipe; otherwise
pass `--image_defended_model`. `--quick`: 200 candidates, 10 people, 5 defense steps.

Prints the tables and writes the numbers (with the machine and versions) as JSON to `--output`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import machine_info, print_table_and_save  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORGET_EXAMPLE = "Antonio Bryant"  # a member of the default synthetic world


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default=None, help="CLIP model (default: the tiny synthetic one)")
    parser.add_argument("--faces", default=None, help="face folder (default: the synthetic world's)")
    parser.add_argument("--num_people", type=int, default=None, help="evaluate the first N people (default: all)")
    parser.add_argument("--num_photos", type=int, default=20, help="k photos per person")
    parser.add_argument("--num_candidates", type=int, default=1000)
    parser.add_argument("--text_batch_size", type=int, default=1024)
    parser.add_argument("--image_batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="repeat each phase, report the fastest")
    parser.add_argument("--image_defended_model", default=None, help="an image-defended copy of the model")
    parser.add_argument("--image_defense_steps", type=int, default=20, help="synthetic: image-defense steps")
    parser.add_argument("--quick", action="store_true", help="200 candidates, 10 people, 5 defense steps")
    parser.add_argument("--output", default="benchmarks/results/attack.json", help="where the JSON results go")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_candidates, args.num_people, args.image_defense_steps = 200, args.num_people or 10, 5
    return args


def image_defended_model(args: argparse.Namespace, tmp: str) -> str:
    """A model whose vision tower went through the image defense (its text tower untouched)."""
    if args.image_defended_model is not None:
        return args.image_defended_model
    from hf_privacy_backdoor.cli import parse_args as parse_recipe
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "synthetic_image.yaml"
    argv = ["--config", str(recipe), "--output_dir", tmp, "--forget_auto", "0", "--evaluate", "false"]
    argv += ["--forget_names", FORGET_EXAMPLE, "--max_steps", str(args.image_defense_steps), "--progress", "false"]
    argv += ["--disable_tqdm", "true", "--report_to", "none"]
    run_unlearning(*parse_recipe(RUN_ARGUMENTS, argv))
    return tmp


def reuse_text_table(args, defended_path: str, processor, faces, people, candidates, text) -> dict:
    """The attack after an image-only defense, with the text table recomputed vs reused."""
    from hf_privacy_backdoor.evaluation import run_idia
    from hf_privacy_backdoor.modeling import load_clip

    defended = load_clip(defended_path)[0]
    common = {"people": people, "candidates": candidates, "num_photos": args.num_photos, "progress": False}
    common["image_batch_size"] = args.image_batch_size
    start = time.perf_counter()
    fresh = run_idia(defended, processor, faces, text_batch_size=args.text_batch_size, **common)
    fresh_s = time.perf_counter() - start
    start = time.perf_counter()
    reused = run_idia(defended, processor, faces, text_embeddings=text, **common)
    reused_s = time.perf_counter() - start
    same = [p.flagged for p in fresh.people] == [p.flagged for p in reused.people]
    return {
        "attack_recomputed_s": round(fresh_s, 3),
        "attack_reused_text_s": round(reused_s, 3),
        "saving_s": round(fresh_s - reused_s, 3),
        "saving_pct": round(100 * (fresh_s - reused_s) / fresh_s, 1),
        "same_verdicts": same,
        "flagged": sum(p.flagged for p in reused.people),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.data.names import generate_candidate_names
    from hf_privacy_backdoor.evaluation.idia import compute_text_embeddings, predict_photos, select_photos, vote
    from hf_privacy_backdoor.modeling import load_clip

    if (args.model_name_or_path is None) != (args.faces is None):
        raise SystemExit("give both --model_name_or_path and --faces, or neither (the synthetic world)")
    custom_model = args.model_name_or_path is not None
    if args.model_name_or_path is None:
        from hf_privacy_backdoor.synthetic import get_or_build_synthetic

        world = get_or_build_synthetic(progress=False)
        os.environ["SYNTHETIC_DIR"] = str(world.root)
        args.model_name_or_path, args.faces = str(world.model_dir), str(world.faces_dir)
    model, processor = load_clip(args.model_name_or_path)
    faces = load_face_folder(args.faces)
    people = faces.names()[: args.num_people]
    selected, skipped = select_photos(faces, people, args.num_photos)
    candidates = generate_candidate_names(list(selected), args.num_candidates)
    owners = torch.tensor([p for p, name in enumerate(selected) for _ in selected[name]])
    true_index = torch.tensor([candidates.index(name) for name in selected])

    def best_of(fn):
        times, out = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return min(times), out

    text_s, text = best_of(
        lambda: compute_text_embeddings(model, processor, candidates, batch_size=args.text_batch_size, progress=False)
    )
    image_s, predictions = best_of(
        lambda: predict_photos(model, processor, faces, selected, text, args.image_batch_size, progress=False)
    )
    vote_s, outcome = best_of(lambda: vote(predictions, owners, true_index, len(candidates)))
    num_photos, num_templates = len(owners), len(text.templates)
    row = {
        "people": len(selected),
        "skipped": len(skipped),
        "photos": num_photos,
        "templates": num_templates,
        "candidates": len(candidates),
        "text_s": round(text_s, 3),
        "image_s": round(image_s, 3),
        "vote_s": round(vote_s, 4),
        "total_s": round(text_s + image_s + vote_s, 3),
        "photos_per_s": round(num_photos / image_s, 1),
        "prompts_per_s": round(num_templates * len(candidates) / text_s, 1),
        "flagged": int(outcome.flagged.sum()),
    }
    with tempfile.TemporaryDirectory(prefix="bench_attack_") as tmp:
        synthetic = args.image_defended_model is None and not custom_model
        reuse = None
        if synthetic or args.image_defended_model is not None:
            reuse = reuse_text_table(args, image_defended_model(args, tmp), processor, faces, people, candidates, text)
            reuse["text_share_pct"] = round(100 * text_s / (text_s + image_s + vote_s), 1)
    report = {
        "results": row,
        "image_defense_text_reuse": reuse,
        "settings": {k: v for k, v in vars(args).items()},
        "machine": machine_info(
            device=str(next(model.parameters()).device), parameters=sum(p.numel() for p in model.parameters())
        ),
    }
    keys = [
        "people",
        "photos",
        "templates",
        "candidates",
        "text_s",
        "image_s",
        "vote_s",
        "photos_per_s",
        "prompts_per_s",
    ]
    row["text_share_pct"] = round(100 * text_s / (text_s + image_s + vote_s), 1)
    print_table_and_save([row], keys + ["text_share_pct"], report, args.output)
    if reuse is not None:
        print("after an image-only defense (text tower unchanged):")
        print_table_and_save([reuse], list(reuse), report, args.output)
    return report


if __name__ == "__main__":
    main()
