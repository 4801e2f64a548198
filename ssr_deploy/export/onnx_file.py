"""An ONNX file as a user hands it in (to `export engine`, `export triton`): readable, made of
standard operators, every tensor's data the size its dimensions declare, and its external
data, if any, inside its own folder and present. One line for each way it is not, before any
work, so nothing else meets a truncated, escaping, custom-op or size-lying model."""

from __future__ import annotations

from pathlib import Path

import onnx

from ssr_deploy.errors import SsrDeployError

#: operator domains of standard ONNX (ssr-deploy's exports hold nothing else) and the ones
#: onnxruntime and TensorRT run without a plugin library (Q/DQ, fused ops)
DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
MAX_TENSOR_BYTES = 16 << 30  # one weight tensor; ours are a few MB


def check_onnx_file(path: str | Path) -> tuple[onnx.ModelProto, list[Path]]:
    """The model (without its external data) and the external data files it names."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise SsrDeployError(f"{path} is not a readable ONNX file ({type(e).__name__}: it may "
                             "be truncated); export it again with `ssr-deploy export onnx`"
                             ) from None
    custom = next((n for n in model.graph.node if n.domain not in DOMAINS), None)
    if custom is not None:
        raise SsrDeployError(f"{path.name} uses the operator {custom.domain}:{custom.op_type}, "
                             "which is not standard ONNX: no runtime here runs it without its "
                             "plugin library, and ssr-deploy's exports never hold one; export "
                             "the model again")
    folder = path.resolve().parent
    files: list[Path] = []
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    for tensor in tensors:
        _check_declared_size(path, tensor, folder)
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or folder not in target.parents:
            raise SsrDeployError(f"{path.name}: tensor {tensor.name!r} keeps its data at "
                                 f"{location!r}, outside the model's folder; refused (a model "
                                 "reads nothing outside its folder): export it again")
        if not target.is_file():
            raise SsrDeployError(f"{path.name}: its external data file {location} is missing "
                                 f"from {folder}; copy it beside the model")
        if target not in files:
            files.append(target)
    return model, files


def _check_declared_size(path: Path, tensor: onnx.TensorProto, folder: Path) -> None:
    """A tensor's dimensions must describe the bytes it has (a 4 TB declared initializer
    would be allocated by the builder before anything failed)."""
    import numpy as np

    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise SsrDeployError(f"{path.name}: tensor {tensor.name!r} has negative dimensions; "
                             "export it again")
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return  # strings and the like: not ours, and not sized by dims
    declared = int(np.prod(dims, dtype=np.float64)) * itemsize if dims else itemsize
    if declared > MAX_TENSOR_BYTES:
        raise SsrDeployError(f"{path.name}: tensor {tensor.name!r} declares {declared:,} bytes "
                             f"{dims}; refused (no weight of ours is over "
                             f"{MAX_TENSOR_BYTES >> 30} GiB): export the model again")
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        fields = {e.key: e.value for e in tensor.external_data}
        length = int(fields.get("length", declared) or declared)
        if length != declared:
            raise SsrDeployError(f"{path.name}: tensor {tensor.name!r} declares {declared:,} "
                                 f"bytes and stores {length:,}; export the model again")
    elif tensor.HasField("raw_data") and len(tensor.raw_data) != declared:
        raise SsrDeployError(f"{path.name}: tensor {tensor.name!r} declares {declared:,} bytes "
                             f"and holds {len(tensor.raw_data):,}; export the model again")
