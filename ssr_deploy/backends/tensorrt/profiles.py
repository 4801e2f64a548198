"""TensorRT optimisation profiles (min/opt/max input shapes): decided from the ONNX's ranges
and the user's --min/--opt/--max, with no TensorRT needed, so they are tested everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ssr_deploy.errors import UsageError
from ssr_deploy.spec import ModelSpec


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
        raise UsageError(f"{text!r} is not a shape; write BATCHxHEIGHTxWIDTH, e.g. 1x512x1024")
    return int(match[1]), int(match[2]), int(match[3])


def _onnx_ranges(spec: ModelSpec) -> dict[str, tuple[int, int, int]]:
    """(batch, h, w) at min/opt/max as the ONNX export allows them."""
    batch = spec.batch or (spec.batch_range[0],) * 3
    sizes = spec.sizes or (spec.input.size,) * 3
    return {k: (batch[i], *sizes[i]) for i, k in enumerate(("min", "opt", "max"))}


def optimization_profile(spec: ModelSpec, min_shape: str | None = None,
                         opt_shape: str | None = None, max_shape: str | None = None) -> Profile:
    """The profile for the ONNX described by ``spec``: its dynamic ranges, narrowed by the
    user's ``--min/--opt/--max`` (BxHxW). Anything outside what the ONNX allows is refused."""
    allowed = _onnx_ranges(spec)
    chosen = dict(allowed)
    for key, text in (("min", min_shape), ("opt", opt_shape), ("max", max_shape)):
        if text:
            chosen[key] = parse_bhw(text)
    lo, hi = allowed["min"], allowed["max"]
    for key, shape in chosen.items():
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
            fixed = "fixed" if lo == hi else "dynamic"
            raise UsageError(
                f"--{key} {'x'.join(map(str, shape))} is outside what the ONNX allows "
                f"({fixed}: {'x'.join(map(str, lo))} to {'x'.join(map(str, hi))}); re-export "
                "the ONNX with --dynamic-batch / --dynamic-size and a wider range")
        multiple = spec.input.size_multiple
        if shape[1] % multiple or shape[2] % multiple:
            raise UsageError(f"--{key} {'x'.join(map(str, shape))}: height and width must be "
                             f"multiples of {multiple}")
    if not all(a <= b <= c for a, b, c in zip(chosen["min"], chosen["opt"], chosen["max"],
                                              strict=True)):
        raise UsageError("profile shapes must satisfy min <= opt <= max in every dimension")
    nhwc = spec.input.layout == "NHWC"

    def layout(b: int, h: int, w: int) -> tuple[int, ...]:
        return (b, h, w, 3) if nhwc else (b, 3, h, w)

    return Profile(spec.input.name, *(layout(*chosen[k]) for k in ("min", "opt", "max")))
