"""What a latency table measures and how: the options a build is continued under."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import click

from ssr_deploy.backends import BACKENDS
from ssr_deploy.errors import UsageError
from ssr_deploy.settings import CLASSES, SIZE, Ints, count, setting
from ssr_deploy.space import SearchSpace

CALIBRATE, CALIBRATE_INT8 = 12, 20  # whole networks a build calibrates on, by default
IO_KEY = "io"  # on a GPU: a frame's copy in and its labels' copy out
BLOCK_KEY = re.compile(r"stage(\d+)\.d(\d+)\.r([\d.]+)\.(\d+)-(\d+)-(\d+)")
#: settings a build is continued under only when they are the same
SAME = ("backend", "device", "precision", "int8", "size", "batch", "num_classes",
        "fp32_layers", "width_grid", "every_dilation", "repeats", "passes", "check_points",
        "calibrate", "io",
        "space", "fingerprint")


class _Modules(click.ParamType):
    """Comma-separated module names."""

    name = "MODULES"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        return tuple(v.strip() for v in str(value).split(",") if v.strip())


MODULES = _Modules()


def part_module(key: str) -> str | None:
    """The network module a part is (``stem``, ``head``, ``stages.N.down``); None for a
    block (a table times blocks by kind, not by where they sit)."""
    if key == "stem" or key.startswith("head."):
        return key.split(".")[0]
    if down := re.fullmatch(r"down(\d+)\.\d+", key):
        return f"stages.{down.group(1)}.down"
    return None


@dataclass(frozen=True)
class LutOptions:
    """A table's build settings, each with the ``lut build`` flag that sets it."""

    backend: str = setting("onnxruntime", "--backend",
                           "The runtime backend to time through (as `bench` runs it).",
                           type=click.Choice(BACKENDS))
    device: str = setting("cpu", "--device",
                          "cpu, or cuda / cuda:N (tensorrt always; torch and onnxruntime-gpu).")
    size: tuple[int, int] = setting((512, 1024), "--size",
                                    "The input size the network will run at.", type=SIZE)
    batch: int = count(1, "--batch")
    num_classes: int = setting(19, "--classes", "Output classes of the networks to be "
                               "searched: a number, or the genotype (zoo name or JSON) or "
                               "dataset (cityscapes:DIR, folder:DIR) to take them from.",
                               type=CLASSES)
    #: fp16: the fp16 graph (tensorrt), fp16 autocast (torch on cuda); bf16: OpenVINO's
    #: runtime precision on CPUs with bf16; int8: each part quantized (Q/DQ) as the backend's
    #: int8 export quantizes a network (any valid scales: timing needs the graph's shape);
    #: each backend's timer says what it takes
    precision: str = setting("fp32", "--precision", "fp16: tensorrt (the fp16 ONNX), torch on "
                             "cuda; bf16: openvino on CPUs with bf16; int8: onnxruntime, "
                             "openvino, tensorrt (each part quantized as their int8 export "
                             "quantizes a network).",
                             type=click.Choice(["fp32", "fp16", "bf16", "int8"]))
    #: openvino int8: the form (s8, u8, u8-7bit; default: the one this CPU's export tries
    #: first)
    int8_form: str | None = setting(None, "--int8-form", "openvino --precision int8: the "
                                    "form. [default: the one `export openvino` tries first on "
                                    "this CPU]", type=click.Choice(["s8", "u8", "u8-7bit"]))
    #: int8: modules kept in float, as ``--fallback auto`` or ``--fp32-layers`` kept them in
    #: the export (the parts of stem, head and stage downsamplers are not quantized, and the
    #: calibration's networks are exported with them in float)
    fp32_layers: tuple[str, ...] = setting((), "--fp32-layers", "int8: modules the export "
                                           "keeps in float (what --fallback auto kept, in "
                                           "its sidecar): stem, head, stages.N.down; "
                                           "repeatable, as export's, or comma-separated.",
                                           type=MODULES, multiple=True)
    #: whole networks measured during the build, to calibrate the sum of parts on (None:
    #: by precision, ``resolved``)
    calibrate: int | None = setting(None, "--calibrate", "Whole networks of the space measured "
                                    "end to end during the build, to calibrate the sum of "
                                    "parts on (0: the plain sum). [default: 20 for int8, whose "
                                    "parts alone are furthest from a network; 12 otherwise]",
                                    type=click.IntRange(0, 64))
    width_grid: tuple[int, int, int] = setting(  # widths measured: in, mid, out
        (9, 3, 9), "--width-grid", "Widths measured per block's in, mid and out width (the "
        "rest interpolated); 9 = every option of the paper's space.",
        type=Ints(3, "9,3,9", low=2))
    every_dilation: bool = setting(False, "--every-dilation", "Measure every dilation on the "
                                   "width grid (default: the first dilation; the others at "
                                   "the widest widths, as a ratio).")
    repeats: int = count(10, "--repeats", "Timed runs per part (the median is kept), after 2 "
                         "warm-up runs.")
    passes: int = count(2, "--passes", "Times each part is measured, in alternating order; "
                        "the least median is kept (a burst of other work during one pass does "
                        "not stay).")
    check_points: int = count(8, "--check", "Random off-grid blocks measured to report the "
                              "interpolation's error.", low=0)
    threads: int | None = setting(None, "--threads", "onnxruntime / openvino inference "
                                  "threads. [default: the library's]",
                                  type=click.IntRange(min=1))
    seed: int = 0

    def resolved(self) -> LutOptions:
        """The options with the calibration's default filled in: int8 parts, each with its
        own quantize and dequantize, add up to about twice a network (plain sum 16-93% off,
        against 3-50% for float), so the calibration carries the prediction and needs more
        networks (on 52 measured OpenVINO int8 networks, resampled: 12 left 93% within +-10%
        at the 10th percentile, 20 left 97%)."""
        if self.calibrate is not None:
            return self
        return dataclasses.replace(self, calibrate=CALIBRATE_INT8 if self.precision == "int8"
                                   else CALIBRATE)

    def validate(self, space: SearchSpace) -> None:
        from ssr_deploy.backends import parse_device, part_timer_class

        parse_device(self.device)
        part_timer_class(self.backend).check(self.backend, self.device, self.precision)
        timer = part_timer_class(self.backend)
        if self.int8_form is not None and (not timer.has_int8_forms
                                           or self.precision != "int8"):
            raise UsageError("--int8-form is the form of OpenVINO's int8: use it with "
                             "--backend openvino --precision int8")
        if self.fp32_layers:
            from ssr_deploy.latency.networks import NetworkClock

            if self.precision != "int8" or not NetworkClock.handles(self):
                raise UsageError("--fp32-layers: modules an int8 export keeps in float; use "
                                 "it with --precision int8 on onnxruntime or openvino (cpu)")
            kinds = {"stem", "head", *(f"stages.{s}.down" for s in range(len(space.stages)))}
            if odd := [m for m in self.fp32_layers if m not in kinds]:
                raise UsageError(f"--fp32-layers {','.join(odd)}: a table times the space's "
                                 "parts by kind, so it can keep in float only "
                                 f"{', '.join(sorted(kinds))}; single layers (stages.N.layers.K) "
                                 "are not kept apart in a table")
        if self.calibrate is not None and not 0 <= self.calibrate <= 64:
            raise UsageError(f"--calibrate {self.calibrate}: measure 0 to 64 whole networks "
                             "(by default 20 for int8, 12 otherwise; 0 keeps the plain sum of "
                             "parts)")
        if len(self.width_grid) != 3 or min(self.width_grid) < 2:
            raise UsageError(f"--width-grid {','.join(map(str, self.width_grid))}: give three "
                             "numbers (in, mid, out), each at least 2 (the widest and narrowest "
                             "widths)")
        if min(self.repeats, self.batch, self.passes) < 1 or self.check_points < 0:
            raise UsageError("--repeats, --passes and --batch are at least 1, --check at "
                             "least 0")
        multiple = 2 ** (len(space.stages) + 2)  # the deepest stage, then a half-res block
        if self.size[0] % multiple or self.size[1] % multiple:
            raise UsageError(f"--size {self.size[0]}x{self.size[1]}: height and width must be "
                             f"multiples of {multiple} for this space")

    @classmethod
    def of_table(cls, meta: dict) -> LutOptions:
        """The options a table was built with, those its times depend on (a table's meta)."""
        return cls(backend=meta["backend"], device=meta["device"], size=tuple(meta["size"]),
                   batch=meta["batch"], num_classes=meta["num_classes"],
                   precision=meta["precision"], int8_form=(meta.get("int8") or {}).get("form"),
                   fp32_layers=tuple(meta.get("fp32_layers") or ()),
                   **({"repeats": meta["repeats"]} if "repeats" in meta else {}))

    def int8_options(self):
        """How an int8 table's parts are quantized: as the backend's int8 export quantizes
        (its PartTimer says the target and the form)."""
        from ssr_deploy.backends import part_timer_class
        from ssr_deploy.export.precision import PrecisionOptions

        timer = part_timer_class(self.backend)
        form = self.int8_form or timer.default_int8_form()
        return PrecisionOptions("int8", int8_target=timer.int8_target,
                                **({"int8_form": form} if form else {}))
