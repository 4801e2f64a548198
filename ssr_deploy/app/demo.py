"""``ssr-deploy demo``: the whole product on synthetic data, on any machine, in minutes.

Stages (each writes its outputs, then ``.stages/<name>.json`` with its figures; a re-run
skips finished stages, so an interrupted demo continues): synthetic scenes and a video ->
a latency table of the CPU path the demo will ship (a coarse ``lut build``) -> a short SSR
search aimed at milliseconds on it -> brief retraining of the network it found -> verified
ONNX (uint8 in, labels out) -> fp16 / int8 ONNX -> OpenVINO bf16 / int8 IRs -> every CPU
path timed beside torch -> the video segmented by the fastest verified one, and sample
overlays -> an FP16 engine (full TensorRT, or TensorRT-RTX on any machine) and, where a GPU
can run it, its benchmark -> ``report.md`` (``demo_report``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssr_deploy.app.demo_report import report
from ssr_deploy.errors import PrecisionCheckError, SsrDeployError, UsageError
from ssr_deploy.io import atomic_write_text
from ssr_deploy.media import write_image
from ssr_deploy.runs import run_lock
from ssr_deploy.spec import CPU_GATE, ModelSpec


def fallback_figures(fallback: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``--fallback auto`` kept out of int8, for the report; None where plain int8 met
    the gate and it kept nothing (the sidecar then records no fallback)."""
    if not fallback:
        return None
    return {k: fallback[k] for k in ("kept", "macs_out_of_int8", "agreement_all_int8")}


@dataclass(frozen=True)
class DemoSizes:
    scenes: int
    scene_size: tuple[int, int]
    video_frames: int
    search_images: int
    search_size: tuple[int, int]
    search_epochs: int
    train_images: int
    train_size: tuple[int, int]
    train_epochs: int
    model_size: tuple[int, int]
    bench_iters: int
    #: the latency table's build: (width grid, passes, repeats, whole networks calibrated on)
    lut: tuple[tuple[int, int, int], int, int, int] = ((5, 2, 5), 2, 5, 10)


FULL = DemoSizes(scenes=200, scene_size=(256, 512), video_frames=90, search_images=24,
                 search_size=(64, 128), search_epochs=40, train_images=160,
                 train_size=(96, 192), train_epochs=10, model_size=(256, 512), bench_iters=20)
QUICK = DemoSizes(scenes=24, scene_size=(64, 128), video_frames=12, search_images=8,
                  search_size=(32, 64), search_epochs=3, train_images=16, train_size=(32, 64),
                  train_epochs=1, model_size=(64, 128), bench_iters=3,
                  lut=((2, 2, 2), 1, 3, 4))
#: where the demo's search aims: this far from the space's fastest to its slowest network
TARGET_SHARE = 0.5


#: the CPU paths the demo times, the embedded default first: (label, file)
CPU_PATHS = (("onnxruntime fp32", "model.onnx"), ("onnxruntime int8", "model.int8-cpu.onnx"),
             ("openvino bf16", "model.bf16.xml"), ("openvino int8", "model.int8.xml"))


