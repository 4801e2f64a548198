"""Metadata that travels with every exported file: a sidecar ``<file>.json`` and, for ONNX,
the same keys in ``metadata_props``. The runtime reads it; nothing has to be retyped."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ssr_deploy.errors import UsageError
from ssr_deploy.io import atomic_write_many
from ssr_deploy.spec import ModelSpec, file_sha256, sidecar_path

PROP_PREFIX = "ssr_deploy."


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the model file, its sidecar, the metadata, the verification
    report, and how long it took."""

    path: Path
    sidecar: Path
    metadata: dict[str, Any]
    report: dict[str, Any]
    seconds: float

    @property
    def spec(self) -> ModelSpec:
        """The metadata, typed."""
        return ModelSpec.from_dict(self.metadata, str(self.sidecar))


def to_props(metadata: dict[str, Any]) -> dict[str, str]:
    """Metadata as ONNX ``metadata_props``: one ``ssr_deploy.<key>`` each, values as JSON."""
    return {PROP_PREFIX + k: json.dumps(v) for k, v in metadata.items()}


def publish_models(models: list[tuple[str | Path, Callable[[Path], object], dict[str, Any]]]
                   ) -> None:
    """Write each (path, write(tmp), metadata): every model and its sidecar go to temp names
    first, and are renamed into place only when all are complete. A failure anywhere leaves
    every earlier file as it was, and a model is never published without its sidecar."""
    writers: dict[Path, Callable[[Path], object]] = {}
    for path, write, metadata in models:
        path, digest = Path(path), {}

        def model(tmp: Path, write=write, digest=digest) -> None:
            write(tmp)
            digest["sha256"] = file_sha256(tmp)

        def sidecar(tmp: Path, path=path, metadata=metadata, digest=digest) -> None:
            tmp.write_text(ModelSpec.sidecar_text(path.name, digest["sha256"], metadata))

        writers[path] = model
        writers[sidecar_path(path)] = sidecar
    atomic_write_many(writers)


def read_sidecar(model_path: str | Path, verify_hash: bool = True) -> dict[str, Any]:
    """The sidecar of ``model_path`` as written, validated as a ModelSpec first."""
    return ModelSpec.load(model_path, verify_hash).to_dict()


def check_companion(path: Path, role: str, beside: Path, converted: Path, fp32: Path,
                    graph: onnx.ModelProto | None = None) -> None:
    """``path`` is about to be written beside ``beside`` as its ``role`` (an export's fp32
    graph, an engine build's converted graph). A file already there is replaced only if it
    is that companion from an earlier run (``converted``'s sidecar names ``fp32`` by its
    sha256) or, given the ``graph`` about to be written, the very same graph. Anything else
    is refused in one line: nothing a user had is replaced unasked."""
    if not path.exists() or _is_companion(converted, fp32):
        return
    if graph is not None:
        try:
            there = onnx.load(str(path), load_external_data=False).graph
            if there.SerializeToString(deterministic=True) == graph.graph.SerializeToString(
                    deterministic=True):
                return
        except Exception:  # noqa: BLE001 - unreadable: not ours to replace
            pass
    raise UsageError(f"{path} exists and is not the {role} of {beside.name} from an earlier "
                     f"run; this command writes its {role} there: move it, or write to another "
                     "folder (nothing was written)")


def _is_companion(converted: Path, fp32: Path) -> bool:
    try:
        recorded = ModelSpec.load(converted, verify_hash=False).fp32_onnx_sha256
        return recorded is not None and fp32.is_file() and recorded == file_sha256(fp32)
    except Exception:  # noqa: BLE001 - unreadable or foreign: not a companion
        return False


def maybe_same_network(path: Path, genotype_hash: str) -> bool:
    """Whether ``path`` is an ONNX of ours of this genotype (worth comparing graphs with)."""
    try:
        return ModelSpec.load(path, verify_hash=False).genotype_hash == genotype_hash
    except Exception:  # noqa: BLE001
        return False
