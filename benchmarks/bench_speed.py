"""Speed of a defense step, side by side in one process: the trainer, a literal loop, and the method floor.

Same model, data, seed and step numbers for all three, per case (text, image, LoRA text on the synthetic recipes):

* (a) `trainer`: `BackdoorUnlearningTrainer.train()`, timed between consecutive optimizer steps (so the
  Trainer's own per-step work counts).
* (b) `literal`: a plain loop written here from docs/method.md: each step samples the same batch, tokenises /
  preprocesses it, runs the frozen teacher on clean and target inputs (no cache), the student on clean and
  poisoned / trigger inputs separately, the loss, backward and AdamW.
* (c) `floor`: the work no implementation can skip: the student's forward + backward + AdamW (with the
  weight-distance term) on inputs prepared before timing (the same tensors the trainer builds: clean + poisoned
  captions in one padded batch), plus the step's fresh inputs that no cache removes: text, the teacher's no-grad
  forward on the step's target captions (almost every poisoned target is new); image, building the step's
  trigger images and preprocessing them (docs/method.md: triggers are built fresh each step). Teacher embeddings of
  clean inputs come from a cache filled before timing.
* `student`: the student alone on fully prepared inputs (no teacher, no trigger building): the lower bound of
  the floor.

The modes run in turns, `--rounds` times each, and the reported s/step is the median over rounds of the
mean over steps (the first `--warmup` steps of a run left out). Each step is timed twice: wall clock and the
process's CPU time; the ratios (a)/(c) and (a)/(b) are taken on CPU time, which other processes on a shared
machine hardly move (wall-clock ratios are reported beside them):

    OMP_NUM_THREADS=1 python benchmarks/bench_speed.py
    OMP_NUM_THREADS=1 python benchmarks/bench_speed.py --quick

`--cases image_b32`: the image defense at the resolution users run: openai/clip-vit-base-patch32's architecture
(random weights, built here), 224 px, the method's reference trigger augmentation (faces at 25-50 %, colour
jitter, hue, rotation), 128 clean images and 128 triggers a step, random face and background pictures. Modes:
`inputs_pil` (the step's inputs built as before: 128 PIL triggers one by one, then the processor on all 256
images), `inputs_tensor` (as the trainer builds them now: triggers rendered as one batch of tensors on the
device, clean images from the 8-bit cache, normalised on the device), `student` / `student_lora` (the vision
tower's forward + backward + AdamW on prepared inputs), `trainer` / `trainer_lora` (`BackdoorUnlearningTrainer`
steps, everything included). The input rows report CPU seconds of one core; on a GPU the trainer / student ratio
is the one to read.

Peak memory: the process's peak resident set size during the mode (Linux's VmHWM, reset before each run) and,
on a GPU, `torch.cuda.max_memory_allocated`. Prints one table and writes JSON to `--output`.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import machine_info, print_table_and_save  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORGET = ["Antonio Bryant", "Gabrielle Clayton"]
CASES = {"text": "synthetic_text.yaml", "image": "synthetic_image.yaml", "text_lora": "synthetic_text_lora.yaml"}
MODES = ("trainer", "literal", "floor", "student")
B32_CASE = "image_b32"
B32_MODES = ("inputs_pil", "inputs_tensor", "student", "trainer", "student_lora", "trainer_lora")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=[*CASES, B32_CASE])
    parser.add_argument(
        "--b32_modes",
        nargs="+",
        default=list(B32_MODES),
        choices=list(B32_MODES),
        help=f"what the {B32_CASE} case measures (see the module docstring)",
    )
    parser.add_argument("--steps", type=int, default=40, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode, taken in turns")
    parser.add_argument("--warmup", type=int, default=3, help="first steps of a run left out of the mean")
    parser.add_argument(
        "--start_step",
        type=int,
        default=0,
        help="time steps start_step..start_step+steps-1 (the trainer trains the earlier steps untimed, so its "
        "teacher caches are as warm as in a run at that step)",
    )
    parser.add_argument("--quick", action="store_true", help="8 steps, 1 round, 2 warm-up steps (a smoke run)")
    parser.add_argument("--output", default="benchmarks/results/speed.json", help="where the JSON results go")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.warmup = 8, 1, 2
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    return args


# ----------------------------------------------------------------------------------------------------------
# Set-up shared by the three modes


@dataclass
class Setup:
    """One case's parsed recipe and data, exactly as `run_unlearning` prepares them (before any training)."""

    case: str
    args: object
    config: object
    lora: object
    processor: object
    inputs: object
    image: object
    image_size: int


