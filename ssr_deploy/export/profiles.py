"""Optimisation profiles and engine/machine compatibility: the TensorRT decisions that need
no TensorRT, so they are tested everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ssr_deploy.errors import SsrDeployError


@dataclass(frozen=True)
class Profile:
    """Input shapes (min, opt, max) of one optimisation profile, in the input's layout."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.name, "min": list(self.min), "opt": list(self.opt),
                "max": list(self.max)}


def parse_bhw(text: str) -> tuple[int, int, int]:
    """``"4x512x1024"`` -> (4, 512, 1024): batch x height x width."""
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", text or "")
    if not match:
        raise SsrDeployError(f"{text!r} is not a shape; write BATCHxHEIGHTxWIDTH, e.g. 1x512x1024")
    return int(match[1]), int(match[2]), int(match[3])


def _onnx_ranges(meta: dict[str, Any]) -> dict[str, tuple[tuple[int, int, int], ...]]:
    """(batch, h, w) at min/opt/max as the ONNX export allows them."""
    inp, dyn = meta["input"], meta["dynamic"]
    h, w = inp["size"]
    batch = (dyn["batch"]["min"], dyn["batch"]["opt"], dyn["batch"]["max"]) if dyn["batch"] \
        else (abs(inp["shape"][0]),) * 3
    sizes = [tuple(dyn["size"][k]) for k in ("min", "opt", "max")] if dyn["size"] \
        else [(h, w)] * 3
    return {k: (batch[i], *sizes[i]) for i, k in enumerate(("min", "opt", "max"))}


def optimization_profile(meta: dict[str, Any], min_shape: str | None = None,
                         opt_shape: str | None = None, max_shape: str | None = None) -> Profile:
    """The profile for the ONNX described by ``meta``: its dynamic ranges, narrowed by the
    user's ``--min/--opt/--max`` (BxHxW). Anything outside what the ONNX allows is refused."""
    allowed = _onnx_ranges(meta)
    chosen = dict(allowed)
    for key, text in (("min", min_shape), ("opt", opt_shape), ("max", max_shape)):
        if text:
            chosen[key] = parse_bhw(text)
    lo, hi = allowed["min"], allowed["max"]
    for key, shape in chosen.items():
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
            fixed = "fixed" if lo == hi else "dynamic"
            raise SsrDeployError(
                f"--{key} {'x'.join(map(str, shape))} is outside what the ONNX allows "
                f"({fixed}: {'x'.join(map(str, lo))} to {'x'.join(map(str, hi))}); re-export "
                "the ONNX with --dynamic-batch / --dynamic-size and a wider range")
        multiple = meta["input"]["size_multiple"]
        if shape[1] % multiple or shape[2] % multiple:
            raise SsrDeployError(f"--{key} {'x'.join(map(str, shape))}: height and width must be "
                                 f"multiples of {multiple}")
    if not all(a <= b <= c for a, b, c in zip(chosen["min"], chosen["opt"], chosen["max"],
                                              strict=True)):
        raise SsrDeployError("profile shapes must satisfy min <= opt <= max in every dimension")
    nhwc = meta["input"]["layout"] == "NHWC"

    def layout(b: int, h: int, w: int) -> tuple[int, ...]:
        return (b, h, w, 3) if nhwc else (b, 3, h, w)

    return Profile(meta["input"]["name"], *(layout(*chosen[k]) for k in ("min", "opt", "max")))


def check_compatibility(meta: dict[str, Any], tensorrt_version: str, gpu: dict[str, Any],
                        engine_name: str = "the engine") -> list[str]:
    """Refuse an engine built with another TensorRT or for another compute capability, with
    one line that says which and how to rebuild; return warnings (same chip, other board)."""
    built = meta.get("tensorrt", {})
    built_version, built_gpu = built.get("version"), built.get("gpu", {})
    rebuild = f"rebuild it here: ssr-deploy export engine {meta.get('onnx', 'model.onnx')} -o " \
              f"{engine_name}"
    if built_version != tensorrt_version:
        raise SsrDeployError(f"{engine_name} was built with TensorRT {built_version}, this machine "
                             f"has TensorRT {tensorrt_version}; engines do not move between "
                             f"TensorRT versions: {rebuild}")
    if built_gpu.get("compute_capability") != gpu.get("compute_capability"):
        raise SsrDeployError(f"{engine_name} was built for {built_gpu.get('name')} (sm_"
                             f"{built_gpu.get('compute_capability', '?').replace('.', '')}), this "
                             f"GPU is {gpu.get('name')} (sm_"
                             f"{gpu.get('compute_capability', '?').replace('.', '')}); {rebuild}")
    if built_gpu.get("name") != gpu.get("name"):
        return [f"{engine_name} was tuned on {built_gpu.get('name')}, running on {gpu.get('name')}"
                " (same compute capability): it runs, but rebuilding here may be faster"]
    return []
