"""Distributed helpers (the bottom floor): the process group, batch work shared between processes, replica checks.

Every stage may import this module; it imports nothing of the package. accelerate is the engine: this only
forms its state and splits / gathers work.

The unit of batch work is a *global* batch `[start, end)`: its boundaries do not depend on the number of
processes, so every batch is computed exactly as in a single-process run and the gathered result is
identical to it (no duplicated or dropped items, no padding).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Union

import torch
from tqdm.auto import tqdm


if TYPE_CHECKING:
    from accelerate import Accelerator, PartialState

DistributedState = Union["Accelerator", "PartialState"]  # anything with num_processes / process_index / ...


def batch_ranges(num_items: int, batch_size: int) -> list[tuple[int, int]]:
    """The global batches `[start, end)` covering `num_items` items."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [(s, min(s + batch_size, num_items)) for s in range(0, num_items, batch_size)]


# Variables in which torchrun (accelerate's multi-process launchers) and MPI tell each process the group size.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

HOW_TO_LAUNCH = (
    "To run N processes, launch with `accelerate launch --config_file recipes/accelerate_configs/multi_cpu.yaml "
    "SCRIPT ...` (two CPU processes), `accelerate launch --multi_gpu --num_processes N SCRIPT ...` (gloo when "
    "there is no GPU) or `torchrun --nproc_per_node N SCRIPT ...`. `accelerate launch --cpu`, "
    "`--num_processes N` without `--multi_gpu`, and configs with `distributed_type: MULTI_CPU` (without mpirun) "
    "start a single process."
)


def distributed_state():
    """The process group when launched with accelerate / torchrun (None for one process).

    Without a GPU, accelerate only forms a (gloo) group when told to use the CPU, hence `cpu=True` there.
    Raises ValueError when the launch asked for more processes than joined the group (see `check_launch`).
    """
    from accelerate import PartialState

    environ = dict(os.environ)  # as the launcher left it: accelerate rewrites some of these variables
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "accelerator") and torch.accelerator.is_available())
    state = PartialState(cpu=not has_gpu)
    check_launch(state.num_processes, environ)
    return state if state.num_processes > 1 else None


def check_launch(num_processes: int, environ: Mapping[str, str] | None = None) -> None:
    """Fail loudly when a run that was asked for several processes got fewer.

    Two ways this happens, both silent in accelerate 1.x: a launcher exports a group size (`WORLD_SIZE`, ...)
    that the process group does not reach; or accelerate's single-process launcher, which exports
    `ACCELERATE_USE_CPU` always and `MASTER_ADDR` only when asked for more than one process, starts just one.
    """
    environ = os.environ if environ is None else environ
    for name in WORLD_SIZE_VARIABLES:
        requested = int(environ.get(name) or 0)
        if requested > num_processes:
            raise ValueError(
                f"launched as one of {requested} processes ({name}={requested}), but the process group has "
                f"{num_processes}. {HOW_TO_LAUNCH}"
            )
    launched_alone = not any(environ.get(name) for name in WORLD_SIZE_VARIABLES)
    if num_processes == 1 and launched_alone and "ACCELERATE_USE_CPU" in environ and "MASTER_ADDR" in environ:
        raise ValueError(
            "`accelerate launch` was asked for several processes but started only this one (its single-process "
            f"launcher exported MASTER_ADDR={environ['MASTER_ADDR']} for a group it never started). "
            f"{HOW_TO_LAUNCH} For one process, do not ask for more (and unset MASTER_ADDR if you exported it)."
        )


def is_main_process(accelerator: DistributedState | None) -> bool:
    return accelerator is None or accelerator.is_main_process


def map_batches(
    fn: Callable[[int, int], torch.Tensor],
    num_items: int,
    batch_size: int,
    accelerator: DistributedState | None = None,
    desc: str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Concatenate `fn(start, end)` (CPU tensors, one row per item) over all global batches, in order.

    With a multi-process `accelerator`, each process computes a contiguous block of batches and the blocks
    are gathered with `gather_object`; every process gets the full result.
    """
    ranges = batch_ranges(num_items, batch_size)
    world = 1 if accelerator is None else accelerator.num_processes
    rank = 0 if accelerator is None else accelerator.process_index
    per_process = -(-len(ranges) // world) if ranges else 0
    mine = ranges[rank * per_process : (rank + 1) * per_process]
    show = progress and is_main_process(accelerator)
    pieces = [(start, fn(start, end).cpu()) for start, end in tqdm(mine, desc=desc, disable=not show, leave=False)]
    if world > 1:
        from accelerate.utils import gather_object

        pieces = gather_object(pieces)
    pieces = sorted(pieces, key=lambda item: item[0])
    if [start for start, _ in pieces] != [start for start, _ in ranges]:
        raise RuntimeError("gathered batches do not cover the work exactly once; this is a bug, please report it")
    if not pieces:
        raise ValueError("nothing to compute: zero items")
    return torch.cat([tensor for _, tensor in pieces])


@torch.no_grad()
def check_replicas(model, state) -> list[str]:
    """Checksums of the trainable weights on every process; raises if the replicas diverged.

    Under DDP every replica must end with the same weights: a forward that bypasses the wrapper (and so the
    gradient all-reduce) runs without error but lets them drift apart.
    """
    import hashlib

    params = [p.detach().float().cpu().numpy().tobytes() for p in model.parameters() if p.requires_grad]
    digest = hashlib.sha256(b"".join(params)).hexdigest()[:16]
    if state is None:
        return [digest]
    from accelerate.utils import gather_object

    digests = gather_object([digest])
    if len(set(digests)) != 1:
        raise RuntimeError(f"replicas diverged after training: weight checksums per process {digests}")
    return digests