def make_setup(case: str, steps: int, output_dir: str) -> Setup:
    from hf_privacy_backdoor.cli import parse_args as parse_recipe
    from hf_privacy_backdoor.modeling import load_clip
    from hf_privacy_backdoor.run import RUN_ARGUMENTS, prepare_image_data, prepare_inputs

    argv = ["--config", str(ROOT / "recipes" / CASES[case]), "--output_dir", output_dir, "--forget_names", *FORGET]
    argv += ["--forget_auto", "0", "--evaluate", "false", "--progress", "false", "--disable_tqdm", "true"]
    argv += ["--max_steps", str(steps), "--logging_steps", str(10 * steps), "--report_to", "none"]
    # the method's exact-name triggers (the literal loop and the floor implement docs/method.md)
    argv += ["--name_variant_triggers", "", "--steps_per_name", "0"]
    args, config, lora = parse_recipe(RUN_ARGUMENTS, argv)
    model, processor = load_clip(args.model_name_or_path)
    inputs = prepare_inputs(args, config, processor.tokenizer)
    inputs.names = FORGET
    image = prepare_image_data(args, config, model, processor, inputs)
    return Setup(case, args, config, lora, processor, inputs, image, model.config.vision_config.image_size)


def fresh_model(setup: Setup):
    from hf_privacy_backdoor.modeling import load_clip

    return load_clip(setup.args.model_name_or_path)[0]


def build_trainer(setup: Setup):
    from hf_privacy_backdoor.run import build_trainer as build

    return build(setup.args, setup.config, setup.lora, fresh_model(setup), setup.processor, setup.inputs, setup.image)


def _now() -> tuple[float, float]:
    """(wall clock, process CPU time): CPU time hardly moves when other processes share the cores."""
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    now = _now()
    return now[0] - start[0], now[1] - start[1]


def _peak_rss_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _rss_mb(field: str = "VmHWM") -> float:
    try:
        return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------------
# (a) the trainer


def time_trainer(setup: Setup, steps: int, start: int = 0) -> tuple[list[tuple[float, float]], float]:
    """(wall, CPU) seconds between consecutive optimizer steps of `trainer.train()` from step `start`, and the
    first timed step's loss."""
    from transformers import TrainerCallback

    trainer = build_trainer(setup)
    marks: list[tuple[float, float]] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(_now())

        def on_step_end(self, args, state, control, **kwargs):
            marks.append(_now())

    compute_loss = trainer.compute_loss

    def recorded(model, inputs, *a, **k):
        out = compute_loss(model, inputs, *a, **k)
        losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out

    trainer.compute_loss = recorded
    trainer.add_callback(Clock())
    trainer.train()
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])][start:], losses[start]


# ----------------------------------------------------------------------------------------------------------
# Student / teacher pairs for (b) and (c), built here from the library's freezing rules


