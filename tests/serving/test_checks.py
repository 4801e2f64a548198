"""What the front door lets through, request by request (pure checks; the real server under
hostile clients is in test_door.py): what a request declares against what it carries and the
model's bounds, one JSON reading that refuses what parsers disagree on, exact model names."""

import gzip
import json
import zlib

import numpy as np
import pytest

from ssr_deploy.serving.checks import (
    Limits,
    Refused,
    check_grpc_infer,
    decompress,
    http_infer_request,
    http_infer_response,
    load_json,
    proto_json,
)

pb = pytest.importorskip("tritonclient.grpc.service_pb2", reason="pip install "
                         "'ssr-deploy[serve]'")
LIMITS = Limits("ssrnet", max_batch=8, max_side=8192)


def _json(shape, data=None, binary=None, name="images", datatype="UINT8", **request):
    spec = {"name": name, "shape": shape, "datatype": datatype}
    if binary is not None:
        spec["parameters"] = {"binary_data_size": binary}
    else:
        spec["data"] = data
    return json.dumps({"inputs": [spec], **request}).encode()


@pytest.mark.parametrize("body, message", [
    (_json([1, 100000, 100000, 3], [1, 2, 3]), "H and W 1 to 8192"),
    (_json([1, 2, 2, 3], [1, 2, 3]), "declare 12 values; the request carries 3"),
    (_json([1, 1, 1, 3], [1, 2, 3, 4]), "declare 3 values; the request carries more"),
    (_json([9, 2, 2, 3], [0] * 108), "batch 1 to 8"),
    (_json([1, 2, 2, 4], [0] * 16), "3 channels"),
    (_json([1, 2, 2], [0] * 4), "send \\(batch, H, W, 3\\)"),
    (_json([1, 2, 2, 3], [0] * 12, datatype="FP32"), "UINT8, not FP32"),
    (_json([1, 2, 2, 3], [0] * 12, name="frames"), "'frames' is not the model's"),
    (_json([1, 1, 1, 3], [0, 256, 1]), "integer 0 to 255"),
    (_json([1, 1, 1, 3], [0, 1.5, 1]), "integer 0 to 255"),
    (_json([1, 1, 1, 3], [0, True, 1]), "integer 0 to 255"),
    (b"{not json", "not JSON"),
    (b'{"inputs": [{"name": "images", "shape": [1, 1, 1, 3], "datatype": "UINT8", '
     b'"data": [0, 0, NaN]}]}', "holds NaN"),
    (json.dumps({"inputs": []}).encode(), "send one input"),
    (json.dumps([1]).encode(), "a JSON object with 'inputs'"),
    (_json([1, 1, 1, 3], [0, 0, 0], outputs=[{"name": "labels", "parameters": {
        "shared_memory_region": "x"}}]), "one parameter, binary_data"),
])
def test_http_requests_that_declare_more_or_other_than_they_carry_are_refused(body, message):
    with pytest.raises(Refused, match=message) as e:
        http_infer_request(LIMITS, "ssrnet", "", body, None)
    assert e.value.status == 400


@pytest.mark.parametrize("body", [
    # S1/S2: a parser keeping the last key and one keeping the first saw different requests
    b'{"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3], "shape": [1, 1, 1, 3],'
    b' "datatype": "UINT8", "data": [1, 2, 3]}]}',
    b'{"inputs": [{"name": "images", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [1, '
    b'2, 3]}], "inputs": [{"name": "images", "shape": [1, 9, 9, 3], "datatype": "UINT8"}]}',
])
def test_a_key_given_twice_is_refused_whichever_comes_first(body):
    with pytest.raises(Refused, match="twice; send each key once"):
        http_infer_request(LIMITS, "ssrnet", "", body, None)
    with pytest.raises(Refused, match="twice"):
        load_json(body)


@pytest.mark.parametrize("model, version", [("ssrnet\x00", ""), ("ssrnet\x00x", ""),
                                            ("SSRNET", ""), ("other", ""), ("ssrnet", "2"),
                                            ("ssrnet", "1\x00")])
def test_only_the_served_model_by_its_exact_name_is_answered(model, version):
    with pytest.raises(Refused, match="unknown model|version 1 only") as e:
        http_infer_request(LIMITS, model, version, _json([1, 1, 1, 3], [0, 0, 0]), None)
    assert e.value.status == 404 and e.value.code == "NOT_FOUND"
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    with pytest.raises(Refused, match="unknown model|version 1 only"):
        check_grpc_infer(LIMITS, request)


