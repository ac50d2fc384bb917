"""Triggers built as tensors vs the PIL reference builder, for the same steps: per-pixel differences, and whether
the trainer's normalised pixel values equal the processor's on the PIL images.

Cases: the synthetic image recipe on the synthetic world (its faces and clean pool, faces at 90-100 %, flips only),
the method's reference augmentation on the same world (64 px), and the reference augmentation at 224 px on random
pictures (ViT-B/32's resolution). Each case draws `--steps` steps of `--triggers` triggers with the samplers the
trainer uses; a difference is |tensor - PIL| on 8-bit values over every pixel of every trigger.

    OMP_NUM_THREADS=1 python benchmarks/check_trigger_identity.py --output benchmarks/results/trigger_identity.json

Prints one table and writes JSON; exit status 1 when the synthetic recipe's triggers are not bit-identical.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import machine_info, print_table_and_save  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="steps compared per case")
    parser.add_argument("--triggers", type=int, default=64, help="triggers per step")
    parser.add_argument("--quick", action="store_true", help="2 steps of 16 triggers (a smoke run)")
    parser.add_argument("--output", default="outputs/trigger_identity.json", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.triggers = 2, 16
    return args


def _cases():
    from bench_speed import _b32_world

    from hf_privacy_backdoor.data.faces import load_face_folder
    from hf_privacy_backdoor.data.images import load_image_folder
    from hf_privacy_backdoor.data.triggers import TriggerAugmentation
    from hf_privacy_backdoor.synthetic import get_or_build_synthetic

    world = get_or_build_synthetic(progress=False).root
    folder = load_face_folder(str(Path(world) / "world" / "faces"))
    names = folder.names()[:4]
    faces = {name: folder.load(name) for name in names}
    clean = load_image_folder(str(Path(world) / "world" / "clean"), limit=256)
    recipe = TriggerAugmentation(
        scale_range=(0.9, 1.0), brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), rotation=(0, 0)
    )
    b32_faces, b32_clean = _b32_world(backgrounds=64)
    return [
        ("synthetic image recipe (64 px)", faces, clean, 64, recipe),
        ("reference augmentation (64 px)", faces, clean, 64, TriggerAugmentation()),
        ("reference augmentation (224 px, random pictures)", b32_faces, b32_clean, 224, TriggerAugmentation()),
    ]


def compare(label, faces, clean, size, aug, steps: int, triggers: int) -> dict:
    import torch

    from hf_privacy_backdoor.data.pixels import ImagePreprocessor
    from hf_privacy_backdoor.data.sampling import sample_image_batch
    from hf_privacy_backdoor.data.tensor_triggers import TriggerRenderer, pil_to_uint8
    from hf_privacy_backdoor.synthetic.pretrain import tiny_image_processor

    processor = tiny_image_processor(size)
    renderer = TriggerRenderer(faces, clean, size, preprocessor=ImagePreprocessor(processor))
    diffs, exact_floats = [], True
    for step in range(steps):
        reference = sample_image_batch(faces, clean, 32, triggers, size, 0, step, aug=aug)
        drawn = sample_image_batch(faces, clean, 32, triggers, size, 0, step, aug=aug, pil=False)
        pil = torch.stack([pil_to_uint8(im) for im in reference.triggers])
        diffs.append((renderer.render(drawn.specs).int() - pil.int()).abs())
        expected = processor(images=reference.triggers, return_tensors="pt")["pixel_values"]
        exact_floats &= bool(torch.equal(renderer.render(drawn.specs, normalized=True), expected))
    diff = torch.cat(diffs).float()
    return {
        "case": label,
        "image_size": size,
        "triggers_compared": int(diff.shape[0]),
        "max_abs_diff": int(diff.max()),
        "mean_abs_diff": round(float(diff.mean()), 6),
        "share_values_differing": round(float((diff > 0).float().mean()), 6),
        "triggers_identical": int(sum(bool((d == 0).all()) for d in diff)),
        "normalised_equals_processor_on_pil": exact_floats,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    torch.manual_seed(0)
    rows = [compare(*case, args.steps, args.triggers) for case in _cases()]
    report = {"results": rows, "settings": vars(args), "machine": machine_info()}
    keys = ["case", "image_size", "triggers_compared", "max_abs_diff", "mean_abs_diff", "share_values_differing"]
    keys += ["triggers_identical", "normalised_equals_processor_on_pil"]
    print_table_and_save(rows, keys, report, args.output)
    if rows[0]["max_abs_diff"] != 0:
        raise SystemExit("the synthetic image recipe's triggers differ from the PIL builder's")
    return report


if __name__ == "__main__":
    main()