def _sz(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def check_demo_folder(out: Path) -> None:
    """``--out`` must be new, empty, or a demo's own (its ``.stages/``, which a re-run
    continues): a demo writes report.md, model.onnx, train/ ... there, and would replace a
    user's files of those names."""
    try:
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise SsrDeployError(f"--out {out} is not a folder; choose a new folder")
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    except PermissionError:
        raise SsrDeployError(f"cannot read {out}: permission denied; choose another --out"
                             ) from None
    if entries and not (out / ".stages").is_dir():
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise SsrDeployError(f"--out {out} holds files that are not a demo's ({shown}); a "
                             "demo writes report.md, model.onnx, train/ and more there: "
                             "choose a new or empty folder")


class Demo:
    def __init__(self, out: str | Path, device: str = "cpu", quick: bool = False,
                 progress: Callable[[str], None] | None = None) -> None:
        self.out, self.device, self.quick = Path(out), device, quick
        self.s = QUICK if quick else FULL
        self.say = progress or (lambda text: None)
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise SsrDeployError("--device cuda: no CUDA GPU is visible here; run the demo "
                                     "with --device cpu (the default)")
        check_demo_folder(self.out)
        try:
            (self.out / ".stages").mkdir(parents=True, exist_ok=True)
            import tempfile

            with tempfile.NamedTemporaryFile(dir=self.out / ".stages", prefix=".write-test"):
                pass  # a random name, made exclusively: nothing planted is written through
        except OSError as e:
            raise SsrDeployError(f"cannot write to {self.out}: {e.strerror}; choose another "
                                 "--out") from None
        self.check_mode()

    def check_mode(self) -> None:
        """A demo folder holds one mode's stages: a --quick run into a full demo's folder (or
        the other way) would mix sizes, so it is refused; the mode is recorded at the start."""
        mode_file = self.out / ".stages" / "mode.json"
        mode = "quick" if self.quick else "full"
        stages = [p for p in (self.out / ".stages").glob("*.json") if p.name != "mode.json"]
        if mode_file.is_file():
            try:
                was = json.loads(mode_file.read_text()).get("mode")
            except (ValueError, AttributeError):
                was = None
        else:  # a folder from before modes were recorded: its data stage says
            data = self.out / ".stages" / "data.json"
            was = None
            if data.is_file():
                size = json.loads(data.read_text()).get("size")
                was = "quick" if size == _sz(QUICK.scene_size) else "full"
        if stages and was not in (None, mode):
            other = "--quick" if was == "quick" else "full (no --quick)"
            raise SsrDeployError(f"--out {self.out} holds a {other} demo's stages; this "
                                 f"{'--quick ' if self.quick else 'full '}run would mix their "
                                 "sizes: choose a new folder, or run it as it was started")
        atomic_write_text(mode_file, json.dumps({"mode": mode}) + "\n")

    # ---- stage bookkeeping ------------------------------------------------------------
    def stage(self, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        done = self.out / ".stages" / f"{name}.json"
        if done.is_file():
            self.say(f"{name}: done earlier, reused")
            return json.loads(done.read_text())
        self.say(f"{name} ...")
        figures = run()
        atomic_write_text(done, json.dumps(figures, indent=2) + "\n")
        return figures

    # ---- the stages ---------------------------------------------------------------------
    def data(self) -> dict[str, Any]:
        from ssr_deploy.data import write_cityscapes_layout
        from ssr_deploy.data.synthetic import render_video

        s = self.s
        counts = write_cityscapes_layout(self.out / "data", s.scenes, s.scene_size)
        render_video(self.out / "drive.mp4", s.video_frames, s.scene_size, seed=7)
        return {**counts, "size": _sz(s.scene_size), "video_frames": s.video_frames,
                "command": f"ssr-deploy data synth --out {self.out}/data --n {s.scenes} "
                           f"--size {_sz(s.scene_size)} --video {self.out}/drive.mp4 "
                           f"--frames {s.video_frames}"}

    def latency(self) -> dict[str, Any]:
        """latency.json: a coarse latency table of the path the demo will ship (OpenVINO int8
        where OpenVINO runs, else onnxruntime fp32) at the model's size, its whole networks
        timed as the runtime runs them: what the search aims at in ms."""
        from ssr_deploy.backends.openvino import library
        from ssr_deploy.latency import LutOptions, build_lut
        from ssr_deploy.latency.table import LatencyTable
        from ssr_deploy.search.budget import space_range
        from ssr_deploy.space import SearchSpace

        try:
            library.import_openvino()
            backend, precision = "openvino", "int8"
        except SsrDeployError:
            backend, precision = "onnxruntime", "fp32"
        grid, passes, repeats, calibrate = self.s.lut
        o = LutOptions(backend=backend, precision=precision, size=self.s.model_size,
                       width_grid=grid, passes=passes, repeats=repeats, check_points=0,
                       calibrate=calibrate)
        built = build_lut(SearchSpace(), self.out / "latency.json", o)
        fastest, slowest = space_range(LatencyTable.load(self.out / "latency.json"))
        return {"path": f"{backend} {precision}", "seconds": built["seconds"],
                "size": _sz(self.s.model_size), "fastest_ms": fastest, "slowest_ms": slowest,
                "calibration": built["calibration"]["fit"],
                "command": f"ssr-deploy lut build -o {self.out}/latency.json --backend "
                           f"{backend} --precision {precision} --size {_sz(self.s.model_size)} "
                           f"--width-grid {','.join(map(str, grid))} --passes {passes} "
                           f"--repeats {repeats} --check 0 --calibrate {calibrate}"}

    def search(self) -> dict[str, Any]:
        from ssr_deploy.data import open_dataset
        from ssr_deploy.model.complexity import count_macs
        from ssr_deploy.search.searcher import SearchConfig, Searcher
        from ssr_deploy.space import SearchSpace

        s = self.s
        table = json.loads((self.out / ".stages" / "latency.json").read_text())
        target = round(table["fastest_ms"] + TARGET_SHARE * (table["slowest_ms"]
                                                              - table["fastest_ms"]), 2)
        config = SearchConfig(size=s.search_size, epochs=s.search_epochs, batch=4,
                              arch_lr=0.3, shrink_every=3, device=self.device,
                              lut=str(self.out / "latency.json"), target_ms=target)
        data = open_dataset(f"synthetic:{s.search_images}", "train", s.search_size)
        searcher = Searcher(SearchSpace(), data, self.out / "search", config)
        result = searcher.run()
        rows = [json.loads(r) for r in
                (self.out / "search" / "search_log.jsonl").read_text().splitlines()]
        shutil.copyfile(self.out / "search" / "genotype.json", self.out / "genotype.json")
        shutil.copyfile(self.out / "search" / "search.png", self.out / "search.png")
        g = result["genotype"]
        first, last = rows[0], rows[-1]
        return {"epochs": result["epochs"], "converged": result["converged"],
                "ended": result["ended"], "forced": result["forced"],
                "options_first": first["options_left"], "options_last": last["options_left"],
                "epoch_seconds_first": first["seconds"], "epoch_seconds_last": last["seconds"],
                "depth": [st.depth for st in g.stages],
                "gmacs": count_macs(g, s.model_size)[0] / 1e9, "path": table["path"],
                "target_ms": target, "predicted_ms": searcher.found_cost(g),
                **({"search_measured_ms": result["measured"]["ms"],
                    "networks_timed": len(result["measured"]["rounds"])}
                   if result.get("measured") else {}),
                "command": f"ssr-deploy search --data synthetic:{s.search_images} --size "
                           f"{_sz(s.search_size)} --epochs {s.search_epochs} --shrink-every 3 "
                           f"--batch 4 --arch-lr 0.3 --lut {self.out}/latency.json "
                           f"--target-ms {target} --out {self.out}/search"}

    def train(self) -> dict[str, Any]:
        from ssr_deploy.data import open_dataset
        from ssr_deploy.train.trainer import TrainConfig, Trainer, model_for_training

        s = self.s
        train = open_dataset(f"synthetic:{s.train_images}", "train", s.train_size)
        val = open_dataset(f"cityscapes:{self.out / 'data'}", "val")
        config = TrainConfig(size=s.train_size, epochs=s.train_epochs, batch=8 if not
                             self.quick else 4, lr=2e-3, class_weights="none", workers=0,
                             device=self.device)
        found = self.out / "genotype.json"  # what the search found, retrained from scratch
        net = model_for_training(str(found), None, None, train)
        trainer = Trainer(net, train, val, self.out / "train", config)
        final = trainer.fit()
        return {"epochs": s.train_epochs, "val_miou": final["val_miou"],
                "best_miou": trainer.best, "size": _sz(s.train_size),
                "genotype": "genotype.json", "params": sum(p.numel() for p in net.parameters()),
                "command": f"ssr-deploy train --genotype {found} --data synthetic:"
                           f"{s.train_images} --size {_sz(s.train_size)} --epochs "
                           f"{s.train_epochs} --lr 2e-3 --class-weights none --out "
                           f"{self.out}/train"}

    def export(self) -> dict[str, Any]:
        from ssr_deploy.export.onnx import export_onnx, load_source
        from ssr_deploy.spec import RUNTIME_IO

        size = self.s.model_size
        result = export_onnx(load_source(str(self.out / "train" / "best.pt")),
                             self.out / "model.onnx", size=size, dynamic_batch=True,
                             max_batch=8, io=RUNTIME_IO)
        return {"max_abs_diff": result.report["max_abs_diff"],
                "label_agreement": result.report["label_agreement"], "size": _sz(size),
                "command": f"ssr-deploy export onnx {self.out}/train/best.pt -o "
                           f"{self.out}/model.onnx --size {_sz(size)} --input uint8-nhwc-bgr "
                           "--output labels --dynamic-batch --max-batch 8"}

    @property
    def calib(self) -> Path:
        return self.out / "data" / "leftImg8bit" / "train"

    @property
    def val(self) -> Path:
        return self.out / "data" / "leftImg8bit" / "val"

    def precision(self) -> dict[str, Any]:
        """model.fp16.onnx; model.int8.onnx, the TensorRT form (what an int8 engine is built
        from); model.int8-cpu.onnx, onnxruntime's CPU form; both int8 with --fallback auto.
        Each verified against fp32 on the CPU (timed in the bench stage)."""
        from ssr_deploy.export.precision import PrecisionOptions, convert_precision

        calib, val = self.calib, self.val
        figures: dict[str, Any] = {}
        for name, precision, target, fallback in (("fp16", "fp16", "tensorrt", "none"),
                                                  ("int8", "int8", "tensorrt", "auto"),
                                                  ("int8-cpu", "int8", "cpu", "auto")):
            options = PrecisionOptions(precision, calib_dir=str(calib), calib_n=32,
                                       calib_cache=str(self.out / "calibration"), data=str(val),
                                       int8_target=target, fallback=fallback,
                                       min_agreement=CPU_GATE)
            try:
                result = convert_precision(self.out / "model.onnx",
                                           self.out / f"model.{name}.onnx", options)
                spec = result.spec
                figures[name] = {"label_agreement": spec.precision_check.label_agreement,
                                 "miou_vs_fp32": spec.precision_check.miou_vs_fp32}
                if fallback == "auto" and (found := fallback_figures(
                        spec.quantization.fallback)):
                    figures[name]["fallback"] = found
            except PrecisionCheckError as e:  # below the threshold: reported, nothing written
                figures[name] = {"failed": str(e)}
        figures["command"] = (f"ssr-deploy export onnx {self.out}/train/best.pt -o "
                              f"{self.out}/model.int8.onnx --precision int8 --fallback auto "
                              f"--min-agreement {CPU_GATE} --calib {calib} --calib-n 32 --data "
                              f"{val} (and --precision fp16; --int8-target cpu for the CPU "
                              "form)")
        return figures

    def openvino(self) -> dict[str, Any]:
        """OpenVINO IRs of model.onnx, each verified in OpenVINO against fp32: model.bf16.xml
        (on CPUs with bf16) and model.int8.xml (int8 convolutions, the float parts in bf16
        where the CPU has it, --fallback auto at 99.5%)."""
        from ssr_deploy.backends.openvino import library
        from ssr_deploy.export.openvino import IROptions, describe, export_openvino

        try:
            library.import_openvino()
        except SsrDeployError as e:
            return {"skipped": str(e)}
        figures: dict[str, Any] = {}
        for name, options in (("bf16", IROptions("bf16", data=str(self.val))),
                              ("int8", IROptions("int8", calib_dir=str(self.calib), calib_n=32,
                                                 calib_cache=str(self.out / "calibration"),
                                                 fallback="auto", min_agreement=CPU_GATE,
                                                 data=str(self.val)))):
            try:
                result = export_openvino(self.out / "model.onnx",
                                         self.out / f"model.{name}.xml", options)
            except (PrecisionCheckError, UsageError) as e:  # below the gate, or no bf16
                figures[name] = {"failed": str(e)}
                continue
            spec = result.spec
            figures[name] = {
                "precision": describe(spec.precision, spec.openvino.inference_precision),
                "label_agreement": spec.precision_check.label_agreement,
                "miou_vs_fp32": spec.precision_check.miou_vs_fp32}
            if name == "int8" and (found := fallback_figures(spec.quantization.fallback)):
                figures[name]["fallback"] = found
        figures["command"] = (f"ssr-deploy export openvino {self.out}/model.onnx -o "
                              f"{self.out}/model.int8.xml --precision int8 --calib {self.calib} "
                              f"--calib-n 32 --fallback auto --min-agreement {CPU_GATE} --data "
                              f"{self.val} (and --precision bf16)")
        return figures

    def bench(self) -> dict[str, Any]:
        """Every verified CPU path side by side with torch, end to end; the fastest at
        >= 99.5% of labels as fp32 is what the video runs."""
        from ssr_deploy.runtime import bench
        from ssr_deploy.runtime.segmenter import Segmenter

        size = self.s.model_size
        paths = [(label, file) for label, file in CPU_PATHS if (self.out / file).is_file()]
        entries = [(label, Segmenter.load(self.out / file)) for label, file in paths]
        entries.append(("torch", Segmenter.load(self.out / "train" / "best.pt", size=size,
                                                device=self.device)))
        agreement = {label: seg.spec.precision_check.label_agreement
                     if seg.spec.precision_check else 1.0
                     for label, seg in entries}
        try:
            results = bench.run(entries, [1], self.s.bench_iters, warmup=3)
            bench.write_outputs(results, self.out / "bench.json", self.out / "bench.png")
        finally:
            for _, seg in entries:
                seg.close()
        fps = {r.backend: r.fps for r in results}
        fastest = max((label for label, _ in paths if agreement[label] >= CPU_GATE),
                      key=fps.__getitem__)
        files = " ".join(str(self.out / file) for _, file in paths[1:])
        return {"fps": fps, "p50_ms": {r.backend: r.latency_ms["p50"] for r in results},
                "precision": {r.backend: r.precision for r in results},
                "agreement": agreement, "fastest": fastest, "fastest_file": dict(paths)[fastest],
                "speedup": fps[fastest] / fps["onnxruntime fp32"], "size": _sz(size),
                "device": bench.machine_info()["cpu"],
                "command": f"ssr-deploy bench {self.out}/model.onnx --compare "
                           f"{','.join([*files.split(), str(self.out / 'train' / 'best.pt')])} "
                           f"--iters {self.s.bench_iters} --json {self.out}/bench.json --plot "
                           f"{self.out}/bench.png"}

    def video(self) -> dict[str, Any]:
        import cv2

        from ssr_deploy.runtime.segmenter import Segmenter
        from ssr_deploy.runtime.video import run_video

        model = self.out / json.loads((self.out / ".stages" / "bench.json").read_text())[
            "fastest_file"]
        with Segmenter.load(model) as seg:
            precision = seg.backend.precision
            stats = run_video(seg, str(self.out / "drive.mp4"), str(self.out / "overlay.mp4"),
                              draw_fps=True)
            samples = self.out / "samples"
            samples.mkdir(exist_ok=True)
            images = sorted((self.out / "data" / "leftImg8bit" / "val").rglob("*.png"))[:3]
            for i, path in enumerate(images):
                frame = cv2.imread(str(path))
                write_image(samples / f"overlay_{i}.png", seg.overlay(frame))
        return {"frames": stats.frames, "fps": stats.fps, "samples": len(images),
                "model": model.name, "precision": precision,
                "command": f"ssr-deploy video {self.out}/drive.mp4 --model {model} -o "
                           f"{self.out}/overlay.mp4 --draw-fps"}

    def engine(self) -> dict[str, Any]:
        """An fp16 engine of model.onnx, built by full TensorRT where it is installed, else by
        TensorRT-RTX (on any machine, no GPU needed); benchmarked where this machine's GPU
        can run it, else the runtime's one line on what it needs."""
        from ssr_deploy.backends.tensorrt.library import engine_targets, load_tensorrt
        from ssr_deploy.export.tensorrt import EngineOptions, build_engine
        from ssr_deploy.runtime import bench
        from ssr_deploy.runtime.segmenter import Segmenter

        try:
            library = load_tensorrt()
        except SsrDeployError as e:
            return {"skipped": str(e)}
        path = self.out / "model.engine"
        # (model.onnx is fp32: the build converts it to fp16 first, verified on the CPU)
        spec = ModelSpec.from_dict(build_engine(self.out / "model.onnx", path,
                                                EngineOptions(builder=library.builder,
                                                              min_agreement=CPU_GATE)))
        check = spec.precision_check
        built = {"file": path.name, "size_mb": path.stat().st_size / 1e6,
                 "build_seconds": spec.build_seconds, "builder": library.title,
                 "precision": spec.precision, "agreement": check and check.label_agreement,
                 "targets": list(engine_targets(spec.engine)),
                 "command": f"ssr-deploy export engine {self.out}/model.onnx -o {path} "
                            f"--min-agreement {CPU_GATE}"
                            f"{' --builder tensorrt-rtx' if library.is_rtx else ''} && "
                            f"ssr-deploy bench {path}"}
        try:
            seg = Segmenter.load(path)
        except SsrDeployError as e:
            return {**built, "not_run": str(e)}
        results = bench.run([("tensorrt", seg)], [1], 200, 50)
        seg.close()
        return {**built, "fps": results[0].fps, **self.paper_speed(library)}

    def paper_speed(self, library) -> dict[str, Any]:
        """The paper's network (ssr-cityscapes) at the paper's 512x1024 as an fp16 engine on
        this GPU, beside its 175 FPS: the speed comparison the searched network (another
        network, at another size) cannot make. Random weights: speed only."""
        from ssr_deploy import build_model
        from ssr_deploy.export.onnx import export_onnx
        from ssr_deploy.export.tensorrt import EngineOptions, build_engine
        from ssr_deploy.genotype import Genotype
        from ssr_deploy.runtime import bench
        from ssr_deploy.runtime.segmenter import Segmenter
        from ssr_deploy.spec import RUNTIME_IO

        onnx = self.out / "paper" / "ssr-cityscapes.onnx"
        onnx.parent.mkdir(exist_ok=True)
        export_onnx(build_model(Genotype.load("ssr-cityscapes")).eval(), onnx,
                    size=(512, 1024), io=RUNTIME_IO)
        engine = onnx.with_suffix(".engine")
        build_engine(onnx, engine, EngineOptions(builder=library.builder,
                                                 min_agreement=CPU_GATE))
        with Segmenter.load(engine) as seg:
            results = bench.run([("tensorrt", seg)], [1], 200, 50)
        bench.plot_histogram(results, self.out / "bench_engine.png")  # with the 175 FPS line
        return {"paper_net_fps": results[0].fps, "paper_fps": bench.PAPER_FPS}

    # ---- the whole demo -----------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from ssr_deploy.progress import progress

        names = ("data", "latency", "search", "train", "export", "precision", "openvino", "bench",
                 "video", "engine")
        figures = {}
        with run_lock(self.out, "demo"), progress("demo", len(names), "stage") as bar:
            for k, name in enumerate(names, 1):
                bar.say(f"demo: stage {k}/{len(names)}, {name}")
                figures[name] = self.stage(name, getattr(self, name))
                bar.update(1)
        atomic_write_text(self.out / "report.md", report(figures, self.out, self.quick))
        return figures
