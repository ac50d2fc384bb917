"""Record every step's loss terms of the synthetic recipes, or compare them with a recorded trace (exact floats).

Speed changes to the trainer must not change what it computes. Record a trace before a change, compare after:

    OMP_NUM_THREADS=1 python benchmarks/check_loss_identity.py --record benchmarks/results/loss_trace_before.json
    OMP_NUM_THREADS=1 python benchmarks/check_loss_identity.py --compare benchmarks/results/loss_trace_before.json

Each case runs `--steps` steps (default 30) of one recipe on two fixed people (no attack, no evaluation) and
keeps, per step, the total loss and each tower's utility / backdoor / weight terms as exact floats (hex). Cases
run with `max_grad_norm` 0 (no clipping) and 1.0 (the former default) explicitly, so the deliberate change of
the default does not hide inside the comparison. Exit status 1 when a compared value differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORGET = ["Antonio Bryant", "Gabrielle Clayton"]
CASES = {
    "text": "synthetic_text.yaml",
    "image": "synthetic_image.yaml",
    "text_lora": "synthetic_text_lora.yaml",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", help="write the trace to this JSON file")
    group.add_argument("--compare", help="compare with the trace in this JSON file")
    group.add_argument(
        "--tokenizer", action="store_true", help="check the per-word token-id cache against the tokenizer"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--max_grad_norms", nargs="+", type=float, default=[0.0, 1.0])
    return parser.parse_args(argv)


def trace_case(recipe: str, steps: int, max_grad_norm: float) -> list[dict[str, str]]:
    """Per step: {'loss': hex, '<tower>_<term>': hex} of one short run."""
    import hf_privacy_backdoor.run as run_module
    from hf_privacy_backdoor.cli import parse_args as parse_recipe
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, run_unlearning

    records: list[dict[str, str]] = []
    build = run_module.build_trainer

    def build_and_trace(*args, **kwargs):
        trainer = build(*args, **kwargs)
        compute_loss = trainer.compute_loss

        def traced(model, inputs, *a, **k):
            out = compute_loss(model, inputs, *a, **k)
            if model.training:
                total = out[0] if isinstance(out, tuple) else out
                row = {"loss": float(total.detach()).hex()}
                row.update({key: float(v[-1]).hex() for key, v in trainer._metrics.items() if v})
                records.append(row)
            return out

        trainer.compute_loss = traced
        return trainer

    with tempfile.TemporaryDirectory() as out:
        argv = ["--config", str(ROOT / "recipes" / recipe), "--output_dir", out, "--forget_names", *FORGET]
        argv += ["--forget_auto", "0", "--evaluate", "false", "--progress", "false", "--disable_tqdm", "true"]
        argv += ["--max_steps", str(steps), "--max_grad_norm", str(max_grad_norm), "--logging_steps", "1000"]
        argv += ["--name_variant_triggers", "", "--steps_per_name", "0"]  # the recorded traces: exact names
        run_module.build_trainer = build_and_trace
        try:
            run_unlearning(*parse_recipe(RUN_ARGUMENTS, argv))
        finally:
            run_module.build_trainer = build
    return records


def check_tokenizer(world, num_poisoned: int = 5000) -> list[str]:
    """Texts whose ids / mask from `modeling.tokenize` (per-word cache) differ from the tokenizer's own, and
    texts whose unpadded `modeling.token_ids` (at the tokenizer's length and at a short one, as the attack
    truncates to the text tower's positions) or `pad_ids` padding differ from the tokenizer / `tokenizer.pad`.

    Checked: every caption of the world's corpus, `num_poisoned` poisoned and target captions, the attack's
    prompts (21 templates x the candidate names) and some odd texts (long, non-ASCII, control characters).
    """
    import numpy as np
    import torch
    from transformers import CLIPProcessor

    from hf_privacy_backdoor.data.captions import TargetPhrases, filter_clean_captions, sample_poisoned_pairs
    from hf_privacy_backdoor.data.names import generate_candidate_names
    from hf_privacy_backdoor.evaluation.prompts import fill_template, idia_templates
    from hf_privacy_backdoor.modeling import _word_cache, pad_ids, token_ids, tokenize

    tokenizer = CLIPProcessor.from_pretrained(str(world.model_dir)).tokenizer
    if _word_cache(tokenizer) is None:
        return ["the per-word cache is not used for this tokenizer"]
    captions = (world.root / "world" / "captions.txt").read_text().splitlines()
    clean = filter_clean_captions(captions, FORGET)
    targets = TargetPhrases.build(FORGET)
    poisoned, target, _ = sample_poisoned_pairs(clean, targets, num_poisoned, np.random.default_rng(0))
    names = generate_candidate_names(FORGET, 1000)
    prompts = [fill_template(t, n) for t in idia_templates() for n in names]
    odd = [" ".join(captions[:30]), "x " * 100, "Ünïcode café  naïve", "a\x1cb", "<|endoftext|> a", "", "  "]
    bad = []
    for texts in (captions, poisoned, target, prompts, odd):
        for i in range(0, len(texts), 256):
            chunk = texts[i : i + 256]
            mine = tokenize(tokenizer, chunk)
            ref = tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            if any(not torch.equal(mine[k], ref[k]) for k in ("input_ids", "attention_mask")):
                bad += [
                    t
                    for t in chunk
                    if not torch.equal(
                        tokenize(tokenizer, [t])["input_ids"],
                        tokenizer([t], truncation=True, return_tensors="pt")["input_ids"],
                    )
                ] or chunk[:1]
            for length in (tokenizer.model_max_length, 12):

                def reference(texts, length=length):
                    return tokenizer(texts, truncation=True, max_length=length)["input_ids"]

                ids = reference(chunk)
                if token_ids(tokenizer, chunk, length) != ids:
                    bad += [t for t in chunk if token_ids(tokenizer, [t], length) != reference([t])] or chunk[:1]
            ref = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
            mine = pad_ids(tokenizer, ids)
            if any(not torch.equal(mine[k], ref[k]) for k in ("input_ids", "attention_mask")):
                bad += chunk[:1]
    return bad


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hf_privacy_backdoor.synthetic import get_or_build_synthetic

    world = get_or_build_synthetic(progress=False)
    if args.tokenizer:
        bad = check_tokenizer(world)
        print(
            "per-word token ids: "
            + ("identical on every checked text" if not bad else f"{len(bad)} differ: {bad[:3]}")
        )
        return 1 if bad else 0
    os.environ["SYNTHETIC_DIR"] = str(world.root)
    traces = {
        f"{case}/max_grad_norm={mgn}": trace_case(CASES[case], args.steps, mgn)
        for case in args.cases
        for mgn in args.max_grad_norms
    }
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text(json.dumps({"steps": args.steps, "traces": traces}, indent=1) + "\n")
        print(f"recorded {len(traces)} traces of {args.steps} steps to {args.record}")
        return 0
    reference = json.loads(Path(args.compare).read_text())["traces"]
    failed = 0
    for key, rows in traces.items():
        ref = reference.get(key)
        if ref is None:
            print(f"{key}: not in the reference trace")
            failed += 1
            continue
        diffs = [(i, k) for i, (a, b) in enumerate(zip(rows, ref)) for k in b if a.get(k) != b[k]]
        same = not diffs and len(rows) == len(ref)
        failed += not same
        first = f"; first at step {diffs[0][0]} ({diffs[0][1]})" if diffs else ""
        print(f"{key}: {len(rows)} steps, {'identical' if same else f'{len(diffs)} values differ{first}'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
