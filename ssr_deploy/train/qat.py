"""Quantization-aware training (``ssr-deploy train --qat --init-from CKPT``) in the TensorRT
form, with NVIDIA ModelOpt's torch quantization (``modelopt.torch.quantization``, which runs
on CPUs as well as GPUs): symmetric int8, per-channel weights, per-tensor activations at
every convolution's input, the ranges calibrated by ModelOpt on training batches; then the
weights are fine-tuned through the fake quantization.

The checkpoint holds the plain network's weights (it loads as any other) and, under
``"qat"``, what it was fine-tuned from and each convolution's input range. ``export onnx
--precision int8`` writes those ranges into onnxruntime's quantizer instead of calibrating,
so the Q/DQ graph is the one PTQ makes, with the learned ranges. BatchNorm statistics stay
frozen while fine-tuning: the exported graph folds them into the convolutions (and dropout
is off: the fine-tune distils the fp32 network's outputs). (Per-channel
symmetric weight ranges are the same before and after that folding, which scales each
output channel.)"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.spec import file_sha256

QAT_FORMAT = 1
CALIBRATION_BATCHES = 16


def import_modelopt():
    """``modelopt.torch.quantization``, or one line on how to install it."""
    try:
        with quiet_modelopt():
            import modelopt.torch.quantization as mtq
    except ImportError as e:
        raise SsrDeployError(f"--qat needs NVIDIA ModelOpt ({e.name or e}): pip install "
                             "'ssr-deploy[qat]'") from None
    return mtq


@contextlib.contextmanager
def quiet_modelopt():
    """ModelOpt's own noise, not the user's business: that its Hugging Face plugins find no
    transformers, torch.jit deprecations of its kernels, its "Inserted N quantizers"."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.filterwarnings("ignore", message=".*transformers package")
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script",
                                category=DeprecationWarning)
        yield


def quantize_for_training(net: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """``net`` with ModelOpt's int8 fake quantization at every convolution (weights per
    output channel, inputs per tensor), its ranges calibrated on ``batches``; BatchNorm and
    Dropout held in eval mode from here on."""
    mtq = import_modelopt()
    batches = list(batches)

    def forward_loop(model: nn.Module) -> None:
        with torch.no_grad():
            for images in batches:
                model(images)

    net.eval()
    with quiet_modelopt():
        net = mtq.quantize(net, mtq.INT8_DEFAULT_CFG, forward_loop)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.modules.dropout._DropoutNd):
            module.train = types.MethodType(_frozen_train, module)
    return net


def _frozen_train(self: nn.Module, mode: bool = True) -> nn.Module:
    """BatchNorm's and Dropout's ``train``: always eval. BatchNorm keeps the statistics
    export folds; without dropout the quantized network is fitted to the fp32 network's
    outputs as they are, not to a noisy copy."""
    return nn.Module.train(self, False)


def input_ranges(net: nn.Module) -> dict[str, float]:
    """{convolution's module path: the amax of its input} of a quantized network."""
    ranges = {}
    for name, module in net.named_modules():
        quantizer = getattr(module, "input_quantizer", None)
        if quantizer is not None and quantizer.is_enabled and quantizer.amax is not None:
            ranges[name] = float(quantizer.amax.detach().max())
    if not ranges:
        raise SsrDeployError("the network has no calibrated input quantizers; the QAT "
                             "calibration saw no batch")
    return ranges


def plain_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The weights as the plain network names them (ModelOpt's quantizer state left out)."""
    return {k: v for k, v in net.state_dict().items() if "_quantizer." not in k}


def qat_source(init_from: str | Path) -> dict[str, Any]:
    """The part of a QAT record that does not change over the run: what it fine-tunes,
    with what."""
    import modelopt

    path = Path(init_from)
    return {"format": QAT_FORMAT, "form": "tensorrt",
            "library": f"nvidia-modelopt {modelopt.__version__}", "from": str(path),
            "from_sha256": file_sha256(path)}


def qat_record(net: nn.Module, source: dict[str, Any], epochs: int) -> dict[str, Any]:
    """What a QAT checkpoint says of itself: its source, epochs and learned ranges."""
    return {**source, "epochs": epochs, "input_amax": input_ranges(net)}


def check_record(record: Any, source: str) -> dict[str, Any]:
    """A checkpoint's ``"qat"`` entry, checked: a dict of positive finite ranges."""
    amax = record.get("input_amax") if isinstance(record, dict) else None
    if not isinstance(amax, dict) or not amax or not all(
            isinstance(k, str) and isinstance(v, float) and 0 < v < float("inf")
            for k, v in amax.items()):
        raise SsrDeployError(f"{source}: its QAT record has no valid input ranges; fine-tune "
                             "it again with `ssr-deploy train --qat`")
    return record