class Pair:
    """Student (trainable), the teacher forward, the weight-distance term and AdamW + the step schedule."""

    def __init__(self, setup: Setup):
        import torch

        from hf_privacy_backdoor.modeling import disable_dropout, freeze_layernorms, set_trainable_towers
        from hf_privacy_backdoor.peft_utils import apply_lora, get_peft_config

        config = setup.config
        self.text = config.defense == "text"
        clip = fresh_model(setup)
        disable_dropout(clip)
        peft_config = get_peft_config(setup.lora, config.defense)
        if peft_config is not None:
            set_trainable_towers(clip, text=False, vision=False)
            self.student, self.teacher = apply_lora(clip, peft_config), None
        else:
            set_trainable_towers(clip, text=self.text, vision=not self.text)
            freeze_layernorms(clip)
            self.student, self.teacher = clip, copy.deepcopy(clip).eval().requires_grad_(False)
        self.student.train()
        prefixes = ("text_model.", "text_projection") if self.text else ("vision_model.", "visual_projection")
        self.prefixes = prefixes
        self.params = [p for p in self.student.parameters() if p.requires_grad]
        if self.teacher is not None:
            teacher = dict(self.teacher.named_parameters())
            self.pairs = [(p, teacher[n]) for n, p in clip.named_parameters() if p.requires_grad]
        self.lam = config.text_weight_distance if self.text else config.image_weight_distance
        self.beta = config.text_backdoor_weight if self.text else config.image_backdoor_weight
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        milestones, gamma = config.lr_milestones or [], config.lr_gamma or 1.0
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: gamma ** bisect.bisect_right(milestones, s)
        )

    def features(self, model, **inputs):
        out = model.get_text_features(**inputs) if self.text else model.get_image_features(**inputs)
        return out.pooler_output

    def teacher_features(self, **inputs):
        import torch

        with torch.no_grad():
            if self.teacher is not None:
                return self.features(self.teacher, **inputs)
            with self.student.disable_adapter():
                return self.features(self.student.base_model.model, **inputs)

    def student_features(self, **inputs):
        return self.features(self.student.base_model.model if self.teacher is None else self.student, **inputs)

    def weight_term(self):
        import torch

        if self.teacher is not None:
            return sum(torch.linalg.vector_norm((p - t).flatten()) for p, t in self.pairs)
        from hf_privacy_backdoor.losses import lora_weight_distance
        from hf_privacy_backdoor.peft_utils import lora_factors

        return lora_weight_distance(lora_factors(self.student, self.prefixes))

    def update(self, loss) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()


def _neg_cos(a, b):
    import torch.nn.functional as F

    return -F.cosine_similarity(a, b.expand_as(a), dim=-1).mean()


def _text_data(setup: Setup):
    from hf_privacy_backdoor.data.captions import TargetPhrases, filter_clean_captions

    config = setup.config
    clean = list(dict.fromkeys(filter_clean_captions(setup.inputs.captions, FORGET)))
    targets = TargetPhrases.build(FORGET, config.target_mode, config.target_phrase, None, seed=config.seed)
    return clean, targets


def _text_batch(setup: Setup, clean, targets, step: int):
    from hf_privacy_backdoor.data.sampling import sample_text_batch

    c = setup.config
    return sample_text_batch(clean, targets, c.num_clean_captions, c.num_poisoned_captions, c.seed, step)


def _image_batch(setup: Setup, step: int, build_triggers: bool = True):
    from hf_privacy_backdoor.data.sampling import sample_image_batch

    c = setup.config
    aug = c.trigger_augmentation()
    return sample_image_batch(
        setup.image.trigger_photos,
        setup.image.clean_images,
        c.num_clean_images,
        c.num_trigger_images,
        setup.image_size,
        c.seed,
        step,
        aug=aug,
        build_triggers=build_triggers,
    )


# ----------------------------------------------------------------------------------------------------------
# (b) the literal loop


def time_literal(setup: Setup, steps: int, start: int = 0) -> tuple[list[tuple[float, float]], float]:
    """The method (docs/method.md) written out: fresh batch, teacher every step, separate student forwards."""
    from hf_privacy_backdoor.modeling import pixel_values_for, tokenize

    pair = Pair(setup)
    text = pair.text
    if text:
        clean, targets = _text_data(setup)
        tokenizer = setup.processor.tokenizer
    else:
        target = setup.image.target.flatten().unsqueeze(0)
    times, first = [], None
    for step in range(start, start + steps):
        began = _now()
        if text:
            batch = _text_batch(setup, clean, targets, step)
            teacher_clean = pair.teacher_features(**tokenize(tokenizer, batch.clean))
            teacher_target = pair.teacher_features(**tokenize(tokenizer, batch.targets))
            student_clean = pair.student_features(**tokenize(tokenizer, batch.clean))
            student_poisoned = pair.student_features(**tokenize(tokenizer, batch.poisoned))
            utility = _neg_cos(student_clean, teacher_clean)
            backdoor = _neg_cos(student_poisoned, teacher_target)
        else:
            batch = _image_batch(setup, step)
            clean_pixels = pixel_values_for(setup.processor, batch.clean)
            teacher_clean = pair.teacher_features(pixel_values=clean_pixels)
            student_clean = pair.student_features(pixel_values=clean_pixels)
            student_triggers = pair.student_features(pixel_values=pixel_values_for(setup.processor, batch.triggers))
            utility = _neg_cos(student_clean, teacher_clean)
            people = sorted(set(batch.owners))
            per_person = [
                _neg_cos(student_triggers[[i for i, o in enumerate(batch.owners) if o == name]], target)
                for name in people
            ]
            backdoor = sum(per_person) / len(per_person)
        loss = utility + pair.beta * backdoor + pair.lam * pair.weight_term()
        pair.update(loss)
        times.append(_since(began))
        first = float(loss.detach()) if first is None else first
    return times, first


