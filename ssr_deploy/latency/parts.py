"""The parts a latency table times, each a module in the shapes it has in a network of the
space, and each part's ONNX as ``export onnx`` would write it."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssr_deploy.latency.options import IO_KEY, LutOptions
from ssr_deploy.latency.table import block_key, diagonal, down_key, grid_widths, head_key
from ssr_deploy.space import SearchSpace
from ssr_deploy.spec import runtime_io


@dataclass
class Probe:
    """One part to time: its key, a module, and the (shape, dtype) of each input."""

    key: str
    module: Callable[[], nn.Module]
    inputs: list[tuple[tuple[int, ...], str]]
    genotype: Any = None  # a whole network's: timed as a user runs it where the path can


# ---- what to measure -------------------------------------------------------------------

class _Stem(nn.Module):
    """The fused input conversion, then the stem downsampler."""

    def __init__(self, deploy: nn.Module, stem: nn.Module) -> None:
        super().__init__()
        self.deploy, self.stem = deploy, stem

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(self.deploy.preprocess(x))


class _Head(nn.Module):
    """The head at the input size, then the fused argmax."""

    def __init__(self, deploy: nn.Module, head: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.deploy, self.head, self.size = deploy, head, size

    def forward(self, deep: Tensor, shallow: Tensor, stem: Tensor) -> Tensor:
        return self.deploy.postprocess(self.head(deep, shallow, stem, self.size))


def probes(space: SearchSpace, o: LutOptions) -> list[Probe]:
    """Every part the table needs, then the off-grid checks (keys ``check/<block>``). Each
    part is made as the network and the supernet make it (``model.net``: ``stem_of``,
    ``layer_of``, ``head_of``; the stage downsampler), so the table times what runs."""
    from ssr_deploy.genotype import Layer
    from ssr_deploy.model.blocks import Downsampler
    from ssr_deploy.model.deploy import DeployModel
    from ssr_deploy.model.net import build_model, head_of, layer_of, stem_of

    eps, (h, w), b = space.bn_eps, o.size, o.batch
    genotype = space.sample(random.Random(0), o.num_classes)  # any network of the space:
    deploy = DeployModel(build_model(genotype, o.num_classes), runtime_io(o.num_classes)).eval()
    deploy.net = nn.Identity()  # its pre- and post-processing only

    def fmap(stride: int, channels: int) -> tuple[tuple[int, ...], str]:
        return (b, channels, h // stride, w // stride), "float32"

    def down(c_in: int, c_out: int) -> Callable[[], nn.Module]:
        return lambda: Downsampler(c_in, c_out, eps)

    def block(i, m, ot, d, r, st) -> Callable[[], nn.Module]:
        return lambda: layer_of(Layer("fr", d, r, i, m, ot), st.dropout, eps)

    out = [Probe("stem", lambda: _Stem(deploy, stem_of(space)), [((b, h, w, 3), "uint8")])]
    if o.device.startswith("cuda"):  # frames to the GPU and labels back, as the runtime does
        out.append(Probe(IO_KEY, nn.Identity, [((b, h, w, 3), "uint8")]))
    prev, prev_stride = [space.stem_channels], 2
    blocks: list[Probe] = []
    base = space.dilations[0]
    grid_dilations = space.dilations if o.every_dilation else (base,)
    for s, st in enumerate(space.stages):
        out += [Probe(down_key(s, c), down(c, st.channels), [fmap(prev_stride, c)])
                for c in prev]
        gi, gm, go = (grid_widths(space.widths(s), n) for n in o.width_grid)
        for r in space.resolutions:
            for d in space.dilations:
                corners = [(i, m, ot) for i in gi for m in gm for ot in go] \
                    if d in grid_dilations else diagonal(gi, gm, go)
                blocks += [Probe(block_key(s, d, r, *c), block(*c, d, r, st),
                                 [fmap(st.stride, c[0])]) for c in corners]
        prev, prev_stride = go, st.stride
    out += blocks
    first, last = space.stages[0], space.stages[-1]
    for f in grid_widths(space.widths(0), o.width_grid[1]):
        for la in grid_widths(space.widths(len(space.stages) - 1), o.width_grid[1]):
            def head(f=f, la=la):
                return _Head(deploy, head_of(space, la, f, o.num_classes), (h, w))

            out.append(Probe(head_key(f, la), head, [fmap(last.stride, la),
                                                     fmap(first.stride, f),
                                                     fmap(2, space.stem_channels)]))
    rng, measured = random.Random(o.seed), {p.key for p in out}
    tries = 0
    while sum(p.key.startswith("check/") for p in out) < o.check_points and tries < 1000:
        tries += 1
        s = rng.randrange(len(space.stages))
        options = space.widths(s)
        d, r = rng.choice([op for op in space.ops() if op != ("skip",)])
        c = tuple(rng.choice(options) for _ in range(3))
        key = block_key(s, d, r, *c)
        if key in measured:
            continue
        measured.add(key)
        out.append(Probe(f"check/{key}", block(*c, d, r, space.stages[s]),
                         [fmap(space.stages[s].stride, c[0])]))
    return out


# ---- to ONNX ---------------------------------------------------------------------------
def example_input(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32)


def export_part(probe: Probe, opset: int = 18) -> bytes:
    """The part's ONNX as ``export onnx`` writes a network: BN folded, through the one
    exporter (its fast path: the parts are many), simplified with onnxslim."""
    from ssr_deploy.export.fold import fold_batchnorm
    from ssr_deploy.export.onnx import to_onnx

    module = fold_batchnorm(probe.module())
    xs = tuple(torch.zeros(shape, dtype=getattr(torch, dtype)) for shape, dtype in probe.inputs)
    return to_onnx(module, xs, opset, fast=True).SerializeToString()


def quantize_for_timing(model: bytes, inputs: list[tuple[tuple[int, ...], str]], options
                        ) -> bytes:
    """A part's int8 graph as the backend's int8 export quantizes a network (``options``: its
    form), its ranges from one random input: timing needs the graph's shape, and any valid
    scales give it."""
    import contextlib
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        quant_pre_process,
        quantize_static,
    )

    from ssr_deploy.export.int8 import quantizer_settings

    class OneInput(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            graph = onnx.load_from_string(model).graph
            self.left = [{i.name: example_input(shape, dtype, rng) for i, (shape, dtype)
                          in zip(graph.input, inputs, strict=True)}]

        def get_next(self):
            return self.left.pop() if self.left else None

        def set_range(self, start_index: int, end_index: int) -> None:
            pass  # one input, read once

        def __len__(self) -> int:
            return 1

    with tempfile.TemporaryDirectory(prefix="ssr-deploy-lut-int8.") as tmp:
        source, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model)
        # as the export does it (to_int8): the quantizer's own shape inference first, which
        # it otherwise asks for in a warning per graph
        quant_pre_process(str(source), str(source), skip_optimization=True,
                          skip_symbolic_shape=True)
        with contextlib.redirect_stdout(None):
            quantize_static(str(source), str(out), OneInput(),
                            calibrate_method=CalibrationMethod.MinMax,
                            **quantizer_settings(options))
        return out.read_bytes()
