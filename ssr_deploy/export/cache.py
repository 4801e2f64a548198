"""Checkpoints run through an exported graph: ``onnx_for_checkpoint`` exports a checkpoint
once per content, size and I/O format into a cache folder, never next to the user's file,
and finds it again by that key (not by modification time)."""

from __future__ import annotations

from pathlib import Path

from ssr_deploy.io import cache_root
from ssr_deploy.spec import RUNTIME_IO, IOFormat, file_sha256


def onnx_cache_folder() -> Path:
    return cache_root() / "onnx"


def onnx_for_checkpoint(checkpoint: str | Path, size: tuple[int, int],
                        io: IOFormat = RUNTIME_IO, max_batch: int = 32) -> Path:
    """The verified ONNX of ``checkpoint`` at ``size`` (dynamic batch 1 to ``max_batch``),
    exported on first use; keyed by the checkpoint's sha256, size, I/O and batch range."""
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.model.checkpoint import load_model

    key = (f"{file_sha256(checkpoint)[:16]}-{size[0]}x{size[1]}-{io.input}-{io.output}-"
           f"{io.label_dtype}-b{max_batch}")
    target = onnx_cache_folder() / f"{key}.onnx"
    if not (target.is_file() and target.with_name(target.name + ".json").is_file()):
        target.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(load_model(checkpoint), target, size=size, dynamic_batch=True,
                    max_batch=max_batch, io=io)
    return target
