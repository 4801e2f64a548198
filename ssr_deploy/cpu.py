"""What this CPU computes int8 and bf16 with: its kind, as far as the int8 kernels of
OpenVINO (oneDNN) and onnxruntime differ between kinds.

- ``amx``: AMX (Intel Xeon 4th gen and later): int8 and bf16 tiles.
- ``vnni``: VNNI without AMX (AVX-512 VNNI: AMD EPYC Zen 4, Intel Xeon 2nd/3rd gen; AVX-VNNI:
  Intel Core 12th gen and later): int8 dot products without an intermediate 16-bit sum.
- ``avx512``: AVX-512 without VNNI (Intel Xeon 1st gen): int8 products pass through a
  saturating 16-bit sum (``vpmaddubsw``).
- ``avx2``: AVX2 without VNNI (most AMD EPYC before Zen 4, older Intel): as ``avx512``.

The flags come from /proc/cpuinfo, capped by ``ONEDNN_MAX_CPU_ISA`` when it is set (oneDNN,
inside OpenVINO, then uses no newer instructions: set to AVX2 on an AVX-512 machine, the
int8 kernels and their saturation are the AVX2 ones), so what is chosen follows the kernels
that will run.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

KINDS = ("other", "avx2", "avx512", "vnni", "amx")  # in order of int8 capability
TITLES = {"amx": "AMX", "vnni": "VNNI without AMX", "avx512": "AVX-512 without VNNI",
          "avx2": "AVX2 without VNNI", "other": "no AVX2"}
#: ONEDNN_MAX_CPU_ISA values -> the kind they cap at, and whether bf16 instructions remain
ISA_CAPS = {"SSE41": ("other", False), "AVX": ("other", False), "AVX2": ("avx2", False),
            "AVX2_VNNI": ("vnni", False), "AVX2_VNNI_2": ("vnni", True),
            "AVX512_CORE": ("avx512", False), "AVX512_CORE_VNNI": ("vnni", False),
            "AVX512_CORE_BF16": ("vnni", True), "AVX512_CORE_FP16": ("vnni", True),
            "AVX10_1_512": ("vnni", True), "AVX512_CORE_AMX": ("amx", True),
            "AVX512_CORE_AMX_FP16": ("amx", True), "AVX10_1_512_AMX": ("amx", True),
            "AVX10_1_512_AMX_FP16": ("amx", True), "ALL": ("amx", True),
            "DEFAULT": ("amx", True)}
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "avx_ne_convert"}


@dataclass(frozen=True)
class Cpu:
    """A CPU as far as the int8 and bf16 kernels care: ``flags`` (the ones that matter),
    ``kind`` (see the module), ``bf16`` (native bf16 instructions), ``name``."""

    name: str
    flags: tuple[str, ...]
    kind: str
    bf16: bool
    capped: str | None = None  # ONEDNN_MAX_CPU_ISA, when it was set

    @property
    def title(self) -> str:
        cap = f", kernels capped at {self.capped}" if self.capped else ""
        return f"{self.name} ({TITLES[self.kind]}{cap})"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "flags": list(self.flags),
                "bf16": self.bf16, **({"capped": self.capped} if self.capped else {})}


RELEVANT = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "amx_int8", "amx_bf16", "avx_ne_convert")


def kind_of(flags: set[str] | frozenset[str]) -> str:
    if "amx_int8" in flags:
        return "amx"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    if flags & {"avx512bw", "avx512f"}:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def describe(flags: set[str], name: str = "this CPU", cap: str | None = None) -> Cpu:
    """The Cpu of ``flags`` (the /proc/cpuinfo names), ``cap``ped as ONEDNN_MAX_CPU_ISA
    caps it: how a CPU of another kind is described in tests and sidecars."""
    kind, bf16 = kind_of(flags), bool(flags & BF16_FLAGS)
    if cap:
        capped_kind, capped_bf16 = ISA_CAPS.get(cap.upper(), (kind, bf16))
        if KINDS.index(capped_kind) < KINDS.index(kind):
            kind = capped_kind
        bf16 = bf16 and capped_bf16
    return Cpu(name, tuple(sorted(flags & set(RELEVANT))), kind, bf16,
               cap.upper() if cap else None)


def proc_flags() -> set[str]:
    """This CPU's feature flags (Linux), else an empty set."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return set(match[1].split()) if match else set()


def _model_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
        if match:
            return match[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def this_cpu() -> Cpu:
    """This machine's Cpu (cached: the flags do not change while a process runs)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return describe(proc_flags(), _model_name(), cap)
