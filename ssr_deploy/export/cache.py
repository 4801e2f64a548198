"""Checkpoints run through an exported graph: ``onnx_for_checkpoint`` exports a checkpoint
once per content, size and I/O format into a cache folder, never next to the user's file,
and finds it again by that key (not by modification time). What it finds is checked before
use: its sidecar must vouch for the file (sha256), describe the checkpoint's genotype, size
and I/O, and the checkpoint's sha256 recorded at export must be this checkpoint's; anything
else (a file planted under the key, a half-copied cache) is exported again."""

from __future__ import annotations

from pathlib import Path

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import atomic_write_text, cache_root
from ssr_deploy.spec import RUNTIME_IO, IOFormat, ModelSpec, file_sha256


def onnx_cache_folder() -> Path:
    return cache_root() / "onnx"


def onnx_for_checkpoint(checkpoint: str | Path, size: tuple[int, int],
                        io: IOFormat = RUNTIME_IO, max_batch: int = 32) -> Path:
    """The verified ONNX of ``checkpoint`` at ``size`` (dynamic batch 1 to ``max_batch``),
    exported on first use; keyed by the checkpoint's sha256, size, I/O and batch range."""
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.model.checkpoint import load_model

    digest = file_sha256(checkpoint)
    key = f"{digest[:16]}-{size[0]}x{size[1]}-{io.input}-{io.output}-{io.label_dtype}-b{max_batch}"
    target = onnx_cache_folder() / f"{key}.onnx"
    source = target.with_name(target.name + ".checkpoint")
    net = load_model(checkpoint)
    if not (_is_export_of(target, source, digest, net.genotype.hash, size, io, max_batch)
            and _same_labels(target, net, size, io)):
        target.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(net, target, size=size, dynamic_batch=True, max_batch=max_batch, io=io)
        atomic_write_text(source, f"{digest}\n")
    return target


def _is_export_of(target: Path, source: Path, digest: str, genotype_hash: str,
                  size: tuple[int, int], io: IOFormat, max_batch: int) -> bool:
    """Whether the cached ``target`` is this checkpoint's export (see the module's text)."""
    try:
        spec = ModelSpec.load(target)
        recorded = source.read_text().strip()
    except (SsrDeployError, OSError, UnicodeDecodeError):
        return False
    return (recorded == digest and spec.genotype_hash == genotype_hash
            and spec.input.size == tuple(size) and spec.input.dtype == io.dtype
            and spec.output.kind == io.output and spec.output.dtype in (io.label_dtype,
                                                                         "float32")
            and spec.batch_range == (1, max_batch))


def _same_labels(target: Path, net, size: tuple[int, int], io: IOFormat) -> bool:
    """The cached graph's labels equal the checkpoint's on one street-like frame (99.9%: the
    export's own bound), so weights planted under a right key are not run."""
    import numpy as np
    import torch

    from ssr_deploy.backends.onnxruntime import new_session
    from ssr_deploy.data.synthetic import street_frames
    from ssr_deploy.export.verify import model_input
    from ssr_deploy.model.deploy import DeployModel
    from ssr_deploy.preprocess import outputs_to_labels

    try:
        session = new_session(target)
        x = model_input(street_frames(1, *size, seed=11), io, net.genotype.input)
        cached = session.run(None, {session.get_inputs()[0].name: x})[0]
    except Exception:  # noqa: BLE001 - an unreadable cache entry is exported again
        return False
    with torch.no_grad():
        own = DeployModel(net.eval(), io)(torch.from_numpy(x)).numpy()
    classes = net.num_classes
    return float(np.mean(outputs_to_labels(cached, io.output, classes)
                         == outputs_to_labels(own, io.output, classes))) >= 0.999