def test_http_becomes_the_grpc_request_triton_gets_and_its_answer_comes_back():
    frame = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    header = _json([1, 2, 2, 3], binary=12, id="r7",
                   outputs=[{"name": "labels", "parameters": {"binary_data": True}}],
                   parameters={"priority": 2, "timeout": 1000})
    request, binary = http_infer_request(LIMITS, "ssrnet", "1", header + frame.tobytes(),
                                         str(len(header)))
    assert binary and request.id == "r7" and request.model_version == "1"
    assert list(request.inputs[0].shape) == [1, 2, 2, 3]
    assert request.raw_input_contents[0] == frame.tobytes()
    assert request.parameters["priority"].int64_param == 2
    assert [o.name for o in request.outputs] == ["labels"]
    nested, binary = http_infer_request(
        LIMITS, "ssrnet", "", _json([1, 2, 2, 3], frame.tolist()), None)
    assert not binary and nested.raw_input_contents[0] == frame.tobytes()
    response = pb.ModelInferResponse(model_name="ssrnet", model_version="1", id="r7",
                                     raw_output_contents=[bytes([1, 2, 3, 4])])
    response.outputs.add(name="labels", datatype="UINT8", shape=[1, 2, 2])
    headers, body = http_infer_response(response, binary=True)
    size = int(headers["inference-header-content-length"])
    meta = json.loads(body[:size])
    assert meta["id"] == "r7" and meta["outputs"][0]["parameters"]["binary_data_size"] == 4
    assert body[size:] == bytes([1, 2, 3, 4])
    headers, body = http_infer_response(response, binary=False)
    assert json.loads(body)["outputs"][0]["data"] == [1, 2, 3, 4]


def test_binary_requests_must_carry_what_they_declare():
    header = _json([1, 2, 2, 3], binary=12)
    with pytest.raises(Refused, match="declare 12 bytes; the request carries 4"):
        http_infer_request(LIMITS, "ssrnet", "", header + b"\0" * 4, str(len(header)))
    with pytest.raises(Refused, match="exceeds the body"):
        http_infer_request(LIMITS, "ssrnet", "", header, "99999")
    for bad in ("+12", "1_2", "-1", "0x10", " "):
        with pytest.raises(Refused, match="not a number"):
            http_infer_request(LIMITS, "ssrnet", "", header + b"\0" * 12, bad)


def test_grpc_requests_are_checked_the_same_way():
    request = pb.ModelInferRequest(model_name="ssrnet")
    tensor = request.inputs.add(name="images", datatype="UINT8")
    tensor.shape.extend([1, 100000, 100000, 3])
    request.raw_input_contents.append(b"\0" * 12)
    with pytest.raises(Refused, match="H and W 1 to 8192"):
        check_grpc_infer(LIMITS, request)
    del tensor.shape[:]
    tensor.shape.extend([1, 2, 2, 3])
    check_grpc_infer(LIMITS, request)
    bare = pb.ModelInferRequest(model_name="ssrnet", inputs=[tensor])
    with pytest.raises(Refused, match="declare 12 values; the request carries 0"):
        check_grpc_infer(LIMITS, bare)
    bare.inputs[0].contents.uint_contents.extend([256, 99999] + [0] * 10)  # once seen: passed
    with pytest.raises(Refused, match="every value 0 to 255"):
        check_grpc_infer(LIMITS, bare)
    shared = pb.ModelInferRequest(model_name="ssrnet", inputs=[tensor],
                                  raw_input_contents=[b"\0" * 12])
    shared.outputs.add(name="labels").parameters["shared_memory_region"].string_param = "x"
    with pytest.raises(Refused, match="shared memory is closed"):
        check_grpc_infer(LIMITS, shared)


def test_compressed_bodies_inflate_within_the_limit_only():
    data = b"x" * 1000
    assert decompress(gzip.compress(data), "gzip", 1000) == data
    assert decompress(zlib.compress(data), "deflate", 1000) == data
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB from 64 KiB
    with pytest.raises(Refused, match="inflates past 1048576 bytes") as e:
        decompress(bomb, "gzip", 1 << 20)
    assert e.value.status == 413
    with pytest.raises(Refused, match="not gzip data"):
        decompress(b"plain", "gzip", 100)
    with pytest.raises(Refused, match="send gzip, deflate or none"):
        decompress(b"x", "br", 100)


def test_proto_answers_read_as_triton_writes_them():
    stats = pb.ModelStatisticsResponse()
    model = stats.model_stats.add(name="ssrnet", version="1", inference_count=7)
    model.inference_stats.success.count = 3
    assert proto_json(stats) == {"model_stats": [{"name": "ssrnet", "version": "1",
                                                  "inference_count": 7, "inference_stats": {
                                                      "success": {"count": 3}}}]}
