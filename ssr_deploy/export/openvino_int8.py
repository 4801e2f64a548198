"""``export openvino --precision int8``: the int8 form this CPU runs correctly and fastest.

The forms this CPU's kind runs (``backends/openvino/forms.py``), or the one ``--int8-form``
names, are each quantized, run in OpenVINO on this machine and checked against fp32 (one
set of fp32 labels for all); those that pass the gate are timed side by side (batch 1 at the
model's size, interleaved) and the fastest is kept; within 3% of it, the one with more labels
as fp32. When none passes, ``--fallback auto`` keeps the most sensitive modules float in the
form closest to the gate. The sidecar records the form, the CPU it was chosen on and every
form tried, with its agreement and time.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ssr_deploy.backends.openvino import library as ov
from ssr_deploy.backends.openvino.forms import FORMS, candidates, known_wrong
from ssr_deploy.cpu import TITLES, Cpu, this_cpu
from ssr_deploy.errors import PrecisionCheckError
from ssr_deploy.export.fp16 import matching_nodes
from ssr_deploy.export.int8 import int8_with_fallback, quantization_settings, to_int8
from ssr_deploy.export.precision import PrecisionOptions, converted_metadata
from ssr_deploy.export.precision_check import Fp32Check
from ssr_deploy.spec import ModelSpec

SAME_SPEED = 0.03  # forms this close in time are told apart by their agreement


@dataclass
class Trial:
    """A form tried on this CPU: its graph, record, check and time."""

    form: str
    graph: onnx.ModelProto
    quantization: dict[str, Any]
    report: dict[str, Any]
    fallback: bool = False
    ms: float | None = None

    @property
    def agreement(self) -> float:
        return self.report["label_agreement"]

    def row(self) -> dict[str, Any]:
        return {"form": self.form, "label_agreement": self.agreement,
                "passed": self.report["passed"], "ms_batch1": self.ms,
                "fallback": self.fallback}


def int8_for_this_cpu(fp32: onnx.ModelProto, meta: dict[str, Any], o: PrecisionOptions,
                      float_precision: str, progress: bool = False,
                      cpu: Cpu | None = None
                      ) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """(the chosen int8 graph, its sidecar, its check): see the module."""
    cpu = cpu or this_cpu()
    spec = ModelSpec.from_dict(meta)
    run = ov.graph_runner(float_precision)
    check = Fp32Check(fp32, spec, o.threshold, o.frames, o.data, run)
    pinned = matching_nodes(fp32, o.fp32_layers)
    forms = (o.int8_form,) if o.int8_form else candidates(cpu)
    trials = []
    for form in forms:
        options = dataclasses.replace(o, int8_target="openvino", int8_form=form)
        graph, cache = to_int8(fp32, meta, options, pinned)
        trials.append(Trial(form, graph, {**quantization_settings(options), **cache},
                            check(graph, worst=False)))
    passing = [t for t in trials if t.report["passed"]]
    if not passing and o.fallback == "auto":
        closest = max(trials, key=lambda t: t.agreement)
        options = dataclasses.replace(o, int8_target="openvino", int8_form=closest.form)
        graph, record, report = int8_with_fallback(fp32, meta, options, pinned, check, progress)
        passing = [Trial(closest.form, graph, record, report, fallback=True)]
        trials.append(passing[0])
    if not passing:
        raise PrecisionCheckError(refusal(trials, o, cpu))
    _time(passing, spec, float_precision)
    chosen = pick(passing)
    quantization = {**chosen.quantization, "form": chosen.form, "cpu": cpu.to_dict(),
                    "candidates": [t.row() for t in trials]}
    options = dataclasses.replace(o, int8_target="openvino", int8_form=chosen.form)
    return chosen.graph, converted_metadata(meta, options, chosen.report, quantization), \
        chosen.report


def pick(passing: list[Trial]) -> Trial:
    """The fastest; among those within SAME_SPEED of it, the one with more labels as fp32."""
    fastest = min(t.ms for t in passing)
    close = [t for t in passing if t.ms <= fastest * (1 + SAME_SPEED)]
    return max(close, key=lambda t: t.agreement)


def refusal(trials: list[Trial], o: PrecisionOptions, cpu: Cpu) -> str:
    """One line: what each form reached on this CPU, and what to do."""
    gate = f"{100 * o.threshold:.2f}%"
    reached = ", ".join(f"{t.form} {100 * t.agreement:.2f}%" for t in trials)
    if o.int8_form:
        why = known_wrong(o.int8_form, cpu)
        others = [f for f in candidates(cpu) if f != o.int8_form]
        return (f"--int8-form {o.int8_form} reaches {100 * trials[0].agreement:.2f}% of labels "
                f"as fp32 in OpenVINO on this CPU ({cpu.title}), below {gate}; nothing "
                f"written" + (f": {why}" if why else "") + "; "
                + (f"use {' or '.join(others)}, or drop --int8-form" if others else
                   "drop --int8-form, or use --fallback auto"))
    return (f"int8 in OpenVINO on this CPU ({cpu.title}) reaches {reached} of labels as "
            f"fp32, below {gate}; nothing written. Use --fallback auto (the most sensitive "
            f"modules stay float), or lower --min-agreement")


def _time(trials: list[Trial], spec: ModelSpec, float_precision: str, rounds: int = 3,
          iters: int = 3) -> None:
    """Each trial's median ms at batch 1 and the model's size, measured interleaved."""
    from ssr_deploy.data.synthetic import street_frames
    from ssr_deploy.preprocess import frames_to_input

    if len(trials) == 1:
        trials[0].ms = _once(trials[0], spec, float_precision)
        return
    frame = frames_to_input(np.stack(street_frames(1, *spec.input.size, seed=9)), spec.input)
    compiled = [ov.CompiledModels(ov.read_model(t.graph.SerializeToString()), float_precision)
                for t in trials]
    samples: list[list[float]] = [[] for _ in trials]
    for c in compiled:
        c(frame)  # compiled and warm
    for _ in range(rounds):
        for c, times in zip(compiled, samples, strict=True):
            for _ in range(iters):
                start = time.perf_counter()
                c(frame)
                times.append(1e3 * (time.perf_counter() - start))
    for trial, times in zip(trials, samples, strict=True):
        trial.ms = statistics.median(times)


def _once(trial: Trial, spec: ModelSpec, float_precision: str) -> float:
    """One form's time (nothing to choose between: measured briefly, for the record)."""
    from ssr_deploy.data.synthetic import street_frames
    from ssr_deploy.preprocess import frames_to_input

    frame = frames_to_input(np.stack(street_frames(1, *spec.input.size, seed=9)), spec.input)
    compiled = ov.CompiledModels(ov.read_model(trial.graph.SerializeToString()),
                                 float_precision)
    compiled(frame)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        compiled(frame)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def choice_line(quantization) -> str:
    """``int8 form u8 (uint8 activations, 8-bit weights), chosen on <cpu> (VNNI without
    AMX): u8 99.31% 63.8 ms; u8-7bit 99.03%, below the gate``"""
    if not quantization or not quantization.form or not quantization.cpu:
        return ""
    form = FORMS.get(quantization.form)
    tried = []
    for c in quantization.candidates:
        text = f"{c['form']}{' + fallback' if c.get('fallback') else ''} " \
               f"{100 * c['label_agreement']:.2f}%"
        text += f" {c['ms_batch1']:.1f} ms" if c.get("ms_batch1") else \
            ("" if c.get("passed") else ", below the gate")
        tried.append(text)
    kind = TITLES.get(quantization.cpu.get("kind"), "?")
    return (f"int8 form {form.text if form else quantization.form}, chosen on "
            f"{quantization.cpu.get('name')} ({kind}): {'; '.join(tried)}")
