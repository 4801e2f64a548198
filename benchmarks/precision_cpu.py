"""fp16 and int8 ONNX of a trained ssr-cityscapes on this CPU, side by side with fp32:
label agreement and mIoU vs fp32 (what each export's verification records) and onnxruntime
speed at 512x1024, batch 1, end to end (uint8 frames in, labels out).

    python benchmarks/precision_cpu.py [--epochs 10] [--iters 20] [--work DIR] [--out FILE]

The network is trained briefly on synthetic street scenes (as `ssr-deploy demo` does), so
its logits have a trained network's margins; calibration uses 32 training scenes at
512x1024, verification 8 street-like frames and 12 held-out scenes. int8 rows: plain
post-training quantization in each form, and the TensorRT form with ``--fallback auto``
(min agreement 99.5%: the modules it keeps out of int8, their share of the MACs, and the
per-module sensitivity table). ``--work DIR`` keeps the trained network and data there and
reuses them on the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from ssr_deploy import build_model
from ssr_deploy.data import open_dataset, write_cityscapes_layout
from ssr_deploy.export.onnx import export_onnx, load_source
from ssr_deploy.export.precision import PrecisionOptions, convert_precision
from ssr_deploy.io import atomic_write_text, dumps_compact
from ssr_deploy.runtime import bench
from ssr_deploy.runtime.segmenter import Segmenter
from ssr_deploy.spec import RUNTIME_IO
from ssr_deploy.train.trainer import TrainConfig, Trainer

SIZE = (512, 1024)
QAT_BATCH, QAT_LR = 2, 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/precision_cpu.json")
    parser.add_argument("--work", help="keep the trained network here; reuse it next time")
    parser.add_argument("--qat-epochs", type=int, default=2)
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        tmp = Path(args.work or stack.enter_context(tempfile.TemporaryDirectory()))
        trained = train_once(tmp, args.epochs)
        fp32 = export_onnx(load_source(str(tmp / "train" / "best.pt")), tmp / "model.onnx",
                           size=SIZE, dynamic_batch=True,
                           io=RUNTIME_IO).path
        calib = tmp / "data" / "leftImg8bit" / "train"
        held_out = tmp / "data" / "leftImg8bit" / "val"
        rows = {}
        for name, precision, target, fallback, threshold in (
                ("fp16", "fp16", "tensorrt", "none", 0.5),
                ("int8-tensorrt", "int8", "tensorrt", "none", 0.5),
                ("int8-tensorrt-fallback", "int8", "tensorrt", "auto", 0.995),
                ("int8-cpu", "int8", "cpu", "none", 0.5)):
            options = PrecisionOptions(precision, calib_dir=str(calib), calib_n=32,
                                       int8_target=target, data=str(held_out),
                                       calib_cache=str(tmp / "cache"), min_agreement=threshold,
                                       fallback=fallback)
            start = time.perf_counter()
            result = convert_precision(fp32, tmp / f"model.{name}.onnx", options)
            check = result.metadata["precision_check"]
            rows[name] = {"path": result.path, "label_agreement": check["label_agreement"],
                          "miou_vs_fp32": check["miou_vs_fp32"], "sources": check["sources"],
                          "convert_seconds": time.perf_counter() - start}
            if fallback == "auto":
                rows[name]["fallback"] = result.metadata["quantization"]["fallback"]
            print(f"{name}: agreement {100 * check['label_agreement']:.2f}%, mIoU vs fp32 "
                  f"{100 * check['miou_vs_fp32']:.1f}")
        rows["int8-tensorrt-qat"] = qat_row(tmp, fp32, held_out, args.qat_epochs)
        print(f"int8-tensorrt-qat: agreement with the fp32 network "
              f"{100 * rows['int8-tensorrt-qat']['label_agreement']:.2f}%")

        entries = [("fp32", Segmenter.load(fp32))] + [
            (name, Segmenter.load(row["path"])) for name, row in rows.items()]
        results = bench.run(entries, [1], args.iters, warmup=3, progress=True)
        print(bench.format_results(results))
        fps = {r.backend: r.fps for r in results}
        report = {
            "what": "fp16/int8 ONNX vs fp32 through onnxruntime on this CPU, 512x1024, batch 1, "
                    "end to end; agreement on a briefly trained ssr-cityscapes; int8 as plain "
                    "PTQ per form and with --fallback auto (TensorRT form, 99.5%)",
            "command": "python benchmarks/precision_cpu.py",
            "epochs": args.epochs,
            "train_val_miou": trained["val_miou"],
            "fps": fps,
            "speedup_vs_fp32": {k: v / fps["fp32"] for k, v in fps.items()},
            "precision": {k: {kk: vv for kk, vv in v.items() if kk != "path"}
                          for k, v in rows.items()},
            "machine": bench.machine_info(),
        }
        for _, seg in entries:
            seg.close()
    atomic_write_text(args.out, dumps_compact(report) + "\n")
    print(f"wrote {args.out}")


def qat_row(tmp: Path, fp32: Path, held_out: Path, epochs: int) -> dict:
    """QAT from the trained network (train --qat's defaults but the epochs) at the export's
    size on the 48 calibration scenes, its int8 ONNX, and its labels against the fp32
    network it was fine-tuned from (model.onnx) on the same frames as the PTQ rows; beside
    it, the same with ModelOpt's calibrated ranges before any fine-tuning, and the export's
    own check (against the fine-tuned fp32 weights)."""
    import json

    import onnx

    from ssr_deploy.export.int8 import to_int8
    from ssr_deploy.export.metadata import read_sidecar
    from ssr_deploy.export.onnx import qat_record_of
    from ssr_deploy.export.precision_check import Fp32Check
    from ssr_deploy.model.checkpoint import load_model
    from ssr_deploy.spec import ModelSpec
    from ssr_deploy.train import qat
    from ssr_deploy.train.trainer import QatTrainer

    start = time.perf_counter()
    out = tmp / "qat"
    source = tmp / "train" / "best.pt"
    if not (out / "done.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        config = TrainConfig(size=SIZE, epochs=epochs, batch=QAT_BATCH, lr=QAT_LR,
                             class_weights="none", workers=0, init_from=str(source))
        data = f"cityscapes:{tmp / 'data'}"  # the calibration images, at the export's size
        trainer = QatTrainer(load_model(source).train(), open_dataset(data, "train", SIZE),
                             open_dataset(data, "val", SIZE), out, config)
        calibrated = qat.input_ranges(trainer.net)
        trainer.fit()
        atomic_write_text(out / "done.json", json.dumps(
            {"seconds": time.perf_counter() - start, "calibrated": calibrated}))
    done = json.loads((out / "done.json").read_text())
    record = qat_record_of(str(out / "best.pt"))
    options = PrecisionOptions("int8", data=str(held_out), min_agreement=0.5, qat=record)
    result = export_onnx(load_source(str(out / "best.pt")), tmp / "model.int8-qat.onnx",
                         size=SIZE, dynamic_batch=True, io=RUNTIME_IO, precision=options)
    fp32_graph, meta = onnx.load(str(fp32)), read_sidecar(fp32)
    check = Fp32Check(fp32_graph, ModelSpec.from_dict(meta), 0.995, 8, str(held_out))
    fine_tuned = check(onnx.load(str(result.path)), worst=False)
    before, _ = to_int8(fp32_graph, meta, PrecisionOptions(
        "int8", qat={**record, "input_amax": done["calibrated"]}), [])
    calibrated = check(before, worst=False)
    own = result.metadata["precision_check"]
    return {"path": result.path, "label_agreement": fine_tuned["label_agreement"],
            "miou_vs_fp32": fine_tuned["miou_vs_fp32"], "sources": fine_tuned["sources"],
            "before_fine_tuning": {"label_agreement": calibrated["label_agreement"],
                                   "miou_vs_fp32": calibrated["miou_vs_fp32"]},
            "vs_its_own_fp32_weights": {"label_agreement": own["label_agreement"],
                                        "miou_vs_fp32": own["miou_vs_fp32"]},
            "qat": {"epochs": epochs, "size": "512x1024", "batch": QAT_BATCH, "lr": QAT_LR,
                    "data": "the 48 calibration scenes", "loss": "distillation from fp32",
                    "calibration": "ModelOpt max, 16 batches",
                    "fine_tune_seconds": done["seconds"],
                    "library": result.metadata["quantization"]["qat"]["library"]}}


def train_once(tmp: Path, epochs: int) -> dict:
    """The briefly trained network under ``tmp/train`` (and its data under ``tmp/data``),
    reused when a finished run left it there."""
    import json

    done = tmp / "train" / "trained.json"
    if done.is_file():
        return json.loads(done.read_text())
    write_cityscapes_layout(tmp / "data", 60, SIZE)
    train = open_dataset("synthetic:160", "train", (96, 192))
    val = open_dataset(f"cityscapes:{tmp / 'data'}", "val")
    config = TrainConfig(size=(96, 192), epochs=epochs, batch=8, lr=2e-3,
                         class_weights="none", workers=0)
    trained = Trainer(build_model("ssr-cityscapes"), train, val, tmp / "train", config).fit()
    atomic_write_text(done, dumps_compact({"val_miou": trained["val_miou"]}))
    return trained


if __name__ == "__main__":
    main()
