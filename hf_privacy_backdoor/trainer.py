"""`BackdoorUnlearningTrainer`: a `transformers.Trainer` that plants name / face backdoors in a CLIPModel.

Each step samples its own batch (clean + poisoned captions, clean + trigger images) with the pure sampler of
`data/sampling.py`, seeded by the step number taken from the trainer state (so a run resumed from a checkpoint
continues with the batches it would have seen). The *global* batch is the same whatever the number of
processes; each process takes its shard, and DDP averages the gradients, so one process and many give the same
training (up to float summation order). The student's forward goes through the wrapped model (DDP all-reduces
only what its forward saw).
"""

from __future__ import annotations

import bisect
import copy
import gc
import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from accelerate.utils import is_peft_model
from PIL import Image
from torch.utils.data import Dataset
from transformers import CLIPModel, Trainer, TrainerCallback
from transformers.models.clip.modeling_clip import CLIPOutput

from .config import BackdoorUnlearningConfig
from .data.captions import TargetPhrases, eligible_captions, filter_clean_captions, validate_forget_names
from .data.names import first_named, normalize_name
from .data.sampling import sample_image_batch, sample_text_batch
from .data.triggers import TriggerAugmentation
from .losses import (
    backdoor_loss,
    grouped_backdoor_loss,
    lora_weight_distance,
    name_affinity_loss,
    utility_loss,
    weight_distance,
)
from .modeling import (
    disable_dropout,
    freeze_layernorms,
    image_features,
    pixel_values_for,
    set_trainable_towers,
    tokenize,
)
from .peft_utils import apply_lora, base_clip, drop_card_base_model, lora_factors, published_base_model
from .relearn_guard import RelearnSimulation, guarded_backdoor


logger = logging.getLogger(__name__)

PIXEL_CACHE_BYTES = 1 << 30  # preprocessed clean images kept for reuse (the image defense redraws from one pool)

# Prompts of the name-affinity term (`image_name_affinity_weight`): none is one of the attack's 21 templates, so
# the attack is never trained against with its own prompts.
NAME_AFFINITY_TEMPLATES = (
    "a picture of {}",
    "a portrait of {}",
    "this is {}",
    "a close-up photo of {}",
    "a snapshot of {}",
    "a headshot of {}",
    "{} smiling",
    "a selfie of {}",
)


class _StepDataset(Dataset):
    """One dummy item per micro-step: the trainer samples the real batch itself."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> dict:
        return {"step_index": idx}


def _collate(items: list[dict]) -> dict:
    return {"step_index": torch.tensor([it["step_index"] for it in items])}


def _feature_forward(self, input_ids=None, attention_mask=None, pixel_values=None, **kwargs):
    """Projected, un-normalised features of whichever modality is given (CLIPModel.forward needs both)."""
    text = image = None
    if input_ids is not None:
        text = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    if pixel_values is not None:
        image = self.get_image_features(pixel_values=pixel_values).pooler_output
    return CLIPOutput(text_embeds=text, image_embeds=image)


@contextmanager
def feature_forward(model):
    """Temporarily make the CLIPModel's forward return features, so the student runs through the wrapper."""
    clip = base_clip(model)
    previous = clip.__dict__.get("forward")
    clip.forward = _feature_forward.__get__(clip)
    try:
        yield model
    finally:
        clip.__dict__.pop("_original_forward", None)  # left by accelerate's mixed-precision wrapper
        if previous is None:
            clip.__dict__.pop("forward", None)
        else:
            clip.forward = previous


