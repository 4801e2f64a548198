"""Whole networks timed as a user runs them: exported as ``export`` writes them for the
table's path (``export onnx``; ``--precision int8 --int8-target cpu`` for onnxruntime int8;
``export openvino --precision int8`` in the table's form), opened by the ``Segmenter`` and
timed as ``bench`` times it (a uint8 frame in, labels out; the median of the runs after 2
warm-up calls). A table calibrated on networks timed any other way (a part's session,
ranges from noise) carries that way's offset into every prediction: on OpenVINO int8 the
two ways differed by 7-13% on the same networks.

The exports stay in a folder beside the table while it is built (a resumed build does not
export them again) and go when it is complete. Paths whose export is an engine build (the
torch and TensorRT tables) time whole networks through their part timer instead.

``TableSpeedClock`` times a network the same way after the build, on the machine the table
was built on, at the table's speed: what a search measures to land where it aims."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.backends import part_timer_class
from ssr_deploy.backends.base import median_ms
from ssr_deploy.latency import speed
from ssr_deploy.latency.options import LutOptions

CALIBRATION_FRAMES = 4  # int8 ranges: timing needs the graph's shape, any valid ranges do
PASSES = 5  # a network timed after the build: passes, the reference around each


def segmenter_ms(path: Path, run: dict[str, Any], frames: list[np.ndarray], repeats: int
                 ) -> float:
    """``bench``'s measure of a model file: the median ms of ``repeats`` Segmenter calls on
    ``frames`` after 2 warm-up calls, opened with ``Segmenter.load(path, **run)``."""
    from ssr_deploy.runtime.segmenter import Segmenter

    seg = Segmenter.load(path, **run)
    try:
        return median_ms(lambda: seg.predict_batch(frames), repeats)
    finally:
        seg.close()


class NetworkClock:
    """Times genotypes end to end on the table's path (``handles``), exporting each once
    into ``folder``."""

    def __init__(self, o: LutOptions, folder: Path) -> None:
        self.o, self.folder = o, Path(folder)
        self._files: dict[str, tuple[Path, dict[str, Any]]] = {}
        self._frame: np.ndarray | None = None

    @staticmethod
    def handles(o: LutOptions) -> bool:
        """The path's whole networks run through the Segmenter (its timer says)."""
        timer = part_timer_class(o.backend)
        return o.device == "cpu" and timer.whole_networks and \
            o.precision in timer.precisions.get("cpu", ())

    def time(self, genotype) -> float:
        """The genotype's median ms end to end, as ``bench`` measures it."""
        return segmenter_ms(*self.file(genotype), [self.frame()] * self.o.batch,
                            self.o.repeats)

    def frame(self) -> np.ndarray:
        if self._frame is None:
            from ssr_deploy.data.synthetic import street_frames

            self._frame = street_frames(1, *self.o.size, seed=0)[0]
        return self._frame

    def file(self, genotype) -> tuple[Path, dict[str, Any]]:
        """(the file the path runs, ``Segmenter.load``'s arguments), exported if not yet."""
        if genotype.name not in self._files:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):  # the exports' notes
                self._files[genotype.name] = self._export(genotype)
        return self._files[genotype.name]

    def _export(self, genotype) -> tuple[Path, dict[str, Any]]:
        import torch

        from ssr_deploy.export.onnx import export_onnx
        from ssr_deploy.model.net import build_model
        from ssr_deploy.spec import runtime_io

        o, timer = self.o, part_timer_class(self.o.backend)
        self.folder.mkdir(parents=True, exist_ok=True)
        run: dict[str, Any] = {"backend": o.backend, **({"threads": o.threads} if o.threads
                                                        else {})}
        fp32 = self.folder / f"{genotype.name}.onnx"
        if not fp32.exists():
            torch.manual_seed(o.seed)
            export_onnx(build_model(genotype, o.num_classes).eval(), fp32, size=o.size,
                        batch=o.batch, io=runtime_io(o.num_classes))
        if o.precision != "int8":
            return fp32, {**run, **({"precision": o.precision} if timer.runs_at_precision
                                    else {})}
        q = o.int8_options()
        settings = {"calib_dir": str(self._calibration_frames()), "calib_n": CALIBRATION_FRAMES,
                    "calib_method": "minmax", "calib_cache": str(self.folder / "ranges"),
                    "min_agreement": 0.01,  # random weights: their agreement says nothing
                    "fp32_layers": o.fp32_layers}
        if timer.int8_export == "onnx":  # Q/DQ for the backend's int8 target
            from ssr_deploy.export.precision import PrecisionOptions, convert_precision

            out = self.folder / f"{genotype.name}.int8.onnx"
            if not out.exists():
                convert_precision(fp32, out, PrecisionOptions(
                    "int8", int8_target=q.int8_target, **settings))
            return out, run
        from ssr_deploy.export.openvino import IROptions, export_openvino

        out = self.folder / f"{genotype.name}.int8.xml"
        if not out.exists():
            export_openvino(fp32, out, IROptions("int8", int8_form=q.int8_form, size=o.size,
                                                 max_batch=o.batch, **settings))
        return out, run

    def _calibration_frames(self) -> Path:
        from ssr_deploy.data.synthetic import street_frames
        from ssr_deploy.media import write_image

        folder = self.folder / "frames"
        if len(list(folder.glob("*.png"))) < CALIBRATION_FRAMES:
            folder.mkdir(parents=True, exist_ok=True)
            for k, f in enumerate(street_frames(CALIBRATION_FRAMES, *self.o.size, seed=31)):
                write_image(folder / f"{k}.png", f)
        return folder

    def remove(self) -> None:
        """The exports, once the table is complete."""
        shutil.rmtree(self.folder, ignore_errors=True)