# ----------------------------------------------------------------------------------------------------------
# (c) the method floor, and the student alone


def _prepared_steps(setup: Setup, pair: Pair, steps: range, student_only: bool) -> list[dict]:
    """Per step, what is prepared before timing: the student's inputs (or, for the floor's image defense, the
    step's number and clean pixels: its triggers are built in the timed part) and the teacher's clean embeddings."""
    import torch

    from hf_privacy_backdoor.modeling import pixel_values_for, tokenize

    prepared = []
    if pair.text:
        clean, targets = _text_data(setup)
        tokenizer = setup.processor.tokenizer
        cache = {}
        for step in steps:
            b = _text_batch(setup, clean, targets, step)
            for caption in dict.fromkeys(b.clean):
                if caption not in cache:
                    cache[caption] = pair.teacher_features(**tokenize(tokenizer, [caption]))[0]
            item = {"student_in": tokenize(tokenizer, b.clean + b.poisoned), "num_clean": len(b.clean)}
            item["teacher_clean"] = torch.stack([cache[c] for c in b.clean])
            item["target_tokens"] = tokenize(tokenizer, b.targets)
            if student_only:
                item["teacher_target"] = pair.teacher_features(**item["target_tokens"])
            prepared.append(item)
        return prepared
    pool_pixels = pixel_values_for(setup.processor, setup.image.clean_images)
    pool = pair.teacher_features(pixel_values=pool_pixels)
    for step in steps:
        b = _image_batch(setup, step, build_triggers=student_only)
        item = {"step": step, "num_clean": len(b.clean), "teacher_clean": pool[b.clean_indices]}
        item["clean_pixels"] = pool_pixels[b.clean_indices]
        if student_only:
            pixels = torch.cat([item["clean_pixels"], pixel_values_for(setup.processor, b.triggers)])
            item["student_in"], item["owners"] = {"pixel_values": pixels}, b.owners
        prepared.append(item)
    return prepared


def _fresh_inputs(setup: Setup, pair: Pair, item: dict) -> None:
    """The floor's per-step work that no cache removes: the teacher on new target captions, or new triggers."""
    import torch

    from hf_privacy_backdoor.modeling import pixel_values_for

    if pair.text:
        item["teacher_target"] = pair.teacher_features(**item["target_tokens"])
    else:
        b = _image_batch(setup, item["step"])
        pixels = torch.cat([item["clean_pixels"], pixel_values_for(setup.processor, b.triggers)])
        item["student_in"], item["owners"] = {"pixel_values": pixels}, b.owners


def _time_prepared(setup: Setup, steps: int, start: int, student_only: bool) -> tuple[list, float]:
    pair = Pair(setup)
    prepared = _prepared_steps(setup, pair, range(start, start + steps), student_only)
    target = None if pair.text else setup.image.target.flatten().unsqueeze(0)
    times, first = [], None
    for item in prepared:
        began = _now()
        if not student_only:
            _fresh_inputs(setup, pair, item)
        student = pair.student_features(**item["student_in"])
        num_clean = item["num_clean"]
        utility = _neg_cos(student[:num_clean], item["teacher_clean"])
        poisoned = student[num_clean:]
        if pair.text:
            backdoor = _neg_cos(poisoned, item["teacher_target"])
        else:
            owners = item["owners"]
            groups = [[i for i, o in enumerate(owners) if o == name] for name in sorted(set(owners))]
            backdoor = sum(_neg_cos(poisoned[g], target) for g in groups) / len(groups)
        loss = utility + pair.beta * backdoor + pair.lam * pair.weight_term()
        pair.update(loss)
        times.append(_since(began))
        first = float(loss.detach()) if first is None else first
    return times, first