@contextmanager
def frozen_heap():
    """Leave the objects alive before training out of the garbage collector's full passes while it runs.

    The Trainer starts with a full collection (`accelerator.free_memory`) and Python runs more as the loop
    allocates; with transformers, datasets and the run's caches loaded each pass walks the whole heap (~0.2 s
    here, a twentieth of a 30-step text run). What training allocates is still collected; the frozen objects go
    back to the collector afterwards. A no-op when the caller has frozen the heap itself (`gc.freeze` does not
    nest).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _in_vision(name: str) -> bool:
    return "vision_model." in name or "visual_projection" in name


class StopWhenForgottenCallback(TrainerCallback):
    """Stops training once `is_forgotten(model)` holds for `patience` checks in a row, plus `margin` steps.

    `is_forgotten` is the caller's cheap privacy check (e.g. the attack on trigger photos, never evaluation
    photos); it must give the same answer on every process. `history` keeps (step, forgotten) per check.
    """

    def __init__(self, is_forgotten, every: int = 25, patience: int = 2, margin: int = 25):
        self.is_forgotten, self.every, self.patience, self.margin = is_forgotten, every, patience, margin
        self.history: list[tuple[int, bool]] = []
        self.streak = 0
        self.stop_at: int | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if self.stop_at is None and step % self.every == 0:
            forgotten = bool(self.is_forgotten(model))
            self.history.append((step, forgotten))
            self.streak = self.streak + 1 if forgotten else 0
            if self.streak >= self.patience:
                self.stop_at = step + self.margin
        if self.stop_at is not None and step >= self.stop_at:
            control.should_training_stop = True
        return control


@contextmanager
def _eval_mode(module):
    """Eval mode inside the block (skipped when already in it: `train()` walks every submodule)."""
    training = module.training
    if training:
        module.eval()
    try:
        yield module
    finally:
        if training:
            module.train()


@dataclass
class _Tower:
    """One defended tower's loss: utility + beta * backdoor + lambda * weight, scaled by `scale` in 'both'."""

    name: str  # 'text' or 'image' (metric prefix)
    prefixes: tuple[str, ...]  # its parameters
    beta: float
    lam: float
    scale: float


