"""ONNX export through ``torch.onnx.export(dynamo=True)``, written atomically."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import atomic_write
from ssr_deploy.model.net import SSRNet

MIN_OPSET = 17
DEFAULT_OPSET = 18


def export_onnx(model: SSRNet, path: str | Path, size: tuple[int, int] = (512, 1024),
                batch: int = 1, dynamic: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` (float32 NCHW in -> logits out) to ``path``.

    ``dynamic`` makes batch, height and width symbolic; height and width stay multiples of
    the network's output stride, the rule ``genotype.size_rule()`` states."""
    if opset < MIN_OPSET:
        raise SsrDeployError(f"opset {opset} is too old: SSRNet needs opset >= {MIN_OPSET} "
                             f"(use --opset {DEFAULT_OPSET})")
    genotype = model.genotype
    genotype.check_input_size(*size)
    model = model.eval()
    example = torch.zeros(batch, 3, *size)
    dynamic_shapes = None
    if dynamic:
        multiple, minimum = genotype.size_rule()
        dim = torch.export.Dim
        dynamic_shapes = {"x": {0: dim("batch", min=1, max=1024),
                                2: multiple * dim("h", min=minimum // multiple, max=4096),
                                3: multiple * dim("w", min=minimum // multiple, max=4096)}}

    def write(tmp: Path) -> None:
        with _quiet():
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                output_names=["logits"], dynamic_shapes=dynamic_shapes, verbose=False)
            program.save(str(tmp))

    return atomic_write(path, write)


@contextlib.contextmanager
def _quiet():
    """The exporter logs progress and notes about torchvision ops we do not use."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
