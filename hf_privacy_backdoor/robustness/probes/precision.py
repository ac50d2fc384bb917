"""Precision: the attack on fp16 / bf16 casts and on int8 dynamic quantisation of the linear layers."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from transformers import CLIPModel

from ..context import ProbeContext, Subject, attack, attack_stats
from ..formatting import pair
from ..registry import Probe, Row


def cast_model(model: CLIPModel, precision: str, mode: str = "auto") -> tuple[torch.nn.Module, str]:
    """A copy of `model` as a user would run it in `precision`; returns it with the mode used."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    model = copy.deepcopy(model).eval()
    if precision == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice (moving to torchao)
            return torch.ao.quantization.quantize_dynamic(model.cpu(), {torch.nn.Linear}, dtype=torch.qint8), "int8"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    mode = ("native" if on_gpu else "weights") if mode == "auto" else mode
    if mode == "native":
        return model.to(dtype), mode
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype).to(tensor.dtype))
    return model, mode


def probe_precision(ctx: ProbeContext, subject: Subject) -> dict:
    """The attack on fp16 / bf16 / int8 versions of the model: removed and kept TPR each."""
    out = {}
    for precision in ctx.config.precisions:
        start = time.time()
        try:
            model, mode = cast_model(subject.model, precision, ctx.config.precision_mode)
            stats = attack_stats(ctx, attack(ctx, model, subject.processor))
        except (RuntimeError, NotImplementedError) as err:  # a cast this torch build cannot run
            out[precision] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            continue
        out[precision] = {"mode": mode, "seconds": round(time.time() - start, 1), **stats}
    return out


def precision_rows(first: Mapping[str, Any]) -> list[Row]:
    """Table rows of the precision probe: one per cast in `first` (the first role's results)."""
    return [
        (f"precision: {p}", "removed TPR / kept TPR", lambda r, p=p: _precision_cell(r["precision"][p])) for p in first
    ]


def _precision_cell(p: Mapping[str, Any]) -> str:
    return "error" if "error" in p else pair(p, "removed_tpr", "kept_tpr")


PROBE = Probe("precision", probe_precision, settings=("precisions", "precision_mode"), rows=precision_rows)