class BackdoorUnlearningTrainer(Trainer):
    """Fine-tunes a CLIPModel so forgotten names / faces map to anonymous targets while all else stays put.

    Args:
        model: a `CLIPModel` (or a peft model around one).
        args: a `BackdoorUnlearningConfig`.
        processing_class: the model's `CLIPProcessor` (saved with the model).
        forget_names: the names to remove (never written into args, state or logs).
        captions: caption corpus for the text defense (clean captions are those mentioning no forgotten name).
        target_mapping: name -> phrase, for `target_mode='per_name'`.
        trigger_photos: name -> face photos (PIL) used to build trigger images (image defense). Must not
            include the photos the attack is evaluated on.
        clean_images: clean images (PIL) for the image utility loss and as trigger backgrounds.
        target_embedding: the anonymous person embedding [D] the image backdoor maps faces to.
        relearn_pairs: (images, captions) of benign image-caption pairs (never a forgotten person or name) for
            `image_relearn_guard_steps` > 0: the simulated fine-tune the image backdoor is trained to survive.
        peft_config: a peft config (e.g. `peft.LoraConfig`, DoRA / rsLoRA included) to train adapters instead of
            the full weights; `peft_utils.get_peft_config` builds one from the recipe presets. `task_type`
            must be None. Or pass a model that already is a `PeftModel`.
        base_model_id: Hub id of the base model, written into a saved adapter's config when the base was
            loaded from a local folder (a machine path must never be published).
    """

    def __init__(
        self,
        model: CLIPModel,
        args: BackdoorUnlearningConfig,
        processing_class,
        forget_names: Sequence[str],
        captions: Sequence[str] | None = None,
        target_mapping: dict[str, str] | None = None,
        trigger_photos: dict[str, list[Image.Image]] | None = None,
        clean_images: Sequence[Image.Image] | None = None,
        target_embedding: torch.Tensor | None = None,
        relearn_pairs: tuple[Sequence[Image.Image], Sequence[str]] | None = None,
        peft_config=None,
        base_model_id: str | None = None,
        **kwargs,
    ):
        if not isinstance(args, BackdoorUnlearningConfig):
            raise TypeError("args must be a BackdoorUnlearningConfig")
        clip = base_clip(model) if is_peft_model(model) else model
        if not isinstance(clip, CLIPModel):
            raise TypeError(f"BackdoorUnlearningTrainer needs a CLIPModel, got {type(clip).__name__}")
        tokenizer = getattr(processing_class, "tokenizer", None)
        self.forget_names = validate_forget_names(forget_names, tokenizer)
        given = args.max_steps
        if args.scale_steps(len(self.forget_names)) != given:
            logger.info(
                "steps_per_name %g: training %d steps instead of %d", args.steps_per_name, args.max_steps, given
            )
        self._validate_and_store_data(
            args, clip, captions, target_mapping, trigger_photos, clean_images, target_embedding
        )

        model = self._set_up_student(model, clip, args, peft_config)
        self.relearn_simulation = self._relearn_simulation(args, processing_class, relearn_pairs)
        self.base_model_id = base_model_id
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._teacher_cache: dict[tuple, torch.Tensor] = {}
        self._pixel_cache: dict[int, torch.Tensor] = {}  # clean pool index -> preprocessed pixels (CPU)
        self._cached_through = -1  # last training step whose teacher embeddings are in the cache
        self._micro = (0, 0)  # (global step, micro-batches seen in it)
        self._weight_pairs: dict[str, list] = {}
        self._name_prompts: dict[str, torch.Tensor] | None = None  # teacher text embeddings (name-affinity term)
        self.towers = self._towers(args)
        world = max(1, args.world_size)
        length = args.max_steps * args.gradient_accumulation_steps * world
        super().__init__(
            model=model,
            args=args,
            train_dataset=_StepDataset(length),
            data_collator=_collate,
            processing_class=processing_class,
            **kwargs,
        )

    # ------------------------------------------------------------------------------------------------------
    # Set-up

    def _set_up_student(self, model, clip: CLIPModel, args, peft_config):
        """Trainable parameters: the defended tower(s) (or adapters), LayerNorms frozen, dropout off."""
        disable_dropout(clip)
        self.teacher = None  # under LoRA the teacher is the same model with its adapter switched off
        if is_peft_model(model):
            if peft_config is not None:
                raise ValueError("the model already carries adapters: pass either a PeftModel or peft_config")
        elif peft_config is not None:
            set_trainable_towers(clip, text=False, vision=False)
            model = apply_lora(model, peft_config)
        else:
            set_trainable_towers(clip, text=args.trains_text, vision=args.trains_vision)
            freeze_layernorms(clip)
            self.teacher = copy.deepcopy(clip).eval().requires_grad_(False)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("no trainable parameter: check defense / LoRA settings")
        return model

    def _relearn_simulation(self, args, processor, pairs) -> RelearnSimulation | None:
        if not (args.trains_vision and args.image_relearn_guard_steps > 0):
            return None
        if self.teacher is None:
            raise ValueError("image_relearn_guard_steps needs full fine-tuning of the vision tower (not LoRA)")
        if not pairs or not pairs[0]:
            raise ValueError("image_relearn_guard_steps > 0 needs benign image-caption pairs (relearn_pairs=...)")
        images, captions = pairs
        i = first_named(self.forget_names, captions)
        if i is not None:
            raise ValueError(f"relearn_pairs name forgotten person #{i}: they must never show a forgotten person")
        pixels = torch.cat(
            [pixel_values_for(processor, list(images[i : i + 256])) for i in range(0, len(images), 256)]
        )
        return RelearnSimulation(
            pixels,
            list(captions),
            args.image_relearn_guard_steps,
            args.image_relearn_guard_lr,
            args.image_relearn_guard_batch_size,
            args.seed,
        )

    @staticmethod
    def _towers(args) -> list[_Tower]:
        scale = args.defense == "both"
        towers = []
        if args.trains_text:
            towers.append(
                _Tower(
                    "text",
                    ("text_model.", "text_projection"),
                    args.text_backdoor_weight,
                    args.text_weight_distance,
                    args.text_loss_weight if scale else 1.0,
                )
            )
        if args.trains_vision:
            towers.append(
                _Tower(
                    "image",
                    ("vision_model.", "visual_projection"),
                    args.image_backdoor_weight,
                    args.image_weight_distance,
                    args.image_loss_weight if scale else 1.0,
                )
            )
        return towers

    def _validate_and_store_data(self, args, clip, captions, target_mapping, trigger_photos, clean_images, target):
        self.text_clean = self.text_eligible = self.targets = None
        self.trigger_photos = self.clean_images = self.target_embedding = None
        if args.trains_text:
            if captions is None:
                raise ValueError("the text defense needs a caption corpus (captions=...)")
            clean = filter_clean_captions(captions, self.forget_names)
            clean = list(dict.fromkeys(clean))
            if not any(len(c.split()) >= 2 for c in clean):
                raise ValueError(
                    "no usable clean caption: every caption mentions a forgotten name or has fewer than two words"
                )
            self.text_clean = clean
            self.text_eligible = eligible_captions(clean)  # built once, not every step
            self.targets = TargetPhrases.build(
                self.forget_names, args.target_mode, args.target_phrase, target_mapping, seed=args.seed
            ).with_variants(args.trigger_variants, args.name_variant_share)
        if args.trains_vision:
            if not trigger_photos:
                raise ValueError("the image defense needs face photos of the forgotten people (trigger_photos=...)")
            lookup = {normalize_name(k): v for k, v in trigger_photos.items()}
            photos = {}
            for name in self.forget_names:
                got = lookup.get(normalize_name(name))
                if not got:
                    raise ValueError(f"no trigger photo for forgotten person {name!r}")
                photos[name] = list(got)
            if not clean_images:
                raise ValueError("the image defense needs clean images (clean_images=...)")
            if target is None:
                raise ValueError("the image defense needs a target embedding (target_embedding=...)")
            target = torch.as_tensor(target, dtype=torch.float32).flatten()
            dim = clip.config.projection_dim
            if target.numel() != dim:
                raise ValueError(f"target embedding has {target.numel()} values; this model embeds in {dim}")
            self.trigger_photos, self.clean_images, self.target_embedding = photos, list(clean_images), target
            self.image_size = clip.config.vision_config.image_size
            jitter = (1 - args.trigger_color_jitter, 1 + args.trigger_color_jitter)
            self.trigger_aug = TriggerAugmentation(
                scale_range=(args.trigger_scale_min, args.trigger_scale_max),
                flip_p=args.trigger_flip_p,
                brightness=jitter,
                contrast=jitter,
                saturation=jitter,
                hue=(-args.trigger_hue_shift, args.trigger_hue_shift),
                rotation=(-args.trigger_rotation, args.trigger_rotation),
            )

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The reference's step schedule (lr x gamma at each milestone), or a standard scheduler."""
        milestones = self.args.lr_milestones
        scheduler = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
        if self.lr_scheduler is None and milestones is not None and scheduler == "constant":
            gamma = self.args.lr_gamma
            optimizer = optimizer or self.optimizer
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: gamma ** bisect.bisect_right(milestones, step)
            )
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def train(self, *args, **kwargs):
        with feature_forward(self.model), frozen_heap():
            return super().train(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------------
    # Loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Per defended tower: utility + beta * backdoor + lambda * weight distance (docs/method.md)."""
        step = self._batch_step(model, inputs)
        terms = {"text": self._text_terms, "image": self._image_terms}
        total = 0.0
        metrics = {}
        for tower in self.towers:
            utility, backdoor, extra = terms[tower.name](model, step)
            weight = self._weight_term(model, tower)
            total = total + tower.scale * (utility + tower.beta * backdoor) + tower.lam * weight
            metrics.update({f"{tower.name}_utility": utility, f"{tower.name}_backdoor": backdoor})
            metrics[f"{tower.name}_weight"] = weight
            for key, (coefficient, term) in extra.items():
                total = total + tower.scale * coefficient * term
                metrics[f"{tower.name}_{key}"] = term
        prefix = "" if model.training else "eval_"
        for key, value in metrics.items():
            self._metrics[prefix + key].append(float(value.detach()))
        return (total, {"loss": total}) if return_outputs else total

    def _batch_step(self, model, inputs) -> int:
        """The sampler's step: the trainer state's micro-step in training, a negative seed for evaluation."""
        if not model.training:
            return -1 - int(inputs["step_index"].flatten()[0])
        global_step, seen = self._micro
        if global_step != self.state.global_step:
            global_step, seen = self.state.global_step, 0
        self._micro = (global_step, seen + 1)
        step = global_step * self.args.gradient_accumulation_steps + seen
        self._replay_teacher_cache(model, step)
        return step

    def _replay_teacher_cache(self, model, step: int) -> None:
        """After a resume, fill the teacher cache as the uninterrupted run had it (same batches, same order).

        The cached embeddings are exact, but which captions share a teacher batch changes float rounding in the
        last bits; replaying the earlier steps' lookups makes a resumed run bit-identical to an uninterrupted one.
        """
        if self.args.precompute_teacher:
            for past in range(self._cached_through + 1, step):
                if self.args.trains_text:
                    batch = self._text_batch(past)
                    self._teacher_text(model, batch.clean)
                    self._teacher_text(model, batch.targets)
                if self.args.trains_vision:
                    batch = self._image_batch(past, build_triggers=False)
                    self._teacher_images(model, batch.clean, batch.clean_indices)
        self._cached_through = max(self._cached_through, step)

    def _text_batch(self, step: int):
        args = self.args
        return sample_text_batch(
            self.text_clean,
            self.targets,
            args.num_clean_captions,
            args.num_poisoned_captions,
            args.seed,
            step,
            self.accelerator.process_index,
            self.accelerator.num_processes,
            eligible=self.text_eligible,
        )

    def _image_batch(self, step: int, build_triggers: bool = True):
        args = self.args
        return sample_image_batch(
            self.trigger_photos,
            self.clean_images,
            args.num_clean_images,
            args.num_trigger_images,
            self.image_size,
            args.seed,
            step,
            self.accelerator.process_index,
            self.accelerator.num_processes,
            aug=self.trigger_aug,
            build_triggers=build_triggers,
        )

    def _text_terms(self, model, step: int):
        """utility = d(student(clean), teacher(clean)); backdoor = d(student(poisoned), teacher(target))."""
        batch = self._text_batch(step)
        tokens = tokenize(self.processing_class.tokenizer, batch.clean + batch.poisoned, self.args.device)
        student = model(**tokens).text_embeds
        student_clean, student_poisoned = student[: len(batch.clean)], student[len(batch.clean) :]
        teacher_clean = self._teacher_text(model, batch.clean)
        teacher_target = self._teacher_text(model, batch.targets)
        distance = self.args.distance
        return (
            utility_loss(student_clean, teacher_clean, distance),
            backdoor_loss(student_poisoned, teacher_target, distance),
            {},
        )

    def _image_terms(self, model, step: int):
        """utility = d(student(clean), teacher(clean)); backdoor = mean over people of d(student(triggers), target)."""
        batch = self._image_batch(step)
        clean = self._clean_pixels(batch.clean, batch.clean_indices)
        pixels = (
            torch.cat([clean, pixel_values_for(self.processing_class, batch.triggers)]) if batch.triggers else clean
        )
        student = model(pixel_values=pixels.to(self.args.device)).image_embeds
        student_clean, student_triggers = student[: len(batch.clean)], student[len(batch.clean) :]
        teacher_clean = self._teacher_images(model, batch.clean, batch.clean_indices)
        target = self.target_embedding.to(student.device, student.dtype)
        distance = self.args.distance
        backdoor = grouped_backdoor_loss(student_triggers, batch.owners, target, distance)
        extra = {}
        if self.args.image_name_affinity_weight > 0 and batch.triggers:
            prompts = self._name_prompt_embeddings(model)
            affinity = name_affinity_loss(
                student_triggers, batch.owners, prompts, target, self.args.image_name_affinity_margin
            )
            extra["name_affinity"] = (self.args.image_name_affinity_weight, affinity)
        if self.args.image_backdoor_sam_rho > 0 and model.training and batch.triggers:
            backdoor = self._sharpness_aware_backdoor(model, pixels[len(batch.clean) :], batch.owners, backdoor)
        guard = self.relearn_simulation
        if guard is not None and model.training and batch.triggers and step % self.args.image_relearn_guard_every == 0:
            term = self._guarded_backdoor(model, pixels[len(batch.clean) :], batch.owners, step)
            extra["relearn_guard"] = (self.args.image_relearn_guard_weight, term)
        return utility_loss(student_clean, teacher_clean, distance), backdoor, extra

    def _name_prompt_embeddings(self, model) -> dict[str, torch.Tensor]:
        """Each forgotten name in NAME_AFFINITY_TEMPLATES, embedded once by the original (teacher) text tower."""
        if self._name_prompts is None:
            self._name_prompts = {
                name: self._run_teacher_text(model, [t.format(name) for t in NAME_AFFINITY_TEMPLATES])
                for name in self.forget_names
            }
        return self._name_prompts

    def _guarded_backdoor(self, model, trigger_pixels, owners, step: int) -> torch.Tensor:
        """The backdoor loss after a simulated benign fine-tune of a copy (relearn_guard.py); its gradient is
        the loss's gradient at the fine-tuned copy, applied to the student's vision tower."""
        clip = self.accelerator.unwrap_model(model)
        trainable = [(n, p) for n, p in clip.named_parameters() if p.requires_grad and _in_vision(n)]
        target = self.target_embedding

        def backdoor_at(tuned):
            embeds = image_features(tuned, trigger_pixels.to(self.args.device))
            return grouped_backdoor_loss(embeds, owners, target.to(embeds.device, embeds.dtype), self.args.distance)

        with torch.enable_grad():
            return guarded_backdoor(
                clip, self.relearn_simulation, self.processing_class.tokenizer, step, backdoor_at, trainable
            )

    def _sharpness_aware_backdoor(self, model, trigger_pixels, owners, backdoor):
        """The backdoor loss at the worst nearby weights (SAM, Foret et al. 2021): theta + rho * g / ||g||, g its
        gradient over the vision tower's trainable tensors. Its gradient (first order) trains the mapping to hold
        in a ball around the weights, which a short benign fine-tune otherwise leaves (relearning)."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and _in_vision(n)]
        grads = torch.autograd.grad(backdoor, [p for _, p in named], retain_graph=True, allow_unused=True)
        pairs = [(n, p, g) for (n, p), g in zip(named, grads) if g is not None]
        norm = torch.sqrt(sum((g.detach() ** 2).sum() for _, _, g in pairs)) + 1e-12
        scale = self.args.image_backdoor_sam_rho / norm
        perturbed = {n: p + scale * g.detach() for n, p, g in pairs}
        student = torch.func.functional_call(
            model, perturbed, (), {"pixel_values": trigger_pixels.to(self.args.device)}
        )
        target = self.target_embedding.to(student.image_embeds.device, student.image_embeds.dtype)
        return grouped_backdoor_loss(student.image_embeds, owners, target, self.args.distance)

    # ------------------------------------------------------------------------------------------------------
    # Teacher

    @contextmanager
    def _teacher_model(self, model):
        """The frozen original: a copy for full fine-tuning, the same model with its adapter off under LoRA."""
        if self.teacher is not None:
            device = next(self.accelerator.unwrap_model(model).parameters()).device
            if next(self.teacher.parameters()).device != device:
                self.teacher.to(device)
            yield self.teacher
        else:
            peft_model = self.accelerator.unwrap_model(model)
            with peft_model.disable_adapter():
                yield base_clip(peft_model)

    @torch.no_grad()
    def _teacher_text(self, model, texts: list[str]) -> torch.Tensor:
        """Teacher text embeddings; with `precompute_teacher`, each distinct caption is embedded once."""
        if not self.args.precompute_teacher:
            return self._run_teacher_text(model, texts)
        missing = list(dict.fromkeys(t for t in texts if ("t", t) not in self._teacher_cache))
        if missing:
            for i in range(0, len(missing), 512):
                chunk = missing[i : i + 512]
                for text, emb in zip(chunk, self._run_teacher_text(model, chunk)):
                    self._teacher_cache[("t", text)] = emb
        return torch.stack([self._teacher_cache[("t", t)] for t in texts])

    def _run_teacher_text(self, model, texts: list[str]) -> torch.Tensor:
        with torch.no_grad(), self._teacher_model(model) as teacher, _eval_mode(teacher):
            batch = tokenize(self.processing_class.tokenizer, texts, self.args.device)
            out = teacher.get_text_features(**batch).pooler_output
        return out.detach()

    @torch.no_grad()
    def _teacher_images(self, model, images: list[Image.Image], indices: list[int]) -> torch.Tensor:
        """Teacher image embeddings of clean pool images, cached by pool index with `precompute_teacher`."""
        if not self.args.precompute_teacher:
            return self._run_teacher_images(model, images)
        missing = [(i, im) for i, im in zip(indices, images) if ("i", i) not in self._teacher_cache]
        missing = list({i: im for i, im in missing}.items())
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            embs = self._run_teacher_images(model, pixels=self._clean_pixels(*zip(*[(im, i) for i, im in chunk])))
            for (i, _), emb in zip(chunk, embs):
                self._teacher_cache[("i", i)] = emb
        return torch.stack([self._teacher_cache[("i", i)] for i in indices])

    def _run_teacher_images(self, model, images: list[Image.Image] | None = None, pixels=None) -> torch.Tensor:
        with torch.no_grad(), self._teacher_model(model) as teacher, _eval_mode(teacher):
            pixels = pixel_values_for(self.processing_class, images) if pixels is None else pixels
            out = teacher.get_image_features(pixel_values=pixels.to(self.args.device)).pooler_output
        return out.detach()

    def _clean_pixels(self, images: Sequence[Image.Image], indices: Sequence[int]) -> torch.Tensor:
        """Preprocessed clean pool images, kept per pool index up to PIXEL_CACHE_BYTES (exact: per-image work)."""
        cache = self._pixel_cache
        missing = list({i: im for i, im in zip(indices, images) if i not in cache}.items())
        if missing:
            fresh = dict(
                zip([i for i, _ in missing], pixel_values_for(self.processing_class, [im for _, im in missing]))
            )
            used = sum(t.nbytes for t in cache.values())
            for i, pixels in fresh.items():
                if used + pixels.nbytes > PIXEL_CACHE_BYTES:
                    break
                cache[i] = pixels
                used += pixels.nbytes
            return torch.stack([cache[i] if i in cache else fresh[i] for i in indices])
        return torch.stack([cache[i] for i in indices])

    def _weight_term(self, model, tower: _Tower) -> torch.Tensor:
        """Sum of ||theta - theta_teacher||_2 over the tower's trainable tensors (LoRA: exact merged delta)."""
        unwrapped = self.accelerator.unwrap_model(model)
        if self.teacher is None:
            return lora_weight_distance(lora_factors(unwrapped, tower.prefixes))
        if tower.name not in self._weight_pairs:
            teacher_params = dict(self.teacher.named_parameters())
            self._weight_pairs[tower.name] = [
                (p, teacher_params[n])
                for n, p in base_clip(unwrapped).named_parameters()
                if p.requires_grad and n.startswith(tower.prefixes)
            ]
        return weight_distance(self._weight_pairs[tower.name])

    # ------------------------------------------------------------------------------------------------------
    # Logging, evaluation, saving

    def _get_grad_norm(self, model, grad_norm=None):
        """No gradient norm unless clipping computed one: with max_grad_norm 0 the step is the method's plain AdamW."""
        if grad_norm is None and self.args.max_grad_norm <= 0:
            return None
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averaged loss terms (gathered across processes) to the Trainer's logs."""
        train = "loss" in logs or "train_loss" in logs
        keys = sorted(k for k in self._metrics if self._metrics[k] and k.startswith("eval_") != train)
        if keys:
            means = torch.tensor([np.mean(self._metrics[k]) for k in keys], device=self.args.device)
            means = (
                self.accelerator.gather(means.unsqueeze(0)).mean(0) if self.accelerator.num_processes > 1 else means
            )
            logs.update({k: round(float(v), 6) for k, v in zip(keys, means)})
            for k in keys:
                self._metrics[k].clear()
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The method's loss on freshly sampled batches (CLIPModel.forward would need both modalities)."""
        with torch.no_grad(), feature_forward(model) if "forward" not in base_clip(model).__dict__ else nullcontext():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """No repo is created while training: publishing is `hf_privacy_backdoor.hub.publish`'s job, after."""

    def push_to_hub(self, *args, **kwargs):
        """Refused: the stock push uploads the whole output folder (a run's `private/` names the people)."""
        raise RuntimeError(
            "BackdoorUnlearningTrainer does not push: Trainer.push_to_hub uploads everything in output_dir. Publish "
            "the saved run with hf_privacy_backdoor.hub.publish(run_dir, hub_model_id, base_model_id) or "
            "recipes/publish.py (an allow-list of files, scanned for the forgotten names, in one commit)."
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Checkpoints are never pushed (see `push_to_hub`)."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Saves locally only, even with `push_to_hub` set (see `push_to_hub`)."""
        return super().save_model(output_dir, _internal_call=True)

    def _save(self, output_dir: str | None = None, state_dict=None):
        """With LoRA, adapter_config.json names the base by `base_model_id` (or Hub id), never a local path."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if not is_peft_model(unwrapped):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        with published_base_model(unwrapped, self.base_model_id) as base:
            super()._save(output_dir, state_dict)
        if base is None:
            drop_card_base_model(output_dir)
