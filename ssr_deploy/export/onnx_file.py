"""An ONNX file as a user hands it in (to `export engine`, `export triton`): readable, and
its external data, if any, inside its own folder and present. One line for each way it is
not, before any work, so nothing else meets a truncated or escaping model."""

from __future__ import annotations

from pathlib import Path

import onnx

from ssr_deploy.errors import SsrDeployError


def check_onnx_file(path: str | Path) -> tuple[onnx.ModelProto, list[Path]]:
    """The model (without its external data) and the external data files it names."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise SsrDeployError(f"{path} is not a readable ONNX file ({type(e).__name__}: it may "
                             "be truncated); export it again with `ssr-deploy export onnx`"
                             ) from None
    folder = path.resolve().parent
    files: list[Path] = []
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    for tensor in tensors:
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
