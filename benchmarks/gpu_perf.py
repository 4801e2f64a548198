"""The GPU loop near the hardware's limit: a device-time profile of the paper's network and
end-to-end FPS of its variants side by side, on one lent GPU, in one run.

    python benchmarks/gpu_perf.py                      # on the GPU: 512x1024, fp16, ~5 min
    python benchmarks/gpu_perf.py --dry-run            # any machine: 64x128, CPU, seconds

Writes benchmarks/results/gpu_perf.json (--out) with the device name:
- ``profile``: `ssr-deploy profile`'s torch.profiler view (kernel time per genotype module,
  the top kernels and ops with input shapes, host time) at batch 1 and 8, fp16;
- ``variants``: end to end (uint8 frames from pinned host memory in, labels back to the host,
  both copies included), batch 1 and 8: eager NCHW vs channels_last, cudnn.benchmark off and
  on, CUDA graphs, torch.compile (default, max-autotune, reduce-overhead = with CUDA graphs),
  bf16 vs fp16, and what the graph itself may change: BatchNorm folded into the convs, the
  exact PSP pooling's matrices cached per size (or torch's own adaptive pooling) instead of
  built per call, the argmax at the logits' resolution then nearest upsampling of labels.
  Each variant's labels are compared with fp32 eager's (agreement), so a default can only
  move to a variant that keeps them.
The dry run executes every code path that does not need CUDA (the rest say so) and is run
by the test suite, so the device run cannot fail on a typo.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.io import atomic_write_text, dumps_compact
from ssr_deploy.model.deploy import DeployModel
from ssr_deploy.spec import runtime_io

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.nets
from tests.nets import confident_net  # noqa: E402


def paper_network() -> nn.Module:
    """The paper's network, its classifier scaled to a trained network's margins (so fp16
    flips few labels, as it would on a trained one)."""
    return confident_net()


def fold_batchnorms(net: nn.Module) -> nn.Module:
    """An eval copy with every Conv2d -> BatchNorm2d pair folded into the conv (the
    downsamplers' BN after a concat stays)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for module in net.modules():
        names = list(module._modules) if isinstance(module, nn.Sequential) else []
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
        for name in ("conv3x1", "conv1x3"):  # FactorisedResidual: conv3x1 -> bn1, conv1x3 -> bn2
            bn_name = {"conv3x1": "bn1", "conv1x3": "bn2"}[name]
            if isinstance(getattr(module, name, None), nn.Conv2d) and isinstance(
                    getattr(module, bn_name, None), nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(getattr(module, name),
                                                        getattr(module, bn_name)))
                setattr(module, bn_name, nn.Identity())
    return net


class ReducedArgmax(nn.Module):
    """The deploy model with the argmax taken at the logits' own resolution, the labels
    then upsampled (nearest): the full-resolution 19-channel upsample goes."""

    def __init__(self, deploy: DeployModel) -> None:
        super().__init__()
        self.deploy = deploy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.deploy.net
        x = self.deploy.preprocess(x)
        height, width = x.shape[-2:]
        stride = net.genotype.stages[0].stride  # the head fuses at the first stage's size
        stem = x = net.stem(x)
        shallow = None
        for stage in net.stages:
            x = stage(x)
            shallow = x if shallow is None else shallow
        logits = net.head(x, shallow, stem, (height // stride, width // stride))
        labels = logits.argmax(1, keepdim=True).to(torch.uint8)
        return F.interpolate(labels, size=(height, width), mode="nearest")[:, 0]


class PoolPatched(nn.Module):
    """The deploy model with the PSP's exact adaptive pooling swapped while it runs:
    ``cached`` keeps each (size, bins) pair's matrices instead of building them per call
    (what a fixed-size engine gets as constants); ``native`` is F.adaptive_avg_pool2d."""

    def __init__(self, inner: nn.Module, mode: str) -> None:
        super().__init__()
        from ssr_deploy.model.blocks import pool_matrix

        self.inner, cache = inner, {}

        def cached(x: torch.Tensor, bins: int) -> torch.Tensor:
            key = (tuple(x.shape[-2:]), bins, x.device, x.dtype)
            if key not in cache:
                cache[key] = (pool_matrix(x.shape[-2], bins, x),
                              pool_matrix(x.shape[-1], bins, x).t().contiguous())
            rows, cols = cache[key]
            return rows @ x @ cols

        self.pool = cached if mode == "cached" else (
            lambda x, bins: F.adaptive_avg_pool2d(x, bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ssr_deploy.model import head

        original, head.adaptive_avg_pool2d = head.adaptive_avg_pool2d, self.pool
        try:
            return self.inner(x)
        finally:
            head.adaptive_avg_pool2d = original


def end_to_end(model: nn.Module, frames: torch.Tensor, device: torch.device, dtype,
               iters: int, graphs: bool = False) -> tuple[float, torch.Tensor]:
    """FPS of pinned uint8 frames in -> labels out on the host, copies included."""
    cuda = device.type == "cuda"
    host = frames.pin_memory() if cuda else frames
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())

    def forward(x):
        with autocast:
            return model(x)

    with torch.inference_mode():
        if graphs and cuda:
            static = host.to(device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    forward(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out_static = forward(static)

            def run():
                static.copy_(host, non_blocking=True)
                graph.replay()
                return out_static.cpu()
        else:
            def run():
                return forward(host.to(device, non_blocking=True)).cpu()
        for _ in range(3):
            labels = run()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            labels = run()
        seconds = time.perf_counter() - start
    return iters * frames.shape[0] / seconds, labels


def variants(net: nn.Module, device: torch.device, low: torch.dtype) -> dict[str, dict]:
    """name -> how to build it: model, dtype, CUDA graphs, cudnn.benchmark; needs CUDA?"""
    io = runtime_io(19)

    def deploy(n=net, channels_last=True):
        m = DeployModel(n, io).eval().to(device)
        return m.to(memory_format=torch.channels_last) if channels_last else m

    def compiled(mode=None):
        return lambda: torch.compile(deploy(), mode=mode)

    folded = fold_batchnorms(net)
    return {
        "eager-nchw": {"build": lambda: deploy(channels_last=False), "dtype": low},
        "eager-channels-last": {"build": deploy, "dtype": low},
        "cudnn-benchmark": {"build": deploy, "dtype": low, "cudnn_benchmark": True,
                            "cuda": True},
        "cuda-graphs": {"build": deploy, "dtype": low, "graphs": True, "cuda": True},
        "cuda-graphs-cudnn-benchmark": {"build": deploy, "dtype": low, "graphs": True,
                                        "cudnn_benchmark": True, "cuda": True},
        "compile-default": {"build": compiled(), "dtype": low, "compile": True},
        "compile-max-autotune": {"build": compiled("max-autotune"), "dtype": low,
                                 "compile": True, "cuda": True},
        "compile-reduce-overhead": {"build": compiled("reduce-overhead"), "dtype": low,
                                    "compile": True, "cuda": True},
        "bf16-cuda-graphs": {"build": deploy, "dtype": torch.bfloat16, "graphs": True,
                             "cuda": True},
        "bn-folded-cuda-graphs": {"build": lambda: deploy(folded), "dtype": low,
                                  "graphs": True},
        "reduced-argmax-cuda-graphs": {"build": lambda: ReducedArgmax(deploy()), "dtype": low,
                                       "graphs": True},
        "psp-cached-matrices-cuda-graphs": {"build": lambda: PoolPatched(deploy(), "cached"),
                                           "dtype": low, "graphs": True},
        "psp-native-pool-cuda-graphs": {"build": lambda: PoolPatched(deploy(), "native"),
                                        "dtype": low, "graphs": True},
        "bn-folded-reduced-argmax-cuda-graphs": {
            "build": lambda: ReducedArgmax(deploy(folded)), "dtype": low, "graphs": True},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="64x128 on this machine's CPU, 2 iterations: checks the code paths")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--no-compile", action="store_true", help="Skip torch.compile variants.")
    parser.add_argument("--out", default="benchmarks/results/gpu_perf.json")
    parser.add_argument("--budget", type=float, default=None,
                        help="Seconds: the variants left when it is spent are recorded as "
                             "skipped (the JSON is written after each one either way).")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    size = (64, 128) if args.dry_run else (512, 1024)
    iters = 2 if args.dry_run else args.iters
    low = torch.float16 if cuda else torch.float32  # the dry run checks paths, not precision
    batches = (1,) if args.dry_run else (1, 8)
    started = time.perf_counter()
    net = paper_network().to(device)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)" if args.dry_run
        else "cpu", "torch": torch.__version__, "size": list(size), "iters": iters,
        "dry_run": args.dry_run, "profile": {}, "variants": {}}

    def save() -> None:  # after each measurement: a run killed later keeps what it has
        result["seconds"] = time.perf_counter() - started
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, dumps_compact(result, indent=1) + "\n")

    from ssr_deploy.backends.torch import TorchBackend, TorchOptions
    modules = {n for n, _ in net.named_modules()
               if n in ("stem", "head.psp", "head.low", "head.fuse", "head.classifier")
               or n.startswith("stages.") and (n.endswith(".down") or n.count(".") == 3)}
    for batch in batches:
        backend = TorchBackend(copy.deepcopy(net).cpu(), str(device),
                               TorchOptions(size=size, fp16=cuda))
        frames = street_frames(batch, *size)
        result["profile"][f"batch{batch}"] = backend.kernel_profile(
            frames, max(2, iters // 10), modules, top=10)
        backend.close()
        save()

    reference: dict[int, torch.Tensor] = {}
    for batch in batches:
        frames = torch.from_numpy(street_frames(batch, *size, seed=batch))
        fp32 = DeployModel(net, runtime_io(19)).eval().to(device)
        _, reference[batch] = end_to_end(fp32, frames, device, torch.float32, 1)
        for name, v in variants(net, device, low).items():
            key = f"{name}/batch{batch}"
            if v.get("cuda") and not cuda:
                result["variants"][key] = {"skipped": "needs CUDA"}
                continue
            if v.get("compile") and args.no_compile:
                result["variants"][key] = {"skipped": "--no-compile"}
                continue
            if args.budget and time.perf_counter() - started > args.budget:
                result["variants"][key] = {"skipped": f"out of time (--budget {args.budget:g})"}
                continue
            torch.backends.cudnn.benchmark = bool(v.get("cudnn_benchmark"))
            try:
                fps, labels = end_to_end(v["build"](), frames, device, v["dtype"], iters,
                                         v.get("graphs", False))
            except Exception as e:  # noqa: BLE001 - a variant that fails is a result too
                result["variants"][key] = {"failed": f"{type(e).__name__}: {str(e)[:200]}"}
                save()
                continue
            finally:
                torch.backends.cudnn.benchmark = False
            agreement = float((labels == reference[batch]).float().mean())
            result["variants"][key] = {"fps": fps, "label_agreement_vs_fp32": agreement,
                                       "dtype": str(v["dtype"]).replace("torch.", "")}
            print(f"{key:<45} {fps:9.1f} FPS  labels {100 * agreement:.3f}% as fp32",
                  flush=True)
            save()
    save()
    print(f"wrote {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