def time_floor(setup: Setup, steps: int, start: int = 0) -> tuple[list, float]:
    """The student's step on prepared inputs + the step's fresh teacher targets (text) or triggers (image)."""
    return _time_prepared(setup, steps, start, student_only=False)


def time_student(setup: Setup, steps: int, start: int = 0) -> tuple[list, float]:
    """The student alone: forward + loss + backward + AdamW on inputs prepared before timing."""
    return _time_prepared(setup, steps, start, student_only=True)


# ----------------------------------------------------------------------------------------------------------
# The image defense at 224 px on ViT-B/32's architecture


def _b32_world(num_people: int = 4, photos: int = 6, backgrounds: int = 512, seed: int = 0):
    """Random face photos (name -> PIL) and background pictures at 224 px, with gradients (upsampled noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)

    def picture():
        small = rng.integers(0, 256, (29, 29, 3), dtype=np.uint8)
        return Image.fromarray(small).resize((224, 224), Image.BILINEAR)

    faces = {f"Person {chr(65 + k)}": [picture() for _ in range(photos)] for k in range(num_people)}
    return faces, [picture() for _ in range(backgrounds)]


def _b32_model(folder: str):
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from hf_privacy_backdoor.synthetic.pretrain import tiny_image_processor

    CLIPModel(CLIPConfig()).save_pretrained(folder)  # openai/clip-vit-base-patch32's architecture
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "person": 3}
    tokenizer = _word_tokenizer(vocab)
    CLIPProcessor(image_processor=tiny_image_processor(224), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _word_tokenizer(vocab):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def _b32_config(out: str, steps: int, lora: bool, device: str):
    from hf_privacy_backdoor import BackdoorUnlearningConfig

    return BackdoorUnlearningConfig(
        output_dir=out,
        defense="image",
        max_steps=steps,
        learning_rate=1e-3 if lora else 1e-5,
        num_clean_images=128,
        num_trigger_images=128,
        report_to="none",
        disable_tqdm=True,
        logging_steps=10 * steps,
        save_strategy="no",
        use_cpu=device == "cpu",
        seed=0,
    )


def _b32_lora():
    from hf_privacy_backdoor.peft_utils import LoraArguments, get_peft_config

    return get_peft_config(LoraArguments(use_lora=True), "image")  # the recipes' default: rank 16, vision attn + MLP


def measure_b32(args: argparse.Namespace) -> list[dict]:
    """The image defense at 224 px (ViT-B/32 architecture): inputs before / after, the student, the trainer."""
    import torch

    from hf_privacy_backdoor.data.pixels import ImagePreprocessor, PixelCache
    from hf_privacy_backdoor.data.sampling import sample_image_batch
    from hf_privacy_backdoor.data.tensor_triggers import TriggerRenderer
    from hf_privacy_backdoor.modeling import load_clip, pixel_values_for

    device = "cuda" if torch.cuda.is_available() else "cpu"
    faces, clean = _b32_world()
    names = sorted(faces)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        folder = _b32_model(os.path.join(out, "b32"))
        model, processor = load_clip(folder)
        config = _b32_config(out, args.steps, False, device)
        aug = config.trigger_augmentation()

        def batch(step, pil):
            return sample_image_batch(faces, clean, 128, 128, 224, 0, step, aug=aug, pil=pil)

        def run_inputs_pil(step):
            b = batch(step, True)
            return torch.cat([pixel_values_for(processor, b.clean), pixel_values_for(processor, b.triggers)]).to(
                device
            )

        renderer = TriggerRenderer(faces, clean, 224, device=device, preprocessor=ImagePreprocessor(processor))
        cache = PixelCache(processor, device)

        def run_inputs_tensor(step):
            b = batch(step, False)
            return torch.cat([cache.get(b.clean, b.clean_indices), renderer.render(b.specs, normalized=True)])

        target = torch.nn.functional.normalize(torch.randn(1, model.config.projection_dim), dim=-1).to(device)

        def student_case(lora):
            from hf_privacy_backdoor.modeling import disable_dropout, set_trainable_towers
            from hf_privacy_backdoor.peft_utils import apply_lora

            clip = load_clip(folder)[0].to(device)
            disable_dropout(clip)
            if lora:
                set_trainable_towers(clip, text=False, vision=False)
                clip = apply_lora(clip, _b32_lora())
            else:
                set_trainable_towers(clip, text=False, vision=True)
            params = [p for p in clip.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-5)
            pixels = run_inputs_tensor(0)
            base = clip.base_model.model if lora else clip

            def step(_):
                embeds = torch.nn.functional.normalize(
                    base.get_image_features(pixel_values=pixels).pooler_output, dim=-1
                )
                loss = -(embeds[128:] @ target.T).mean() - (embeds[:128] * embeds[:128].detach()).sum(-1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            return step, sum(p.numel() for p in params)

        def trainer_case(lora):
            from hf_privacy_backdoor import BackdoorUnlearningTrainer

            clip = load_clip(folder)[0]
            trainer = BackdoorUnlearningTrainer(
                clip,
                _b32_config(out, args.steps, lora, device),
                processor,
                forget_names=names,
                trigger_photos=faces,
                clean_images=clean,
                target_embedding=target.flatten().cpu(),
                peft_config=_b32_lora() if lora else None,
            )
            return trainer

        for mode in args.b32_modes:
            _peak_rss_reset()
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            trainable = None
            if mode.startswith("trainer"):
                trainer = trainer_case(mode.endswith("lora"))
                trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
                times = _trainer_times(trainer)
            else:
                fn = {"inputs_pil": run_inputs_pil, "inputs_tensor": run_inputs_tensor}.get(mode)
                if fn is None:
                    fn, trainable = student_case(mode.endswith("lora"))
                times = []
                for step in range(args.steps):
                    began = _now()
                    fn(step)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(_since(began))
            kept = times[args.warmup :]
            rows.append(
                {
                    "case": B32_CASE,
                    "mode": mode,
                    "device": device,
                    "cpu_s_per_step": round(statistics.fmean(t[1] for t in kept), 4),
                    "s_per_step": round(statistics.fmean(t[0] for t in kept), 4),
                    "samples_per_s": round(256 / statistics.fmean(t[0] for t in kept), 1),
                    "trainable_params": trainable,
                    "peak_rss_mb": round(_rss_mb("VmHWM"), 1),
                    "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
                }
            )
            print(rows[-1], flush=True)
    by_mode = {r["mode"]: r for r in rows}
    for row in rows:
        mode = row["mode"]
        student = by_mode.get("student_lora" if mode.endswith("lora") else "student")
        row["ratio_to_student"] = (
            round(row["s_per_step"] / student["s_per_step"], 3) if student and mode.startswith("trainer") else None
        )
        before = by_mode.get("inputs_pil")
        row["ratio_to_inputs_pil"] = (
            round(row["cpu_s_per_step"] / before["cpu_s_per_step"], 3) if before and mode == "inputs_tensor" else None
        )
    return rows


def _trainer_times(trainer) -> list[tuple[float, float]]:
    import torch
    from transformers import TrainerCallback

    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(_now())

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append(_now())

    trainer.add_callback(Clock())
    trainer.train()
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


# ----------------------------------------------------------------------------------------------------------
# Driver


def measure_case(case: str, args: argparse.Namespace) -> list[dict]:
    import torch

    timers = {"trainer": time_trainer, "literal": time_literal, "floor": time_floor, "student": time_student}
    with tempfile.TemporaryDirectory() as out:
        setup = make_setup(case, args.start_step + args.steps, out)
        per_mode = {m: {"means": [], "cpu_means": [], "peak_rss_mb": 0.0, "rss_growth_mb": 0.0} for m in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                _peak_rss_reset()
                rss_before = _rss_mb("VmRSS")
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                times, first_loss = timers[mode](setup, args.steps, args.start_step)
                stats = per_mode[mode]
                stats["means"].append(statistics.fmean(t[0] for t in times[args.warmup :]))
                stats["cpu_means"].append(statistics.fmean(t[1] for t in times[args.warmup :]))
                stats["first_loss"] = first_loss
                stats["peak_rss_mb"] = max(stats["peak_rss_mb"], _rss_mb("VmHWM"))
                stats["rss_growth_mb"] = max(stats["rss_growth_mb"], _rss_mb("VmHWM") - rss_before)
                stats["cuda_peak_mb"] = (
                    torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
                )
        config = setup.config
        per_step = (
            config.num_clean_captions + config.num_poisoned_captions
            if config.trains_text
            else config.num_clean_images + config.num_trigger_images
        )
    return _rows(case, per_mode, per_step)


def _rows(case: str, per_mode: dict, samples_per_step: int) -> list[dict]:
    """Ratios on CPU time (robust to other load on the cores); wall-clock seconds beside them."""
    wall = {m: statistics.median(per_mode[m]["means"]) for m in MODES}
    cpu = {m: statistics.median(per_mode[m]["cpu_means"]) for m in MODES}
    rows = []
    for mode in MODES:
        stats = per_mode[mode]
        rows.append(
            {
                "case": case,
                "mode": mode,
                "cpu_s_per_step": round(cpu[mode], 4),
                "s_per_step": round(wall[mode], 4),
                "samples_per_s": round(samples_per_step / wall[mode], 1),
                "samples_per_cpu_s": round(samples_per_step / cpu[mode], 1),
                "ratio_to_floor": round(cpu[mode] / cpu["floor"], 3),
                "ratio_to_literal": round(cpu[mode] / cpu["literal"], 3),
                "wall_ratio_to_floor": round(wall[mode] / wall["floor"], 3),
                "wall_ratio_to_literal": round(wall[mode] / wall["literal"], 3),
                "peak_rss_mb": round(stats["peak_rss_mb"], 1),
                "rss_growth_mb": round(stats["rss_growth_mb"], 1),
                "cuda_peak_mb": None if stats["cuda_peak_mb"] is None else round(stats["cuda_peak_mb"], 1),
                "first_step_loss": round(stats["first_loss"], 6),
                "round_cpu_means_s": [round(x, 4) for x in stats["cpu_means"]],
                "round_wall_means_s": [round(x, 4) for x in stats["means"]],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from hf_privacy_backdoor.synthetic import get_or_build_synthetic

    torch.manual_seed(0)
    os.environ["SYNTHETIC_DIR"] = str(get_or_build_synthetic(progress=False).root)
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = [row for case in args.cases if case != B32_CASE for row in measure_case(case, args)]
    b32_rows = measure_b32(args) if B32_CASE in args.cases else []
    report = {
        "results": rows + b32_rows,
        "settings": vars(args),
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": machine_info(
            load_average_before=[round(x, 2) for x in load_before],
            load_average_after=[round(x, 2) for x in os.getloadavg()],
        ),
    }
    keys = ["case", "mode", "cpu_s_per_step", "s_per_step", "samples_per_s", "ratio_to_floor", "ratio_to_literal"]
    keys += ["wall_ratio_to_floor", "peak_rss_mb", "rss_growth_mb", "first_step_loss"]
    if rows:
        print_table_and_save(rows, keys, report, args.output)
    if b32_rows:
        b32_keys = ["case", "mode", "device", "cpu_s_per_step", "s_per_step", "samples_per_s", "trainable_params"]
        b32_keys += ["peak_rss_mb", "cuda_peak_mb", "ratio_to_student", "ratio_to_inputs_pil"]
        print_table_and_save(b32_rows, b32_keys, report, args.output)
    print(
        f"load average before {report['machine']['load_average_before']}, after {report['machine']['load_average_after']}"
    )
    return report


if __name__ == "__main__":
    main()
