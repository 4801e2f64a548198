"""Automatic mixed precision for int8 (``--fallback auto``): which genotype modules stay out
of int8 so that the labels hold.

Sensitivity: calibration runs once; then each module that has convolutions is kept out of
int8 on its own (everything else int8, from the same cached ranges) and the label agreement
with fp32 that this buys is measured on the verification frames. Selection: modules in order
of what they buy per share of the MACs they take out of int8 (a knapsack's greedy order: the
MACs are what int8 is for) are kept out one at a time, each step checked as a whole graph
(gains do not add up exactly); a module that does not raise the agreement is put back. It
stops as soon as the agreement reaches ``min_agreement``. Kept modules are fp16 in the
TensorRT form (TensorRT's int8 with fp16 fallback) and fp32 in the CPU form.

One module at a time sees what one module's quantization costs. The TensorRT form quantizes
convolution inputs only, so each rounding belongs to the module that reads the tensor; the
CPU form also rounds convolution outputs, and a loss that needs two modules kept out
together is not found one at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx

from ssr_deploy.errors import PrecisionCheckError
from ssr_deploy.export.precision_check import Fp32Check, module_macs
from ssr_deploy.names import module_of_node
from ssr_deploy.progress import track


@dataclass
class Trial:
    """One int8 graph tried: the modules kept out, its graph and its check."""

    kept: tuple[str, ...]
    graph: onnx.ModelProto
    report: dict[str, Any]

    @property
    def agreement(self) -> float:
        return self.report["label_agreement"]


def candidate_modules(fp32: onnx.ModelProto, pinned: list[str]) -> list[str]:
    """Modules with a convolution to quantize, in graph order, less those whose nodes are all
    pinned (``--fp32-layers``)."""
    modules: list[str] = []
    for node in fp32.graph.node:
        module = module_of_node(node.name)
        if node.op_type == "Conv" and node.name not in pinned and module not in modules:
            modules.append(module)
    return modules


def select(fp32: onnx.ModelProto, quantize: Callable[[tuple[str, ...]], onnx.ModelProto],
           check: Fp32Check, pinned: list[str], progress: bool = False
           ) -> tuple[Trial, dict[str, Any]]:
    """The int8 graph with the fewest modules kept out (greedy, see the module's text) that
    reaches the check's threshold, and the record the sidecar keeps. ``quantize(kept)``
    returns the int8 graph with those modules kept out. Raises when none reaches it."""
    macs = module_macs(fp32, check.spec)
    total = sum(macs.values()) or 1
    pinned_modules = {module_of_node(n.name) for n in fp32.graph.node
                      if n.op_type == "Conv" and n.name in pinned}

    def share(kept: tuple[str, ...]) -> float:
        """The share of the MACs out of int8: ``kept`` and the pinned modules."""
        return sum(macs.get(m, 0) for m in pinned_modules | set(kept)) / total

    def trial(kept: tuple[str, ...]) -> Trial:
        graph = quantize(kept)
        return Trial(kept, graph, check(graph, worst=False))

    base = trial(())
    record: dict[str, Any] = {"mode": "auto", "agreement_all_int8": base.agreement}
    if base.report["passed"]:
        return base, {**record, "kept": [], "macs_out_of_int8": share(()), "sensitivity": []}
    modules = candidate_modules(fp32, pinned)
    alone = {m: trial((m,)) for m in track(modules, "fallback: each module kept out of int8",
                                           unit="module", enabled=progress)}
    sensitivity = [{"module": m, "agreement_kept_out": t.agreement,
                    "gain": t.agreement - base.agreement, "macs_share": macs.get(m, 0) / total}
                   for m, t in alone.items()]
    order = sorted((r for r in sensitivity if r["gain"] > 0),
                   key=lambda r: -r["gain"] / max(r["macs_share"], 1e-9))
    best = base
    for row in order:
        kept = (*best.kept, row["module"])
        attempt = alone[row["module"]] if not best.kept else trial(kept)
        if attempt.agreement > best.agreement:
            best = attempt
        if best.report["passed"]:
            break
    record.update(kept=list(best.kept), macs_out_of_int8=share(best.kept),
                  sensitivity=sensitivity)
    if not best.report["passed"]:
        kept = ", ".join(best.kept) or "none"
        raise PrecisionCheckError(
            f"no int8 fallback reaches {100 * check.threshold:.2f}% label agreement with fp32: "
            f"the best is {100 * best.agreement:.2f}% (all int8 "
            f"{100 * base.agreement:.2f}%) with {kept} kept out of int8 "
            f"({100 * share(best.kept):.0f}% of the MACs); nothing written. Lower "
            "--min-agreement, or use a float precision (fp16; bf16 for OpenVINO)")
    return best, record
