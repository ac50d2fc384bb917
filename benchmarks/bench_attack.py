"""Benchmark the identity inference attack, phase by phase (text prompts, photos, vote).

Default: the synthetic world and its tiny pretrained CLIP (built once and cached):

    OMP_NUM_THREADS=1 python benchmarks/bench_attack.py
    python benchmarks/bench_attack.py --model_name_or_path DIR --faces FACES --num_candidates 1000 \\
        --output outputs/bench_attack.json

Prints one table and writes the numbers (with the machine and versions) as JSON to `--output`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import print_table_and_save  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    parser.add_argument("--output", default="outputs/bench_attack.json", help="where the JSON results go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch
    import transformers

    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.data.names import generate_candidate_names
    from hf_privacy_backdoor.evaluation.idia import compute_text_embeddings, predict_photos, select_photos, vote
    from hf_privacy_backdoor.modeling import load_clip

    if (args.model_name_or_path is None) != (args.faces is None):
        raise SystemExit("give both --model_name_or_path and --faces, or neither (the synthetic world)")
    if args.model_name_or_path is None:
        from hf_privacy_backdoor.synthetic import get_or_build_synthetic

        world = get_or_build_synthetic()
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
    report = {
        "results": row,
        "settings": {k: v for k, v in vars(args).items()},
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": str(next(model.parameters()).device),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
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
    print_table_and_save([row], keys, report, args.output)
    return report


if __name__ == "__main__":
    main()
