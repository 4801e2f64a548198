"""What a request to ``ssr-deploy serve`` may be: checked after a well-kept server has parsed
it (HTTP/1.1 by uvicorn, gRPC by grpcio) and before anything reaches Triton.

Triton 2.51 allocates what a request declares before it reads the data (one HTTP/JSON request
declaring ``[1, 100000, 100000, 3]`` with 3 values made it allocate 30 GB and abort). So an
inference request must name the served model exactly, its input ``images`` (UINT8) with a
shape of (batch <= max_batch, H, W <= max_side, 3) whose element count is exactly the data
it carries; anything else is one :class:`Refused` naming the problem. HTTP requests are
translated here into the gRPC request Triton receives (and its answer back), so Triton never
parses what a client wrote: there is no second parser to disagree with ours.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np

#: Triton's APIs by the category ``serve --allow-api`` opens; health, metadata and inference
#: are always open, the rest closed unless opened.
CATEGORIES = {
    "health": ("ServerLive", "ServerReady", "ModelReady"),
    "metadata": ("ServerMetadata", "ModelMetadata"),
    "inference": ("ModelInfer", "ModelStreamInfer"),
    "shared-memory": ("SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
                      "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus",
                      "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister"),
    "model-config": ("ModelConfig",),
    "model-repository": ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"),
    "statistics": ("ModelStatistics",),
    "trace": ("TraceSetting",),
    "logging": ("LogSettings",),
}
ALWAYS_OPEN = ("health", "metadata", "inference")
RESTRICTED_APIS = tuple(c for c in CATEGORIES if c not in ALWAYS_OPEN)
CATEGORY_OF = {method: category for category, methods in CATEGORIES.items()
               for method in methods}
SERVICE = "/inference.GRPCInferenceService/"


class Refused(Exception):
    """A request refused at the door: ``status`` (HTTP), ``code`` (a gRPC status name) and
    one line."""

    CODES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             408: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT",
             429: "RESOURCE_EXHAUSTED", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE"}

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = self.CODES.get(status, "INVALID_ARGUMENT")


@dataclass(frozen=True)
class Limits:
    """What the served model takes and what a request may hold. ``max_request_bytes``: the
    largest request (decompressed); the bytes of all requests in flight together, counted as
    they arrive, are at most ``inflight_bytes``."""

    model: str
    max_batch: int
    max_side: int = 8192
    max_request_bytes: int = 256 << 20
    inflight_bytes: int = 512 << 20

    def check_model(self, name: object, version: object = "") -> None:
        """Refused unless ``name`` is the served model's exactly (no NUL, no look-alike) and
        ``version`` is its one version or none."""
        if name != self.model:
            raise Refused(404, f"unknown model {str(name)[:64]!r}: this server serves "
                          f"{self.model!r}")
        if version not in ("", "1"):
            raise Refused(404, f"model {self.model!r} has version 1 only, not "
                          f"{str(version)[:16]!r}")

    def check_input(self, name: object, datatype: object, shape: object) -> int:
        """The element count of a well-formed ``images`` input, or Refused."""
        if name != "images":
            raise Refused(400, f"input {str(name)[:40]!r} is not the model's; send 'images'")
        if datatype != "UINT8":
            raise Refused(400, f"images are UINT8, not {str(datatype)[:20]}")
        if not (isinstance(shape, list | tuple) and len(shape) == 4 and all(
                isinstance(d, int) and not isinstance(d, bool) for d in shape)):
            raise Refused(400, f"images of shape {str(shape)[:60]}: send (batch, H, W, 3)")
        batch, h, w, c = shape
        if not (1 <= batch <= self.max_batch and 1 <= h <= self.max_side
                and 1 <= w <= self.max_side and c == 3):
            raise Refused(400, f"images of shape {list(shape)}: batch 1 to {self.max_batch}, "
                          f"H and W 1 to {self.max_side}, 3 channels")
        return batch * h * w * 3


# ---- JSON ------------------------------------------------------------------------------
def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise Refused(400, f"the JSON names {twice[:40]!r} twice; send each key once")
    return dict(pairs)


def _no_constant(name: str):
    raise Refused(400, f"the JSON holds {name}; send numbers")


def load_json(text: bytes) -> object:
    """Strict JSON: a key given twice, NaN or Infinity, or bytes that are not UTF-8 JSON are
    Refused (parsers that keep the first or the last of two keys disagree: never guess)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Refused(400, "the request is not JSON") from None


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate request body (as tritonclient sends with compression), inflated to
    at most ``limit`` bytes; identity passes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise Refused(415, f"Content-Encoding {encoding[:20]!r}: send gzip, deflate or none")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise Refused(400, f"the body is not {encoding} data") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise Refused(413, f"the request inflates past {limit} bytes")
    return data