class TableSpeedClock:
    """Whole networks timed on a table's path on this machine, as its build timed its
    calibration networks, and brought to the table's speed: the table's reference network is
    timed right before and after each, and the network's time divided by the machine's speed
    then (the mean of the two over the reference's best time in the build), so a shared
    machine's slow minutes do not move what is measured; a measurement during which the
    machine's speed changed is taken again (``speed.py``)."""

    def __init__(self, table, folder: Path) -> None:
        self.o = LutOptions.of_table(table.meta)
        self.clock = NetworkClock(self.o, folder)
        self.reference, self.best = table.reference()

    @staticmethod
    def unavailable(table) -> str | None:
        """Why the table's networks cannot be timed here, in words (None: they can)."""
        from ssr_deploy.errors import SsrDeployError
        from ssr_deploy.latency.clock import Clock

        o = LutOptions.of_table(table.meta)
        if not NetworkClock.handles(o):
            return (f"a {table.describe()} table's networks are engine builds, not timed "
                    "during a search")
        try:
            part_timer_class(o.backend).check(o.backend, o.device, o.precision)
            here = Clock(o).machine_fingerprint()
        except (SsrDeployError, ImportError) as e:
            return f"its path does not run here ({e})"
        theirs = table.meta.get("fingerprint")
        if here != theirs:
            differ = sorted(k for k in {*here, *(theirs or {})} if here.get(k) !=
                            (theirs or {}).get(k))
            return (f"it was measured on another machine or library versions (differing: "
                    f"{', '.join(differ)})")
        return None

    def time(self, genotype, passes: int = PASSES) -> dict[str, float]:
        """The genotype at the table's speed (``speed.at_table_speed``'s figure): ``passes``
        steady measurements, the reference before and after each (a table without a
        reference network: ``passes`` raw times, speed 1)."""
        if self.reference is None:
            raws = [self.clock.time(genotype) for _ in range(passes)]
            return speed.at_table_speed([(ms, 1.0, 1.0) for ms in raws], 1.0)
        return speed.at_table_speed(speed.measure(lambda: self.clock.time(genotype),
                                                  lambda: self.clock.time(self.reference),
                                                  passes), self.best)

    def remove(self) -> None:
        self.clock.remove()
