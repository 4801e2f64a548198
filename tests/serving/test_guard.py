"""The server's front door: what a request declares is checked against what it carries and
the model's bounds before Triton allocates for it (unit cases here; the real server under a
hostile load in test_serve.py)."""

import json

import pytest

from ssr_deploy.serving.guard import Limits, Refused, check_grpc_infer, check_http_infer

LIMITS = Limits("ssrnet", max_batch=8, max_side=8192)


def _json(shape, data=None, binary=None, name="images", datatype="UINT8"):
    spec = {"name": name, "shape": shape, "datatype": datatype}
    if binary is not None:
        spec["parameters"] = {"binary_data_size": binary}
    else:
        spec["data"] = data
    return json.dumps({"inputs": [spec]}).encode()


@pytest.mark.parametrize("body, message", [
    (_json([1, 100000, 100000, 3], [1, 2, 3]), "H and W 1 to 8192"),
    (_json([1, 2, 2, 3], [1, 2, 3]), "declare 12 values; the request carries 3"),
    (_json([9, 2, 2, 3], [0] * 108), "batch 1 to 8"),
    (_json([1, 2, 2, 4], [0] * 16), "3 channels"),
    (_json([1, 2, 2], [0] * 4), "send \\(batch, H, W, 3\\)"),
    (_json([1, 2, 2, 3], [0] * 12, datatype="FP32"), "UINT8, not FP32"),
    (_json([1, 2, 2, 3], [0] * 12, name="frames"), "'frames' is not the model's"),
    (b"{not json", "not JSON"),
    (json.dumps({"inputs": []}).encode(), "send one input"),
])
def test_http_requests_that_declare_more_or_other_than_they_carry_are_refused(body, message):
    with pytest.raises(Refused, match=message):
        check_http_infer(LIMITS, "ssrnet", {}, body)


def test_http_binary_requests_must_carry_what_they_declare():
    header = _json([1, 2, 2, 3], binary=12)
    split = {"inference-header-content-length": str(len(header))}
    check_http_infer(LIMITS, "ssrnet", split, header + b"\0" * 12)
    with pytest.raises(Refused, match="declare 12 bytes; the request carries 4"):
        check_http_infer(LIMITS, "ssrnet", split, header + b"\0" * 4)
    with pytest.raises(Refused, match="exceeds the body"):
        check_http_infer(LIMITS, "ssrnet", {"inference-header-content-length": "99999"}, header)
    check_http_infer(LIMITS, "ssrnet", {}, _json([1, 2, 2, 3], [[[[0, 0, 0]] * 2] * 2]))
    check_http_infer(LIMITS, "other", {}, b"anything")  # another model: Triton answers it


def test_grpc_requests_are_checked_the_same_way():
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="ssrnet")
    tensor = request.inputs.add(name="images", datatype="UINT8")
    tensor.shape.extend([1, 100000, 100000, 3])
    request.raw_input_contents.append(b"\0" * 12)
    with pytest.raises(Refused, match="H and W 1 to 8192"):
        check_grpc_infer(LIMITS, request)
    del tensor.shape[:]
    tensor.shape.extend([1, 2, 2, 3])
    with pytest.raises(Refused, match="declare 12 values; the request carries 0"):
        check_grpc_infer(LIMITS, service_pb2.ModelInferRequest(model_name="ssrnet",
                                                               inputs=[tensor]))
    check_grpc_infer(LIMITS, request)
