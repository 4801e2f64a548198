"""Metadata that travels with every exported file: a sidecar ``<file>.json`` and, for ONNX,
the same keys in ``metadata_props``. The runtime reads it; nothing has to be retyped."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch

import ssr_deploy
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.export.graph import IOFormat
from ssr_deploy.genotype import Genotype, default_palette
from ssr_deploy.io import atomic_write_text, dumps_compact

METADATA_FORMAT = 1
PROP_PREFIX = "ssr_deploy."


@dataclass(frozen=True)
class Dynamic:
    """Dynamic ranges of an export: None where the dimension is fixed."""

    batch: tuple[int, int, int] | None = None  # (min, opt, max)
    size: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"batch": None, "size": None}
        if self.batch:
            out["batch"] = dict(zip(("min", "opt", "max"), self.batch, strict=True))
        if self.size:
            out["size"] = {k: list(v) for k, v in zip(("min", "opt", "max"), self.size,
                                                      strict=True)}
        return out


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``; ``model.engine`` -> ``model.engine.json`` (one
    rule, so an engine built beside its ONNX never overwrites the ONNX's sidecar)."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_specs(io: IOFormat, genotype: Genotype, batch: int, size: tuple[int, int],
                 num_classes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output specs: name, layout, dtype, static shape (-1 where dynamic is decided
    by the caller), colour order and normalisation."""
    spec = genotype.input
    multiple, minimum = genotype.size_rule()
    h, w = size
    if io.uint8_input:
        color = io.input.rsplit("-", 1)[-1]
        inp = {"name": io.input_name, "layout": "NHWC", "dtype": "uint8", "color": color,
               "shape": [batch, h, w, 3], "normalization": "in-graph"}
    else:
        inp = {"name": io.input_name, "layout": "NCHW", "dtype": "float32", "color": spec.color,
               "shape": [batch, 3, h, w], "normalization": "by-caller"}
    inp.update({"size": [h, w], "mean": list(spec.mean), "std": list(spec.std), "scale": 1 / 255,
                "size_multiple": multiple, "min_size": minimum})
    if io.output == "logits":
        out = {"name": io.output_name, "kind": "logits", "layout": "NCHW", "dtype": "float32",
               "shape": [batch, num_classes, h, w]}
    else:
        out = {"name": io.output_name, "kind": "labels", "layout": "NHW", "dtype": io.label_dtype,
               "shape": [batch, h, w]}
    return inp, out


def build_metadata(genotype: Genotype, io: IOFormat, batch: int, size: tuple[int, int],
                   num_classes: int, dynamic: Dynamic, opset: int) -> dict[str, Any]:
    inp, out = tensor_specs(io, genotype, batch, size, num_classes)
    for spec in (inp, out):  # -1 marks a dynamic dimension, as ONNX Runtime and Triton do
        if dynamic.batch:
            spec["shape"][0] = -1
        if dynamic.size:
            first = 1 if spec["layout"] in ("NHWC", "NHW") else 2
            spec["shape"][first:first + 2] = [-1, -1]
    classes = list(genotype.classes) if num_classes == genotype.num_classes else [
        f"class {i}" for i in range(num_classes)]
    palette = [list(c) for c in genotype.palette] if num_classes == genotype.num_classes else [
        list(c) for c in default_palette(num_classes)]
    return {
        "metadata_format": METADATA_FORMAT,
        "genotype": {"name": genotype.name, "hash": genotype.hash},
        "classes": classes,
        "palette": palette,
        "input": inp,
        "output": out,
        "dynamic": dynamic.to_dict(),
        "opset": opset,
        "producer": {"ssr_deploy": ssr_deploy.__version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def to_props(metadata: dict[str, Any]) -> dict[str, str]:
    """Metadata as ONNX ``metadata_props``: one ``ssr_deploy.<key>`` each, values as JSON."""
    return {PROP_PREFIX + k: json.dumps(v) for k, v in metadata.items()}


def from_props(props: dict[str, str]) -> dict[str, Any]:
    return {k[len(PROP_PREFIX):]: json.loads(v) for k, v in props.items()
            if k.startswith(PROP_PREFIX)}


def write_sidecar(model_path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``<model>.json`` with the metadata and the model file's sha256, atomically."""
    full = {**metadata, "file": Path(model_path).name, "sha256": file_sha256(model_path)}
    return atomic_write_text(sidecar_path(model_path), dumps_compact(full) + "\n")


def read_sidecar(model_path: str | Path, verify_hash: bool = True) -> dict[str, Any]:
    """The sidecar of ``model_path``; a clear error if it is missing, broken or disagrees."""
    model_path, path = Path(model_path), sidecar_path(model_path)
    if not path.is_file():
        raise SsrDeployError(f"{model_path} has no metadata sidecar {path.name}; keep the .json "
                             "that `ssr-deploy export` wrote next to it, or export again")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SsrDeployError(f"sidecar {path} is not JSON ({e.msg}, line {e.lineno}); "
                             "export again") from None
    if not isinstance(metadata, dict) or metadata.get("metadata_format") != METADATA_FORMAT:
        raise SsrDeployError(f"sidecar {path} is not ssr-deploy metadata format "
                             f"{METADATA_FORMAT}; export again with this ssr-deploy")
    if verify_hash and metadata.get("sha256") and metadata["sha256"] != file_sha256(model_path):
        raise SsrDeployError(f"sidecar {path.name} does not describe {model_path.name}: the model "
                             "file changed after export (sha256 differs); export again")
    return metadata
