"""The small interface every backend implements: a loaded model (``Backend``) and a timer of
network parts for latency tables (``PartTimer``). What is above the backends (the Segmenter,
``bench``, ``profile``, ``lut build``) talks to these and never to a backend by name."""

from __future__ import annotations

import json
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ssr_deploy.errors import UsageError
from ssr_deploy.io import atomic_write_text
from ssr_deploy.names import module_in
from ssr_deploy.spec import ModelSpec


@dataclass
class LayerTimes:
    """What a backend's profiler measured over ``iters`` runs: ``times_ms`` maps each layer
    (its name starts with the genotype module, see ``names.node_name``) to its total ms;
    ``host_ms`` maps modules to their total host time where the backend reads it beside the
    device's; ``details``: what else it reports (the clock it read, top ops and kernels)."""

    times_ms: dict[str, float]
    host_ms: dict[str, float] | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """A loaded model: ``spec`` is what it is (its sidecar, typed); ``infer`` maps the model's
    input array (layout and dtype as ``spec.input`` says) to its output array on the host."""

    name: ClassVar[str]
    #: the backend's options dataclass (``Segmenter.load(..., **options)`` fills it)
    Options: ClassVar[type]
    #: where it runs when no device is given
    default_device: ClassVar[str] = "cpu"
    spec: ModelSpec
    device_name: str = "cpu"
    on_gpu: bool = False
    #: after each ``infer`` on a GPU: {"compute_ms", "copy_ms"} from CUDA events, else None
    last_timing: dict[str, float] | None = None
    #: what the user should know about how it runs here (printed by the commands)
    notes: tuple[str, ...] | list[str] = ()

    @property
    def metadata(self) -> dict[str, Any]:
        """The sidecar as written (read-only use; ``spec`` is the typed view)."""
        return self.spec.to_dict()

    @property
    def precision(self) -> str:
        """What the model computes in, as ``bench`` and ``profile`` print it: the graph's
        precision, and a runtime precision where the backend chooses one (``int8 + bf16``)."""
        return self.spec.precision

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def infer_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs for a stream of batches, in order. GPU backends overlap the copies of one
        batch with the compute of the previous; the default runs them one by one."""
        for batch in batches:
            yield self.infer(batch)

    def layer_times(self, batch: np.ndarray, iters: int, trace: Path | None = None
                    ) -> LayerTimes:
        """Run ``batch`` ``iters`` times under the backend's own profiler; ``trace``: write
        a Chrome trace there. Opened with ``profile=True`` where its options have it."""
        raise UsageError(f"the {self.name} backend has no per-layer profiler")

    def close(self) -> None:  # noqa: B027 - backends without resources need nothing here
        """Free what the backend holds (GPU memory, sessions)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: a part a PartTimer times: its ONNX (serialized), or, for a timer that runs modules
#: (``exports = False``), a function that builds the torch module
Part = bytes | Callable[[], Any]


class PartTimer(ABC):
    """Times one part of a network (a block, the stem, the head) as its backend runs whole
    networks: the same session, engine or compiled model settings, on ``device`` at
    ``precision``; the median of ``repeats`` runs after warm-up runs, in ms."""

    #: it times the part's ONNX (else the module itself)
    exports: ClassVar[bool] = True
    #: the precisions a latency table can be measured at through it, on each device kind
    precisions: ClassVar[dict[str, tuple[str, ...]]] = {"cpu": ("fp32",)}
    #: the ``--int8-target`` its int8 parts are quantized for
    int8_target: ClassVar[str] = "cpu"
    #: its int8 comes in forms (``--int8-form``)
    has_int8_forms: ClassVar[bool] = False
    #: a table's whole networks on the CPU are exported and run through the Segmenter as a
    #: user runs them (else timed as its parts are)
    whole_networks: ClassVar[bool] = False
    #: how a network's int8 is exported for it: "onnx" (Q/DQ for ``int8_target``) or "ir"
    int8_export: ClassVar[str] = "onnx"
    #: the Segmenter takes ``precision=`` for it (the precision it runs an fp32 graph at)
    runs_at_precision: ClassVar[bool] = False

    def __init__(self, device: str, precision: str, repeats: int,
                 threads: int | None = None) -> None:
        self.device, self.precision, self.repeats, self.threads = (device, precision, repeats,
                                                                   threads)

    @classmethod
    def check(cls, backend: str, device: str, precision: str) -> None:
        """One line for a device or precision this backend cannot time parts at."""
        kind = device.partition(":")[0]
        if kind not in cls.precisions:
            raise UsageError(f"--backend {backend} runs on {' or '.join(cls.precisions)}, not "
                             f"{device}: use --device {next(iter(cls.precisions))}")
        if precision not in cls.precisions[kind]:
            raise UsageError(f"--precision {precision}: --backend {backend} on {kind} times "
                             f"{', '.join(cls.precisions[kind])}")

    @abstractmethod
    def time(self, part: Part, inputs: list[np.ndarray]) -> float:
        """The part's median latency in ms on ``inputs`` (one array per part input)."""

    def time_copies(self, frame: np.ndarray, labels_shape: tuple[int, ...]) -> float:
        """A frame's copy to the device and its labels' copy back, in ms (GPU backends)."""
        raise UsageError(f"{type(self).__name__} runs on the host: no copies to time")

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """The library versions a table measured through it depends on."""

    def device_label(self) -> str | None:
        """The accelerator's name where the timer runs on one (a table's fingerprint)."""
        return None

    @classmethod
    def default_int8_form(cls) -> str | None:
        """The int8 form its parts take unless one is named (backends with forms)."""
        return None


def median_ms(run: Callable[[], Any], repeats: int, warmup: int = 2,
              sync: Callable[[], Any] = lambda: None) -> float:
    """The median wall time of ``run`` in ms over ``repeats`` runs after ``warmup`` runs;
    ``sync`` waits for asynchronous work before each clock read."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def write_layer_trace(path: Path, layers: list[tuple[str, float]]) -> None:
    """A Chrome trace (chrome://tracing, Perfetto) of one average run, layer after layer:
    (layer name, ms) in the order they ran."""
    events, t = [], 0.0
    for name, ms in layers:
        events.append({"name": name, "ph": "X", "ts": t * 1e3, "dur": ms * 1e3, "pid": 0,
                       "tid": 0, "cat": module_in(name)})
        t += ms
    atomic_write_text(path, json.dumps({"traceEvents": events}))
