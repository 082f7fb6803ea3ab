"""Data parallelism under ``torchrun``: ranks from the environment, features gathered for the contrastive loss.

Without torchrun (``WORLD_SIZE`` unset or 1) every helper here is a no-op, so one code path serves a laptop
and a cluster. Backend: nccl on CUDA, gloo on CPU. As in open_clip, each rank encodes its slice of the global
batch and the loss is computed over the features of all ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of a global batch of ``n`` (``n`` divisible by the world size)."""
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def my_slice(self, *batch):
        """This rank's share of each tensor of a global batch (all of it outside torchrun); the remainder of
        a batch that does not divide by the world size is dropped, so every rank holds the same count."""
        if not self.enabled:
            return batch
        keep = self.shard(len(batch[0]) - len(batch[0]) % self.world)
        return tuple(t[keep] for t in batch)


def info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; returns this rank's info and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info(), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result (or its error, re-raised everywhere) to every rank,
    so a refused output folder stops all ranks instead of leaving them waiting."""
    d = info()
    if not d.enabled:
        return fn()
    box: list = [None, None]
    if d.is_main:
        try:
            box[0] = fn()
        except Exception as e:  # noqa: BLE001  (re-raised on every rank below)
            box[1] = (type(e), str(e))
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        etype, msg = box[1]
        raise (etype if issubclass(etype, (ValueError, RuntimeError, OSError)) else RuntimeError)(msg)
    return box[0]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if info().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_features(image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's features concatenated in rank order, differentiably (open_clip's ``--gather-with-grad``).

    Each rank then computes the same loss over the global batch; the gather's backward sums the gradients
    of all ranks into each slice, so after DDP averages, the weights get exactly the single-process gradient
    of the global batch (logit scale included, which a gather without gradient gets wrong by a factor).
    """
    if not info().enabled:
        return image, text
    return _GatherWithGrad.apply(image), _GatherWithGrad.apply(text)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' [b,D] slices -> [world*b,D]; backward sums the gradient of the whole over ranks and hands each
    rank its slice (an all-reduce, which gloo supports, where a reduce-scatter would not be)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        d = info()
        parts = [torch.empty_like(x) for _ in range(d.world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.world = d.rank, d.world
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.chunk(ctx.world)[ctx.rank]


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around ``model`` when distributed (SyncBatchNorm on CUDA, where PyTorch supports it)."""
    if not info().enabled:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device])
    return torch.nn.parallel.DistributedDataParallel(model)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
