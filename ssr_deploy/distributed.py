"""Runs under ``torchrun``: this process's place in the job, and the few collectives train
and search need. Without torchrun (no WORLD_SIZE) every function is the one-process case:
rank 0 of 1, no process group, nothing sent."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ssr_deploy.errors import SsrDeployError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def start(device: str = "cpu") -> tuple[int, int]:
    """(rank, world size), the process group initialised under torchrun: NCCL for CUDA
    tensors, gloo for CPU ones."""
    world = world_size()
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        if cuda:  # this process's GPU, before NCCL makes its communicator there
            torch.cuda.set_device(torch.device(rank_device(device)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), world


def rank_device(device: str) -> str:
    """``cuda`` under torchrun is this process's GPU (``cuda:LOCAL_RANK``); an explicit index
    or the CPU stays as given."""
    if world_size() > 1 and device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def warn_if_oversubscribed(device: str) -> None:
    """More processes on this machine than CPU cores, on the CPU: each gets less than one."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device == "cpu" and cores and local > cores and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        warnings.warn(f"{local} processes on {cores} CPU cores: each gets less than a core and "
                      f"they slow each other down; use --nproc_per_node {cores} or fewer",
                      stacklevel=2)


def split_batch(batch: int, world: int) -> int:
    """Each process's share of the global ``batch``; refused, with the nearest batches that
    split, where it does not split evenly."""
    if batch % world == 0:
        return batch // world
    low = batch // world * world
    near = [b for b in (low, low + world) if b > 0]
    raise SsrDeployError(f"--batch {batch} is the global batch and does not split over {world} "
                         f"processes; use --batch {' or '.join(map(str, near))}")


class RankBatches(Sampler[list[int]]):
    """This rank's part of each global batch: every rank draws the same global batches (the
    same sampler, the same seed) and takes its own slice, so the job sees exactly the
    batches one process would."""

    def __init__(self, batches: Sampler[list[int]], rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            share = len(batch) // self.world
            yield batch[self.rank * share:(self.rank + 1) * share]

    def __len__(self) -> int:
        return len(self.batches)


class _SyncedBatchNorm(torch.autograd.Function):
    """Training BatchNorm over every rank's images: one all-reduce forward (each rank's
    count, mean and squared deviations, combined as Chan et al.'s parallel variance), one
    backward (the sums the input gradient needs); fused passes over the activations, as
    BatchNorm's own kernels make. The weight and bias gradients stay this rank's (the
    search sums every gradient over the ranks after the backward pass)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        c, dims = x.shape[1], (0, 2, 3)
        n_here = x.numel() // c
        var_here, mean_here = torch.var_mean(x, dims, correction=0)
        total = torch.cat([n_here * mean_here, n_here * var_here,
                           n_here * mean_here * mean_here, x.new_full((1,), n_here)])
        dist.all_reduce(total)
        n = total[3 * c]
        mean = total[:c] / n
        var = ((total[c:2 * c] + total[2 * c:3 * c]) / n - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        y = torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, False)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.n = n
        ctx.mark_non_differentiable(mean, var, n)  # for the running statistics only
        return y, mean, var, n

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar, _dn):
        x, weight, mean, invstd = ctx.saved_tensors
        c, dims, shape = x.shape[1], (0, 2, 3), (1, -1, 1, 1)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        local = torch.cat([dy.sum(dims), (dy * xhat).sum(dims)])
        total = local.clone()
        dist.all_reduce(total)
        sum_dy, sum_dy_xhat = total[:c] / ctx.n, total[c:] / ctx.n
        scale = invstd if weight is None else invstd * weight
        dx = (dy - sum_dy.view(shape) - xhat * sum_dy_xhat.view(shape)) * scale.view(shape)
        dweight = None if weight is None else local[c:]
        dbias = None if weight is None else local[:c]
        return dx, dweight, dbias, None


class SyncedBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose batch is the job's: in training under torchrun the mean and variance
    are those of every rank's images together (``_SyncedBatchNorm``), and the running
    statistics move alike on every rank: the layer computes what one process with the
    whole batch computes. Any device (torch's SyncBatchNorm refuses CPU tensors); one
    process, or eval: plain BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        y, mean, var, n = _SyncedBatchNorm.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                f = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - f).add_(mean, alpha=f)
                self.running_var.mul_(1 - f).add_(var * n / (n - 1), alpha=f)
        return y


class SharedDropout2d(torch.nn.Dropout2d):
    """Dropout2d whose draws are the job's: every rank holds the same random state, draws
    the noise of the whole global batch as one process would, and keeps its own slice; the
    random state then moves alike on every rank. One process, or eval: plain Dropout2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0 and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        world, rank, n = dist.get_world_size(), dist.get_rank(), x.shape[0]
        noise = x.new_empty((n * world, x.shape[1], 1, 1)).bernoulli_(1 - self.p)
        noise.div_(1 - self.p)
        return x * noise[rank * n:(rank + 1) * n]


def as_one_batch(module: torch.nn.Module) -> int:
    """Make ``module``'s BatchNorm2d and Dropout2d layers compute over the job's global
    batch (SyncedBatchNorm2d, SharedDropout2d), in place: the same parameters, buffers and
    state dict. Returns how many layers."""
    swaps = {torch.nn.BatchNorm2d: SyncedBatchNorm2d, torch.nn.Dropout2d: SharedDropout2d}
    layers = [m for m in module.modules() if type(m) in swaps]
    for m in layers:
        m.__class__ = swaps[type(m)]
    return len(layers)


def all_sum(tensors: Sequence[torch.Tensor]) -> int:
    """Sum ``tensors`` over the ranks, in place, as one flat message; returns its bytes."""
    if not tensors:
        return 0
    wide = any(t.dtype == torch.float64 for t in tensors)
    flat = torch.cat([t.reshape(-1).to(torch.float64 if wide else torch.float32)
                      for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n
    return flat.numel() * flat.element_size()


def check_agree(facts: dict[str, Any], what: str) -> None:
    """Every rank must hold the same ``facts``; where one does not, every rank stops with
    one line naming the first fact that differs and the ranks that hold which."""
    seen: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(seen, facts)
    for key in facts:
        values = [s.get(key) for s in seen]
        if any(v != values[0] for v in values[1:]):
            ranks = ", ".join(f"rank {r}: {str(v)[:60]}" for r, v in enumerate(values))
            raise SsrDeployError(f"the processes disagree on {what} ({key}: {ranks}); every "
                                 "rank must run the same command on the same data and state: "
                                 "stopped rather than diverge")
