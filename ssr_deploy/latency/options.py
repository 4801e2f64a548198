"""What a latency table measures and how: the options a build is continued under."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ssr_deploy.errors import UsageError
from ssr_deploy.space import SearchSpace

IO_KEY = "io"  # on a GPU: a frame's copy in and its labels' copy out
BLOCK_KEY = re.compile(r"stage(\d+)\.d(\d+)\.r([\d.]+)\.(\d+)-(\d+)-(\d+)")
#: settings a build is continued under only when they are the same
SAME = ("backend", "device", "precision", "int8", "size", "batch", "num_classes",
        "width_grid", "every_dilation", "repeats", "passes", "check_points", "calibrate", "io",
        "space", "fingerprint")


@dataclass(frozen=True)
class LutOptions:
    backend: str = "onnxruntime"
    device: str = "cpu"
    size: tuple[int, int] = (512, 1024)
    batch: int = 1
    num_classes: int = 19
    #: fp16: the fp16 graph (tensorrt), fp16 autocast (torch on cuda); bf16: OpenVINO's
    #: runtime precision on CPUs with bf16; int8: each part quantized (Q/DQ) as the backend's
    #: int8 export quantizes a network (any valid scales: timing needs the graph's shape);
    #: each backend's timer says what it takes
    precision: str = "fp32"
    #: openvino int8: the form (s8, u8, u8-7bit; default: the one this CPU's export tries
    #: first)
    int8_form: str | None = None
    #: whole networks measured during the build, to calibrate the sum of parts on
    calibrate: int = 12
    width_grid: tuple[int, int, int] = (9, 3, 9)  # widths measured: in, mid, out
    every_dilation: bool = False
    repeats: int = 10
    passes: int = 2  # each part timed once per pass, passes in alternating order
    check_points: int = 8
    threads: int | None = None  # onnxruntime intra-op threads (default: its own)
    seed: int = 0

    def validate(self, space: SearchSpace) -> None:
        from ssr_deploy.backends import parse_device, part_timer_class

        parse_device(self.device)
        part_timer_class(self.backend).check(self.backend, self.device, self.precision)
        timer = part_timer_class(self.backend)
        if self.int8_form is not None and (not timer.has_int8_forms
                                           or self.precision != "int8"):
            raise UsageError("--int8-form is the form of OpenVINO's int8: use it with "
                             "--backend openvino --precision int8")
        if not 0 <= self.calibrate <= 64:
            raise UsageError(f"--calibrate {self.calibrate}: measure 0 to 64 whole networks "
                             "(12 by default; 0 keeps the plain sum of parts)")
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

    def int8_options(self):
        """How an int8 table's parts are quantized: as the backend's int8 export quantizes
        (its PartTimer says the target and the form)."""
        from ssr_deploy.backends import part_timer_class
        from ssr_deploy.export.precision import PrecisionOptions

        timer = part_timer_class(self.backend)
        form = self.int8_form or timer.default_int8_form()
        return PrecisionOptions("int8", int8_target=timer.int8_target,
                                **({"int8_form": form} if form else {}))
