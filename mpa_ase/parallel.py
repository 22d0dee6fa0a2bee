"""torch.distributed for the training loops: launched by ``torchrun`` (or srun
with the same environment), gloo on CPU, NCCL on GPU.

Every rank sees the same global minibatch plan (a function of seed and
epoch), computes the loss of its share of each minibatch divided by the
size of the whole minibatch, and the gradients are summed across ranks, so
each step follows the gradient of the whole minibatch, as one process
would. The gradients are reduced by hand, not by ``DistributedDataParallel``:
force and stress losses take a second derivative through the model, which
DDP's hooks do not support, and heads that a minibatch does not touch must
keep ``grad=None`` on every rank (AdamW then leaves them alone, as in one
process). Rank 0 writes every file; decisions (early stopping) are rank 0's,
broadcast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_world() -> tuple[int, int]:
    if is_distributed():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


@contextlib.contextmanager
def session(device: str | torch.device | None = None) -> Iterator[tuple[int, int]]:
    """Join the process group that ``torchrun`` describes in the environment
    (``WORLD_SIZE`` > 1), for the duration of the block; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_distributed():
        yield rank_world()
        return
    cuda = torch.device(device or "cpu").type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield rank_world()
    finally:
        torch.distributed.destroy_process_group()


def share(items: Sequence, rank: int | None = None, world: int | None = None) -> list:
    """This rank's part of ``items`` (every world-th item from its rank)."""
    if rank is None or world is None:
        rank, world = rank_world()
    return list(items[rank::world])


def balanced_share(items: Sequence, costs: Sequence[float], rank: int | None = None,
                   world: int | None = None) -> list:
    """This rank's part of ``items`` when the parts balance ``costs`` (largest
    first, each to the least loaded rank; the same answer on every rank)."""
    if rank is None or world is None:
        rank, world = rank_world()
    if world == 1:
        return list(items)
    load = [0.0] * world
    mine = []
    for k in sorted(range(len(items)), key=lambda k: (-costs[k], k)):
        r = min(range(world), key=lambda q: (load[q], q))
        load[r] += costs[k]
        if r == rank:
            mine.append(k)
    return [items[k] for k in sorted(mine)]


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj) -> list:
    if not is_distributed():
        return [obj]
    out = [None] * rank_world()[1]
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Elementwise sums over ranks (float64)."""
    t = torch.tensor(list(values), dtype=torch.float64)
    if is_distributed():
        torch.distributed.all_reduce(t)
    return t.tolist()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (as DDP does at start)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            torch.distributed.broadcast(t.data, src=0)


def sum_gradients(params: Sequence[torch.nn.Parameter], loss: float) -> float:
    """Sum the gradients of ``params`` (and the loss value) over ranks.

    A parameter without a gradient on every rank keeps ``grad=None``; one with
    a gradient on some rank gets the sum (zeros standing in where absent).
    Returns the summed loss. One collective call per step.
    """
    if not is_distributed():
        return loss
    ref = next(iter(params))
    sizes = [p.numel() for p in params]
    # in the parameters' own precision: half the traffic of float64 for float32 models
    flat = torch.zeros(sum(sizes) + len(params) + 1, dtype=ref.dtype, device=ref.device)
    k = 0
    for n, p in zip(sizes, params):
        if p.grad is not None:
            flat[k:k + n] = p.grad.reshape(-1)
        k += n
    flat[k:k + len(params)] = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype)
    flat[-1] = loss
    torch.distributed.all_reduce(flat)
    k, flags = 0, sum(sizes)
    for i, (n, p) in enumerate(zip(sizes, params)):
        if flat[flags + i] > 0:
            p.grad = flat[k:k + n].to(p.dtype).reshape(p.shape).clone()
        else:
            p.grad = None
        k += n
    return float(flat[-1])
