"""OpenVINO's miscompile of signed int8 without AMX, in 9 nodes: a signed (s8, zero point
0) quantized Concat of a strided convolution and a max pool of the same input, feeding a
convolution (our downsampler's pattern). Prints OpenVINO's mean relative error against the
fake-quantized reference (onnxruntime with no fusion); ``u8`` quantizes the Concat unsigned.

    python tests/backends/openvino_repro.py s8|u8      (ONEDNN_MAX_CPU_ISA=AVX2 to cap)
"""

import sys

import numpy as np
import onnx.helper as h
import onnx.numpy_helper as nh
import onnxruntime as ort
import openvino as ov

rng = np.random.default_rng(0)


def qdq(name, scale, zp, axis=None):
    kw = {} if axis is None else {"axis": axis}
    nodes = [h.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"], **kw),
             h.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"],
                         [f"{name}_d"], **kw)]
    return nodes, [nh.from_array(np.asarray(scale, np.float32), f"{name}_s"),
                   nh.from_array(zp, f"{name}_z")]


def weight(name, cout, cin):
    w = rng.normal(0, 0.15, (cout, cin, 3, 3)).astype(np.float32)
    nodes, inits = qdq(name, np.abs(w).reshape(cout, -1).max(1) / 127, np.zeros(cout, np.int8),
                       0)
    return nodes, [*inits, nh.from_array(w, name)]


def model(signed: bool) -> bytes:
    nodes, inits = [], []
    for n, i in (qdq("x", 0.02, np.array(0, np.int8)), weight("w1", 12, 4),
                 weight("w2", 24, 16)):
        nodes += n
        inits += i
    nodes += [h.make_node("Conv", ["x_d", "w1_d"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
              h.make_node("MaxPool", ["x_d"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
              h.make_node("Concat", ["c1", "p1"], ["r"], axis=1)]
    n, i = qdq("r", 0.03, np.array(0, np.int8 if signed else np.uint8))
    nodes += [*n, h.make_node("Conv", ["r_d", "w2_d"], ["y"], pads=[1, 1, 1, 1],
                              strides=[2, 2])]
    graph = h.make_graph(nodes, "repro", [h.make_tensor_value_info("x", 1, [1, 4, 64, 128])],
                         [h.make_tensor_value_info("y", 1, [1, 24, 16, 32])], inits + i)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()


def error(signed: bool) -> float:
    graph = model(signed)
    x = np.abs(rng.normal(0, 1, (1, 4, 64, 128))).astype(np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(graph, b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled({0: x})[0]
    return float(np.abs(out - reference).mean() / np.abs(reference).mean())


if __name__ == "__main__":
    print(error(sys.argv[1] == "s8"))
