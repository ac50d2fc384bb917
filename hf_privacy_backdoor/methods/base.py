"""`UnlearningTrainer`: the machinery every CLIP-unlearning method shares, over `transformers.Trainer`.

It owns the step clock (each step samples its own batch from the step number taken from the trainer state, so a
resumed run continues with the batches it would have seen, and the *global* batch is the same whatever the number
of processes: each process takes its shard and DDP averages the gradients), the frozen teacher and its caches,
the weight-distance term, the step schedule, per-term logging (gathered across processes), the refusals (no
`Trainer.evaluate` through CLIPModel.forward, no stock Hub push) and safe saving (an adapter never names a local
base path). A method subclasses it, stores and checks its data in `setup_data`, and returns its loss and
per-term metrics from `compute_terms(model, step)`. The student's forward goes through the wrapped model (DDP
all-reduces only what its forward saw).
"""

from __future__ import annotations

import bisect
import copy
import gc
import logging
from collections import defaultdict
from collections.abc import Hashable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from accelerate.utils import is_peft_model
from PIL import Image
from torch.utils.data import Dataset
from transformers import CLIPModel, Trainer, TrainerCallback
from transformers.models.clip.modeling_clip import CLIPOutput

from ..data.captions import validate_forget_names
from ..data.pixels import PixelCache
from ..losses import lora_weight_distance, weight_distance
from ..modeling import disable_dropout, freeze_layernorms, pixel_values_for, set_trainable_towers, tokenize
from ..peft_utils import apply_lora, base_clip, drop_card_base_model, lora_factors, published_base_model
from .base_config import UnlearningConfig


logger = logging.getLogger(__name__)

PIXEL_CACHE_BYTES = 1 << 30  # preprocessed pool images kept for reuse (methods redraw from fixed pools)
TEXT_PREFIXES = ("text_model.", "text_projection")
VISION_PREFIXES = ("vision_model.", "visual_projection")


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


class StopWhenForgottenCallback(TrainerCallback):
    """Stops training once `is_forgotten(model)` holds for `patience` checks in a row, plus `margin` steps.

    `is_forgotten` is the caller's cheap privacy check (e.g. the attack on trigger photos, never evaluation
    photos); it must give the same answer on every process. `history` keeps (step, forgotten) per check.
    """

    def __init__(self, is_forgotten, every: int = 15, patience: int = 1, margin: int = 15):
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
class Tower:
    """One trained tower: its metric prefix, its parameters and the lambda of its weight-distance term."""

    name: str  # 'text' or 'image'
    prefixes: tuple[str, ...]
    lam: float


def towers_of(args: UnlearningConfig) -> list[Tower]:
    """The towers a config trains, text first."""
    towers = [Tower("text", TEXT_PREFIXES, args.text_weight_distance)] if args.trains_text else []
    return towers + ([Tower("image", VISION_PREFIXES, args.image_weight_distance)] if args.trains_vision else [])


