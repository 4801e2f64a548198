import dataclasses
import json

import cv2
import pytest
from click.testing import CliRunner

from ssr_deploy import Segmenter, SsrDeployError, build_model
from ssr_deploy.cli import main
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.runtime import bench
from ssr_deploy.runtime.sources import Source, open_source
from ssr_deploy.runtime.video import run_video


@pytest.fixture(scope="module")
def onnx_model(paper_uint8_onnx):
    return paper_uint8_onnx


def _clip(path, n, size=(48, 80), fps=10, fourcc="mp4v"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size[::-1])
    for frame in street_frames(n, *size, seed=n):
        writer.write(frame)
    writer.release()
    return path


def test_latency_stats():
    stats = bench.latency_stats([float(x) for x in range(1, 101)])
    assert stats["mean"] == 50.5 and stats["max"] == 100
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)


def test_bench_side_by_side_json_and_plot(tmp_path, onnx_model):
    entries = [("onnxruntime", Segmenter.load(onnx_model)), ("again", Segmenter.load(onnx_model))]
    results = bench.run(entries, [1, 3], iters=6, warmup=1, rounds=3)
    assert [(r.backend, r.batch) for r in results] == [("onnxruntime", 1), ("again", 1),
                                                       ("onnxruntime", 3), ("again", 3)]
    for r in results:
        assert len(r.samples_ms) == 6 and r.fps == pytest.approx(r.batch * 1e3 /
                                                                 r.latency_ms["mean"])
    doc = bench.report(results, bench.machine_info())
    text = json.dumps(doc)
    assert {"backend", "batch", "fps", "latency_ms"} <= set(doc["results"][0])
    assert set(doc["results"][0]["latency_ms"]) == {"mean", "p50", "p90", "p99", "max"}
    assert doc["ratios"][0]["fps_ratio"] == 1.0 and "samples_ms" not in text
    assert doc["machine"]["cores"] >= 1 and "onnxruntime" in doc["machine"]["versions"]
    png = bench.plot_histogram(results, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = bench.format_results(results)  # off a GPU the paper's column is left out
    assert "vs paper" not in table and "vs fp32" in table
    gpu = [dataclasses.replace(r, on_gpu=True, size=[512, 1024]) for r in results]
    assert "vs paper" in bench.format_results(gpu)
    converted = dataclasses.replace(results[0], agreement=0.99)
    assert "99.00% (below the gate)" in bench.format_results([converted])
    assert bench.report([converted], {})["results"][0]["verified"] is False


def test_cli_bench_compare(tmp_path, onnx_model):
    from ssr_deploy import save_checkpoint

    net = build_model("ssr-cityscapes")
    ckpt = save_checkpoint(tmp_path / "n.pt", net, net.genotype)
    result = CliRunner().invoke(main, ["bench", str(ckpt), "--size", "32x64", "--compare",
                                       "onnxruntime", "--iters", "3", "--warmup", "1",
                                       "--batch", "1,2", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["backend"] for r in doc["results"]] == ["torch", "onnxruntime"] * 2
    result = CliRunner().invoke(main, ["bench", str(onnx_model), "--batch", "x"])
    assert result.exit_code == 2 and "give batch sizes like 1,4,8" in result.output


def test_video_file_to_mp4_keeps_every_frame(tmp_path, onnx_model):
    clip = _clip(tmp_path / "in.mp4", 15)
    seg = Segmenter.load(onnx_model)
    done = []
    stats = run_video(seg, str(clip), str(tmp_path / "out.mp4"),
                      on_frame=lambda n, fps: done.append(n))
    assert stats.frames == 15 and done == list(range(1, 16)) and not stats.interrupted
    capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 15
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == \
        (80, 48)
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
    assert fourcc in ("mp4v", "fmp4")
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_image_folder_with_changing_sizes_to_pngs(tmp_path, onnx_model):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, size in enumerate([(40, 64), (64, 40), (33, 77)]):
        cv2.imwrite(str(folder / f"{i}.png"), street_frames(1, *size, seed=i)[0])
    stats = run_video(Segmenter.load(onnx_model), str(folder), str(tmp_path / "out"),
                      max_frames=2)
    assert stats.frames == 2
    written = sorted((tmp_path / "out").iterdir())
    assert [cv2.imread(str(p)).shape for p in written] == [(40, 64, 3), (64, 40, 3)]
    # into an mp4 the frame size is fixed by the first frame; later sizes are fitted to it
    stats = run_video(Segmenter.load(onnx_model), str(folder), str(tmp_path / "v.avi"))
    capture = cv2.VideoCapture(str(tmp_path / "v.avi"))
    assert stats.frames == 3 and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_ctrl_c_leaves_a_playable_file(tmp_path, onnx_model):
    clip = _clip(tmp_path / "in.mp4", 40)

    def interrupt(done, fps):
        if done == 5:
            raise KeyboardInterrupt

    stats = run_video(Segmenter.load(onnx_model), str(clip), str(tmp_path / "out.mp4"),
                      on_frame=interrupt)
    assert stats.interrupted and stats.frames == 5
    assert int(cv2.VideoCapture(str(tmp_path / "out.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_inference_error_leaves_nothing(tmp_path, onnx_model, monkeypatch):
    clip = _clip(tmp_path / "in.mp4", 10)
    calls = []
    prepare = Segmenter._prepare

    def fail_on_third(self, frames):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("device lost")
        return prepare(self, frames)

    monkeypatch.setattr(Segmenter, "_prepare", fail_on_third)
    with pytest.raises(RuntimeError, match="device lost"):
        run_video(Segmenter.load(onnx_model), str(clip), str(tmp_path / "out.mp4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("source, message", [("nope.mp4", "does not exist"),
                                             ("9", "camera 9 does not open")])
def test_bad_sources(tmp_path, source, message):
    with pytest.raises(SsrDeployError, match=message):
        open_source(source if source.isdigit() else str(tmp_path / source))


def test_unreadable_video_and_bad_output(tmp_path, onnx_model):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SsrDeployError, match="cannot read video"):
        open_source(str(bad))
    clip = _clip(tmp_path / "in.mp4", 2)
    with pytest.raises(SsrDeployError, match="folder .* does not exist"):
        run_video(Segmenter.load(onnx_model), str(clip), str(tmp_path / "no" / "o.mp4"))


def test_cli_video(tmp_path, onnx_model):
    clip = _clip(tmp_path / "in.mp4", 4)
    result = CliRunner().invoke(main, ["video", str(clip), "--model", str(onnx_model), "-o",
                                       str(tmp_path / "o.mp4"), "--draw-fps"])
    assert result.exit_code == 0, result.output
    assert "4 frames" in result.output


def test_a_link_planted_at_the_old_temp_name_is_never_written_through(tmp_path, onnx_model):
    """The temp name is random and created exclusively: a symlink another user planted where
    the old fixed name was (`.seg.partial.avi`) is left alone, and so is its target."""
    clip = _clip(tmp_path / "in.avi", 3, fourcc="MJPG")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".seg.partial.avi").symlink_to(victim)
    (out / "seg.avi").symlink_to(victim)  # a link at the final name is replaced, not followed
    stats = run_video(Segmenter.load(onnx_model), str(clip), str(out / "seg.avi"))
    assert stats.frames == 3 and victim.read_text() == "keep me"
    assert not (out / "seg.avi").is_symlink() and (out / "seg.avi").stat().st_size > 0


def test_two_runs_to_one_output_share_no_temp(tmp_path, onnx_model):
    import threading

    clip = _clip(tmp_path / "in.avi", 6, fourcc="MJPG")
    results, errors = [], []

    def run():
        try:
            results.append(run_video(Segmenter.load(onnx_model), str(clip),
                                     str(tmp_path / "seg.avi")).frames)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [6, 6]
    capture = cv2.VideoCapture(str(tmp_path / "seg.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_a_video_with_no_frame_is_an_error_not_a_success(tmp_path, onnx_model, monkeypatch):
    from ssr_deploy.runtime import video

    clip = _clip(tmp_path / "in.mp4", 2)
    monkeypatch.setattr(video, "open_source", lambda source, n=None: Source(source, iter(()),
                                                                            10.0, 0))
    with pytest.raises(SsrDeployError, match="no frame could be read .*nothing was written"):
        run_video(Segmenter.load(onnx_model), str(clip), str(tmp_path / "o.mp4"))
    assert not (tmp_path / "o.mp4").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_source_shorter_than_its_header_is_said(tmp_path, onnx_model, monkeypatch):

    from ssr_deploy.runtime import sources

    clip = _clip(tmp_path / "in.mp4", 3)
    real = sources.open_source

    def lying(source, n=None, *args):
        opened = real(source, n, *args)
        opened.expected = 20
        return opened

    monkeypatch.setattr(sources, "open_source", lying)
    result = CliRunner().invoke(main, ["video", str(clip), "--model", str(onnx_model), "-o",
                                       str(tmp_path / "o.mp4")])
    assert result.exit_code == 0, result.output
    assert "3 frames" in result.output and "its header gives 20 frames" in result.output


def test_an_absurd_camera_index_is_one_line():
    with pytest.raises(SsrDeployError, match="a camera index is 0 to 1023"):
        open_source("99999999999999999999")
