"""The CPU's own limit, for runtime_cpu.py: one compute-bound convolution (3x3, 128 to 128
channels at 128x256: 4.83 GMACs, the network's widest kind of layer at its 1/8 scale) through
each runtime and precision, as GMAC/s, and from those the floor a network's MACs put on its
time: how far each path is from the machine.

    python benchmarks/cpu_peak.py            # prints the table
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as h
import onnx.numpy_helper as nh

SHAPE = (1, 128, 128, 256)  # N, C, H, W
KERNEL = 3
MACS = SHAPE[1] * SHAPE[1] * KERNEL * KERNEL * SHAPE[2] * SHAPE[3]


def conv_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, (SHAPE[1], SHAPE[1], KERNEL, KERNEL)).astype(np.float32)
    node = h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")
    graph = h.make_graph([node], "peak", [h.make_tensor_value_info("x", 1, SHAPE)],
                         [h.make_tensor_value_info("y", 1, SHAPE)], [nh.from_array(weight, "w")])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def int8_graph(fp32: onnx.ModelProto, form: str) -> onnx.ModelProto:
    """The convolution quantized as our exports quantize: ``cpu`` (onnxruntime's form), or an
    OpenVINO form (``s8``, ``u8``, ``u8-7bit``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [{"x": np.abs(np.random.default_rng(i).normal(0, 1, SHAPE)).astype(
                np.float32)} for i in range(2)]

        def get_next(self):
            return self.left.pop() if self.left else None

    signed = form == "s8"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(fp32, str(src))
        quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=form in ("cpu", "u8-7bit"),
                        activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": signed, "WeightSymmetric": True,
                                       "OpTypesToExcludeOutputQuantization":
                                           [] if form == "cpu" else ["Conv"]})
        return onnx.load(str(out))


def _median_ms(run, iters: int = 8) -> float:
    run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def peaks(openvino_form: str | None) -> dict[str, dict]:
    """GMAC/s of the convolution per path: onnxruntime fp32 and int8 (its CPU form),
    OpenVINO fp32, bf16 (where native) and int8 (``openvino_form``)."""
    import onnxruntime as ort

    from ssr_deploy.backends.openvino import library as ov

    x = np.abs(np.random.default_rng(1).normal(0, 1, SHAPE)).astype(np.float32)
    fp32 = conv_graph()
    runs = {}
    for name, graph in (("onnxruntime fp32", fp32), ("onnxruntime int8",
                                                     int8_graph(fp32, "cpu"))):
        session = ort.InferenceSession(graph.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        runs[name] = lambda s=session: s.run(None, {"x": x})
    float_paths = [("openvino fp32", fp32, "fp32")]
    if ov.bf16_support() == "native":
        float_paths.append(("openvino bf16", fp32, "bf16"))
    if openvino_form:
        float_paths.append(("openvino int8", int8_graph(fp32, openvino_form),
                            ov.float_precision(None)))
    for name, graph, precision in float_paths:
        compiled = ov.CompiledModels(ov.read_model(graph.SerializeToString()), precision)
        runs[name] = lambda c=compiled: c(x)
    out = {}
    for name, run in runs.items():
        ms = _median_ms(run)
        out[name] = {"ms": ms, "gmacs_per_s": MACS / ms / 1e6}
    return out


def floor_ms(network_gmacs: float, peak: dict[str, dict], path: str,
             float_share: float = 0.0, float_path: str | None = None) -> float | None:
    """The time a network of ``network_gmacs`` cannot beat on ``path`` at this CPU's peak;
    ``float_share`` of its MACs at ``float_path``'s peak instead (an int8 network's modules
    kept float)."""
    if path not in peak:
        return None
    rate = peak[path]["gmacs_per_s"]
    ms = network_gmacs * (1 - float_share) / rate * 1e3
    if float_share and float_path in peak:
        ms += network_gmacs * float_share / peak[float_path]["gmacs_per_s"] * 1e3
    return ms


if __name__ == "__main__":
    from ssr_deploy.backends.openvino.forms import candidates
    from ssr_deploy.cpu import this_cpu

    for name, row in peaks(candidates(this_cpu())[0]).items():
        print(f"{name:20s} {row['ms']:8.1f} ms  {row['gmacs_per_s']:8.1f} GMAC/s")
