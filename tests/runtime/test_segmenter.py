
import numpy as np
import pytest
import torch

from ssr_deploy import Segmenter, SsrDeployError, build_model, save_checkpoint
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.cache import onnx_for_checkpoint
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.runtime.segmenter import as_bgr
from ssr_deploy.spec import IOFormat
from tests.export.test_onnx import trained_like


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same trained-like weights as a checkpoint, a labels ONNX and a logits ONNX."""
    folder = tmp_path_factory.mktemp("models")
    net = trained_like(build_model("ssr-cityscapes"), seed=3)
    ckpt = save_checkpoint(folder / "net.pt", net, net.genotype)
    labels = export_onnx(net, folder / "labels.onnx", size=(64, 128), dynamic_batch=True,
                         max_batch=4, io=IOFormat("uint8-nhwc-bgr", "labels")).path
    logits = export_onnx(net, folder / "logits.onnx", size=(64, 128)).path
    return {"net": net, "pt": ckpt, "labels": labels, "logits": logits}


def _reference(net, frame_bgr):
    """The plain network on the frame resized to 64x128 with our own numpy normalisation."""
    import cv2

    small = cv2.resize(frame_bgr, (128, 64), interpolation=cv2.INTER_LINEAR)
    x = small[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None] / 255
    with torch.no_grad():
        labels = net(torch.from_numpy(np.ascontiguousarray(x))).argmax(1)[0].numpy()
    return cv2.resize(labels.astype(np.uint8), frame_bgr.shape[1::-1],
                      interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize("which, backend", [("labels", None), ("logits", None),
                                            ("pt", "torch"), ("pt", "onnxruntime")])
def test_every_backend_agrees_with_pytorch_eager(models, which, backend):
    frames = street_frames(3, 96, 200, seed=1)  # not the model size: resized both ways
    path, options = models[which], {"size": (64, 128)} if backend == "torch" else {}
    if which == "pt" and backend == "onnxruntime":  # through its cached export
        path = onnx_for_checkpoint(path, (64, 128))
    with Segmenter.load(path, backend=backend, **options) as seg:
        got = seg.predict_batch(list(frames))
    for frame, labels in zip(frames, got, strict=True):
        assert labels.shape == (96, 200) and labels.dtype == np.uint8
        assert (labels == _reference(models["net"], frame)).mean() >= 0.999


def test_backends_agree_with_each_other(models):
    frames = list(street_frames(2, 64, 128, seed=9))
    outs = []
    for path, options in [(models["labels"], {}), (models["pt"], {"size": (64, 128)})]:
        with Segmenter.load(path, **options) as seg:
            outs.append(np.stack(seg.predict_batch(frames)))
    assert (outs[0] == outs[1]).mean() >= 0.999


def test_batches_beyond_the_model_limit_are_chunked(models):
    seg = Segmenter.load(models["labels"])
    assert seg.max_batch == 4
    frames = list(street_frames(6, 64, 128, seed=2))
    together = seg.predict_batch(frames)
    alone = [seg(f) for f in frames]
    assert all((a == b).all() for a, b in zip(together, alone, strict=True))
    static = Segmenter.load(models["logits"])  # fixed batch 1
    assert static.max_batch == 1 and len(static.predict_batch(frames[:3])) == 3


@pytest.mark.parametrize("make", [
    lambda f: f[..., 1],                                             # grayscale (H, W)
    lambda f: f[..., 1:2],                                           # (H, W, 1)
    lambda f: np.concatenate([f, np.full(f.shape[:2] + (1,), 255, np.uint8)], 2),  # BGRA
    lambda f: f.astype(np.uint16) * 257,                             # 16-bit
])
def test_other_image_kinds_are_converted(models, make):
    frame = street_frames(1, 50, 77, seed=4)[0]
    seg = Segmenter.load(models["labels"])
    labels = seg(make(frame))
    assert labels.shape == (50, 77)
    if make(frame).dtype == np.uint16 or make(frame).shape[-1] == 4:
        assert (labels == seg(frame)).all()  # exactly the same pixels after conversion


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 3), np.float32), "dtype float32 are ambiguous"),
    (np.zeros((4, 4, 2), np.uint8), "is not an image"),
    (np.zeros((0, 4, 3), np.uint8), "is empty"),
    ([[1, 2]], "not list"),
])
def test_bad_frames_are_refused_in_one_line(bad, message):
    with pytest.raises(SsrDeployError, match=message):
        as_bgr(bad)


def test_letterbox_keeps_aspect_and_returns_frame_size(models):
    seg = Segmenter.load(models["labels"], letterbox=True)
    frame = street_frames(1, 100, 100, seed=6)[0]
    fitted, box = seg._fit(frame)
    assert fitted.shape == (64, 128, 3) and box == (0, 32, 64, 64)
    assert (fitted[:, :32] == 0).all() and (fitted[:, 96:] == 0).all()
    assert seg(frame).shape == (100, 100)


def test_colorize_and_overlay(models):
    seg = Segmenter.load(models["labels"])
    labels = np.array([[0, 1], [13, 200]], np.uint8)
    colors = seg.colorize(labels)
    assert colors[0, 0].tolist() == [128, 64, 128][::-1]  # road, BGR
    assert colors[1, 0].tolist() == [0, 0, 142][::-1] and colors[1, 1].tolist() == [0, 0, 0]
    frame = street_frames(1, 2, 2)[0]
    assert seg.overlay(frame, labels, alpha=0.0).tolist() == frame.tolist()
    assert seg.overlay(frame, labels, alpha=1.0).tolist() == colors.tolist()
    with pytest.raises(SsrDeployError, match="do not match the frame"):
        seg.overlay(street_frames(1, 4, 4)[0], labels)


def test_loading_errors(tmp_path, models):
    with pytest.raises(SsrDeployError, match="does not exist"):
        Segmenter.load(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    with pytest.raises(SsrDeployError, match="no metadata sidecar"):
        Segmenter.load(bad)
    with pytest.raises(SsrDeployError, match="the torch backend runs checkpoints"):
        Segmenter.load(models["labels"], backend="torch")
    with pytest.raises(SsrDeployError, match="backend 'tflite' is not known"):
        Segmenter.load(models["labels"], backend="tflite")
    with pytest.raises(SsrDeployError, match="need --device cuda"):
        Segmenter.load(models["pt"], fp16=True)


def test_stream_equals_batch(models):
    frames = list(street_frames(5, 70, 90, seed=8))
    seg = Segmenter.load(models["labels"])
    streamed = list(seg.predict_stream(iter(frames)))
    assert len(streamed) == 5
    assert all((a == b).all() for a, b in zip(streamed, seg.predict_batch(frames), strict=True))


def test_onnxruntime_io_binding_gives_the_same_labels(models):
    frames = list(street_frames(2, 64, 128, seed=4))
    plain = Segmenter.load(models["labels"]).predict_batch(frames)
    bound = Segmenter.load(models["labels"], io_binding=True, threads=1)
    assert bound.backend.io_binding
    assert all((a == b).all() for a, b in zip(bound.predict_batch(frames), plain, strict=True))


def test_corrupt_or_changed_model_files(tmp_path, models):
    import shutil

    from ssr_deploy.export.metadata import read_sidecar
    from ssr_deploy.spec import ModelSpec, sidecar_path

    changed = tmp_path / "m.onnx"
    shutil.copyfile(models["labels"], changed)
    shutil.copyfile(sidecar_path(models["labels"]), sidecar_path(changed))
    changed.write_bytes(changed.read_bytes()[:-10])
    with pytest.raises(SsrDeployError, match="does not describe m.onnx"):
        Segmenter.load(changed)
    meta = {k: v for k, v in read_sidecar(models["labels"]).items() if k not in ("file",
                                                                                  "sha256")}
    ModelSpec.save(changed, meta)  # now the sidecar matches a truncated, corrupt model
    with pytest.raises(SsrDeployError, match="onnxruntime cannot load .*m.onnx"):
        Segmenter.load(changed)


def test_backend_options_are_typed_and_checked(models):
    """A misspelled or foreign option is an error (not silently dropped); bad values too;
    both are ValueError/TypeError as Python users expect, and SsrDeployError for the CLI."""
    cases = [({"fp16": True}, TypeError, "onnxruntime backend takes no option 'fp16'"),
             ({"thread": 2}, TypeError, "no option 'thread'; its options are threads"),
             ({"threads": 0}, ValueError, "threads=0"),
             ({"device": "gpu"}, ValueError, "device 'gpu' is not known")]
    for options, kind, message in cases:
        with pytest.raises(kind, match=message) as err:
            Segmenter.load(models["labels"], **options)
        assert isinstance(err.value, SsrDeployError)
    with pytest.raises(TypeError, match="torch backend takes no option 'io_binding'"):
        Segmenter.load(models["pt"], io_binding=True)
    with pytest.raises(ValueError, match="a checkpoint: it runs in the torch backend"):
        Segmenter.load(models["pt"], backend="onnxruntime")
    with pytest.raises(TypeError, match="a frame is a numpy array"):
        Segmenter.load(models["labels"])([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="alpha=5"):
        Segmenter.load(models["labels"]).overlay(street_frames(1, 8, 8)[0], alpha=5)


def test_an_engine_is_refused_on_the_cpu_before_tensorrt_is_needed(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ValueError, match="a TensorRT engine runs on a GPU: use --device cuda"):
        Segmenter.load(engine, device="cpu")
    with pytest.raises(TypeError, match="tensorrt backend takes no option 'threads'"):
        Segmenter.load(engine, threads=2)
