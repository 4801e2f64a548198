"""The int8 forms an OpenVINO IR can take, and which of them each kind of CPU runs correctly
(``ssr_deploy.cpu`` says the kind): what ``export openvino`` tries, and what the backend
checks an IR against when it is loaded on a CPU of another kind. All are Q/DQ on convolution
inputs, per-channel int8 weights, per-tensor activations; OpenVINO fuses them into its int8
kernels.

- ``s8``: signed activations, zero point 0 (TensorRT's form, and the fastest on AMX).
- ``u8``: unsigned activations (zero point 0 after a ReLU, where nearly every convolution
  reads; asymmetric at the image), 8-bit weights.
- ``u8-7bit``: ``u8`` with 7-bit weights, so no product pair overflows the 16-bit sum of the
  int8 instructions CPUs without VNNI use (OpenVINO's "saturation issue").

Measured with OpenVINO 2026.4.1 (the trained demo network, its labels against fp32; the
fake-quantized graph's own agreement, which a correct kernel reproduces, is ~99.0%):

| CPU kind                  | s8     | u8     | u8-7bit |
|---------------------------|--------|--------|---------|
| AMX (Intel Xeon)          | 99.5%  |        |         |
| VNNI (AMD EPYC Zen 4)     | 85.4%  | 99.3%  | 99.0%   |
| AVX2 / AVX-512, no VNNI   | 77.4%  | 96.9%  | 99.0%   |

The ``s8`` failure without AMX is OpenVINO's: a signed int8 Concat of a convolution and a
max-pool branch (our downsampler) feeding a convolution is computed ~25% off (the CPU plugin
expects unsigned activations on convolutions, openvinotoolkit/openvino#10730; a 9-node
reproduction is in tests/backends/test_openvino_forms.py); without VNNI the first convolution,
on the signed image, also saturates. ``u8`` saturates there too; ``u8-7bit`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from ssr_deploy.cpu import TITLES, Cpu


@dataclass(frozen=True)
class Int8Form:
    name: str
    activations: str
    weight_bits: int
    symmetric: bool

    @property
    def text(self) -> str:
        return f"{self.name} ({self.activations}, {self.weight_bits}-bit weights)"


FORMS = {
    "s8": Int8Form("s8", "int8 activations, zero point 0", 8, True),
    "u8": Int8Form("u8", "uint8 activations", 8, False),
    "u8-7bit": Int8Form("u8-7bit", "uint8 activations", 7, False),
}
#: the forms tried on each kind, fastest first as measured there
CANDIDATES = {"amx": ("s8", "u8"), "vnni": ("u8", "u8-7bit"), "avx512": ("u8-7bit",),
              "avx2": ("u8-7bit",), "other": ("u8-7bit",)}
#: form -> the kinds OpenVINO computes it wrong on, and why
WRONG = {
    "s8": (("vnni", "avx512", "avx2", "other"),
           "OpenVINO computes a signed int8 Concat feeding a convolution wrong without AMX"),
    "u8": (("avx512", "avx2", "other"),
           "8-bit weights overflow the 16-bit sums of int8 instructions without VNNI"),
}


def candidates(cpu: Cpu) -> tuple[str, ...]:
    return CANDIDATES[cpu.kind]


def known_wrong(form: str, cpu: Cpu) -> str | None:
    """Why ``form`` is known to run wrong on ``cpu``'s kind, or None."""
    kinds, why = WRONG.get(form, ((), ""))
    return f"{why} ({TITLES[cpu.kind]})" if cpu.kind in kinds else None


def check_here(path, spec, run, cpu: Cpu | None = None) -> list[str]:
    """Notes for an int8 IR loaded here (``run``: batch -> labels, the IR compiled here):
    said when it was tuned on a CPU of another kind; where its form is known to run wrong on
    this kind, re-verified against the fp32 ONNX beside it (refused below its gate, or when
    that ONNX is not there). IRs from before forms were recorded are ``s8``."""
    from ssr_deploy.cpu import this_cpu
    from ssr_deploy.errors import SsrDeployError

    if spec.precision != "int8" or spec.openvino is None:
        return []
    cpu = cpu or this_cpu()
    q = spec.quantization
    form, tuned = (q.form if q and q.form else "s8"), (q.cpu if q and q.cpu else {})
    notes = []
    if tuned.get("kind") and tuned.get("kind") != cpu.kind:
        notes.append(f"{path.name}: int8 form {form} tuned on {tuned.get('name')} "
                     f"({TITLES.get(tuned['kind'], tuned['kind'])}), running on {cpu.title}")
    why = known_wrong(form, cpu)
    if why is None:
        return notes
    again = (f"export it again on this machine (ssr-deploy export openvino "
             f"{spec.fp32_onnx or 'model.onnx'} -o {path.name} --precision int8 --calib DIR): "
             "it chooses a form this CPU runs correctly")
    agreement = _reverified(path, spec, run)
    gate = (spec.precision_check.min_agreement if spec.precision_check
            and spec.precision_check.min_agreement else 0.995)
    if agreement is None:
        raise SsrDeployError(f"{path.name} is int8 in the {form} form, known to run wrong on "
                             f"this CPU: {why}; {again}, or keep its fp32 ONNX "
                             f"{spec.fp32_onnx or ''} beside it to have it re-verified here")
    if agreement < gate:
        raise SsrDeployError(f"{path.name} is int8 in the {form} form ({why}): re-verified "
                             f"here, {100 * agreement:.2f}% of labels as fp32, below "
                             f"{100 * gate:.2f}%; {again}")
    notes.append(f"{path.name}: int8 form {form} re-verified on this CPU: "
                 f"{100 * agreement:.2f}% of labels as fp32")
    return notes


def _reverified(path, spec, run, frames: int = 8) -> float | None:
    """This IR's label agreement with its fp32 ONNX (beside it, its sha256 as recorded) on
    street-like frames, run here; None when that ONNX is not there."""
    import numpy as np

    from ssr_deploy.backends.onnxruntime import new_session
    from ssr_deploy.data.synthetic import street_frames
    from ssr_deploy.preprocess import frames_to_input
    from ssr_deploy.spec import file_sha256

    fp32 = path.parent / (spec.fp32_onnx or "")
    if not spec.fp32_onnx or not fp32.is_file() or (
            spec.fp32_onnx_sha256 and file_sha256(fp32) != spec.fp32_onnx_sha256):
        return None
    session = new_session(fp32)
    name = session.get_inputs()[0].name
    same = []
    for frame in street_frames(frames, *spec.input.size, seed=5):
        x = frames_to_input(frame[None], spec.input)
        same.append(np.mean(run(x) == session.run(None, {name: x})[0]))
    return float(np.mean(same))