# ---- inference: HTTP (KServe v2 JSON + Triton's binary extension) -> gRPC -------------------
def _flat_uint8(data: object, count: int) -> bytes:
    """JSON ``data`` (flat or nested lists) of ``count`` integers 0 to 255, as bytes."""
    flat, stack = [], [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
        if len(flat) > count:
            break
    if len(flat) != count:
        raise Refused(400, f"images declare {count} values; the request carries "
                      f"{'more' if len(flat) > count else len(flat)}")
    if not all(type(v) is int and 0 <= v <= 255 for v in flat):
        raise Refused(400, "images are UINT8: every value an integer 0 to 255")
    return np.asarray(flat, np.uint8).tobytes()


def _parameters(given: object, where: str, message) -> None:
    """KServe request parameters into a gRPC ``map<string, InferParameter>``."""
    if given is None:
        return
    if not isinstance(given, dict):
        raise Refused(400, f"{where} parameters are a JSON object")
    for key, value in given.items():
        slot = message[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int) and -(1 << 63) <= value < (1 << 63):
            slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        elif isinstance(value, str):
            slot.string_param = value
        else:
            raise Refused(400, f"parameter {key[:40]!r}: a bool, a 64-bit integer, a number or "
                          "a string")


def http_infer_request(limits: Limits, model: str, version: str, body: bytes,
                       header_length: str | None):
    """(gRPC ``ModelInferRequest``, binary output wanted) from an HTTP inference body."""
    from tritonclient.grpc import service_pb2

    limits.check_model(model, version)
    size = len(body)
    if header_length is not None:
        if not header_length.strip().isdigit():
            raise Refused(400, "Inference-Header-Content-Length is not a number")
        size = int(header_length)
        if size > len(body):
            raise Refused(400, "Inference-Header-Content-Length exceeds the body")
    request = load_json(body[:size])
    if not isinstance(request, dict):
        raise Refused(400, "the request is a JSON object with 'inputs'")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise Refused(400, "send one input, 'images'")
    spec = inputs[0]
    count = limits.check_input(spec.get("name"), spec.get("datatype"), spec.get("shape"))
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict) or set(parameters) - {"binary_data_size"}:
        raise Refused(400, "images take one parameter, binary_data_size (shared memory is "
                      "served over gRPC only)")
    binary = parameters.get("binary_data_size")
    if binary is not None:
        if binary != count or len(body) - size != count:
            raise Refused(400, f"images declare {count} bytes; the request carries "
                          f"{len(body) - size}")
        raw = body[size:]
    elif "data" not in spec:
        raise Refused(400, "images carry neither data nor binary_data_size")
    else:
        raw = _flat_uint8(spec["data"], count)
    infer = service_pb2.ModelInferRequest(model_name=model, model_version=version,
                                          raw_input_contents=[raw])
    identity = request.get("id", "")
    if not isinstance(identity, str):
        raise Refused(400, "the request's id is a string")
    infer.id = identity
    tensor = infer.inputs.add(name="images", datatype="UINT8")
    tensor.shape.extend(spec["shape"])
    request_parameters = dict(request.get("parameters") or {})
    if not isinstance(request.get("parameters") or {}, dict):
        raise Refused(400, "the request's parameters are a JSON object")
    binary_out = bool(request_parameters.pop("binary_data_output", False))
    _parameters(request_parameters, "the request's", infer.parameters)
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise Refused(400, "outputs are a list of {'name': ...}")
        for output in outputs:
            wanted = output.get("parameters") or {}
            if not isinstance(wanted, dict) or set(wanted) - {"binary_data"}:
                raise Refused(400, "an output takes one parameter, binary_data")
            if not isinstance(output.get("name"), str):
                raise Refused(400, "an output's name is a string")
            infer.outputs.add(name=output["name"])
            binary_out = binary_out or bool(wanted.get("binary_data", False))
    return infer, binary_out


def http_infer_response(response, binary: bool) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the HTTP answer to a gRPC ``ModelInferResponse``: JSON with the
    outputs' data, or a JSON header followed by the outputs' bytes."""
    header = {"model_name": response.model_name, "model_version": response.model_version,
              "outputs": []}
    if response.id:
        header["id"] = response.id
    blobs = []
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            dtype = {"UINT8": np.uint8, "INT32": np.int32}.get(tensor.datatype, np.uint8)
            entry["data"] = np.frombuffer(raw, dtype).tolist()
        header["outputs"].append(entry)
    text = json.dumps(header, separators=(",", ":")).encode()
    if not binary:
        return {"content-type": "application/json"}, text
    return ({"content-type": "application/octet-stream",
             "inference-header-content-length": str(len(text))}, text + b"".join(blobs))


# ---- inference: gRPC ------------------------------------------------------------------------
def check_grpc_infer(limits: Limits, request) -> None:
    """A gRPC ``ModelInferRequest`` against ``limits``."""
    limits.check_model(request.model_name, request.model_version)
    if len(request.inputs) != 1:
        raise Refused(400, "send one input, 'images'")
    tensor = request.inputs[0]
    count = limits.check_input(tensor.name, tensor.datatype, list(tensor.shape))
    if tensor.parameters or any(o.parameters for o in request.outputs):
        raise Refused(400, "images and outputs take no parameters here (shared memory is "
                      "closed: serve --allow-api shared-memory opens it)")
    if request.raw_input_contents:
        carried = sum(len(raw) for raw in request.raw_input_contents)
    else:
        values = tensor.contents.uint_contents
        carried = len(values)
        if carried == count and max(values, default=0) > 255:
            raise Refused(400, "images are UINT8: every value 0 to 255")
    if carried != count:
        raise Refused(400, f"images declare {count} values; the request carries {carried}")


# ---- the other APIs' answers, as Triton's HTTP front writes them ----------------------------
def proto_json(message) -> dict:
    """A protobuf message as JSON values, 64-bit integers as numbers (protobuf's own JSON
    writes them as strings; Triton's HTTP front writes numbers)."""
    return {field.name: _json_value(field, value) for field, value in message.ListFields()}


def _json_value(field, value):
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        inner = entry.fields_by_name["value"]
        return {k: _json_scalar(inner, v) for k, v in value.items()}
    if field.is_repeated:
        return [_json_scalar(field, v) for v in value]
    return _json_scalar(field, value)


def _json_scalar(field, value):
    if field.type == field.TYPE_MESSAGE:
        return proto_json(value)
    if field.type == field.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if field.type == field.TYPE_BYTES:
        import base64

        return base64.b64encode(value).decode()
    return value