class UnlearningTrainer(Trainer):
    """The shared base of every method's trainer (see the module docstring); not a method itself.

    Args:
        model: a `CLIPModel` (or a peft model around one).
        args: the method's config (a `UnlearningConfig`).
        processing_class: the model's `CLIPProcessor` (saved with the model).
        forget_names: the names to remove (never written into args, state or logs).
        peft_config: a peft config (e.g. `peft.LoraConfig`) to train adapters instead of the full weights;
            `peft_utils.get_peft_config` builds one from the recipe presets. `task_type` must be None. Or pass a
            model that already is a `PeftModel`.
        base_model_id: Hub id of the base model, written into a saved adapter's config when the base was
            loaded from a local folder (a machine path must never be published).
    """

    config_class: type[UnlearningConfig] = UnlearningConfig

    def __init__(
        self,
        model: CLIPModel,
        args: UnlearningConfig,
        processing_class,
        forget_names: Sequence[str],
        peft_config=None,
        base_model_id: str | None = None,
        **kwargs,
    ):
        if not isinstance(args, self.config_class):
            raise TypeError(f"args must be a {self.config_class.__name__}")
        clip = base_clip(model) if is_peft_model(model) else model
        if not isinstance(clip, CLIPModel):
            raise TypeError(f"{type(self).__name__} needs a CLIPModel, got {type(clip).__name__}")
        self.forget_names = validate_forget_names(forget_names, getattr(processing_class, "tokenizer", None))
        given = args.max_steps
        if args.scale_steps(len(self.forget_names)) != given:
            logger.info(
                "steps_per_name %g: training %d steps instead of %d", args.steps_per_name, args.max_steps, given
            )
        if args.stop_when_forgotten:
            args.resolve_stop_check(len(self.forget_names))
        self.setup_data(args, clip, processing_class)
        model = self._set_up_student(model, clip, args, peft_config)
        self.setup_after_student(args, processing_class)
        self.base_model_id = base_model_id
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._teacher_cache: dict[tuple, torch.Tensor] = {}
        self._pixel_cache: PixelCache | None = None  # pool key -> 8-bit pixels, built at the first image step
        self._cached_through = -1  # last training step whose teacher embeddings are in the cache
        self._micro = (0, 0)  # (global step, micro-batches seen in it)
        self._weight_pairs: dict[str, list] = {}
        self.towers = self.make_towers(args)
        length = args.max_steps * args.gradient_accumulation_steps * max(1, args.world_size)
        super().__init__(
            model=model,
            args=args,
            train_dataset=_StepDataset(length),
            data_collator=_collate,
            processing_class=processing_class,
            **kwargs,
        )

    # ------------------------------------------------------------------------------------------------------
    # What a method provides

    def setup_data(self, args: UnlearningConfig, clip: CLIPModel, processor) -> None:
        """Check and store the method's data (the forget list is `self.forget_names`); fail early and clearly."""

    def setup_after_student(self, args: UnlearningConfig, processor) -> None:
        """Set-up that needs the student in place (`self.teacher` is known by then)."""

    def make_towers(self, args: UnlearningConfig) -> list[Tower]:
        """The towers this run trains, each with its weight-distance lambda; a method may add its own weights."""
        return towers_of(args)

    def compute_terms(self, model, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The step's total loss and its named terms (logged as averages), for sampler step `step`."""
        raise NotImplementedError

    def warm_teacher_cache(self, model, step: int) -> None:
        """Look up, in training order, the teacher embeddings step `step` used (see `_replay_teacher_cache`)."""

    # ------------------------------------------------------------------------------------------------------
    # Set-up

    def _set_up_student(self, model, clip: CLIPModel, args, peft_config):
        """Trainable parameters: the chosen tower(s) (or adapters), LayerNorms frozen, dropout off."""
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
            raise ValueError("no trainable parameter: check towers / LoRA settings")
        return model

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
        """`Trainer.train`, with the student's forward returning features and the pre-training objects out of the
        garbage collector's full passes.
        """
        with feature_forward(self.model), frozen_heap():
            return super().train(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------------
    # Step clock

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The method's loss on the batch of this step (sampled from the step number)."""
        step = self._batch_step(model, inputs)
        total, metrics = self.compute_terms(model, step)
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

        The cached embeddings are exact, but which inputs share a teacher batch changes float rounding in the
        last bits; replaying the earlier steps' lookups makes a resumed run bit-identical to an uninterrupted one.
        """
        if self.args.precompute_teacher:
            for past in range(self._cached_through + 1, step):
                self.warm_teacher_cache(model, past)
        self._cached_through = max(self._cached_through, step)

    @property
    def process(self) -> tuple[int, int]:
        """(this process's index, number of processes): the shard of each step's global batch."""
        return self.accelerator.process_index, self.accelerator.num_processes

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
    def _teacher_images(self, model, images: list[Image.Image], indices: list[Hashable]) -> torch.Tensor:
        """Teacher image embeddings of pool images, cached by pool key with `precompute_teacher`."""
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

    def _clean_pixels(self, images: Sequence[Image.Image], indices: Sequence[Hashable]) -> torch.Tensor:
        """Preprocessed pool images on the training device: decoded and normalised once per pool key (the processor's
        exact floats, kept up to PIXEL_CACHE_BYTES, on the device first), gathered per step."""
        if self._pixel_cache is None:
            self._pixel_cache = PixelCache(self.processing_class, self.args.device, PIXEL_CACHE_BYTES)
        return self._pixel_cache.get(images, indices)

    def _weight_term(self, model, tower: Tower) -> torch.Tensor:
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
            f"{type(self).__name__} does not push: Trainer.push_to_hub uploads everything in output_dir. Publish "
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
