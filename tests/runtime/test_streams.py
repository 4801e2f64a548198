"""`video` from network streams, against real HTTP sources served here: a video file over
HTTP, and a live MJPEG stream (multipart/x-mixed-replace, as IP cameras serve it) read by
OpenCV's FFmpeg. A live stream is read newest-frame-first (frames inference cannot keep up
with are dropped and counted), a stream that drops is opened again with a growing pause, and
what cannot be opened is one line naming the URL as given."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ssr_deploy.cli import main
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.runtime.segmenter import Segmenter
from ssr_deploy.runtime.sources import open_source
from ssr_deploy.runtime.video import run_video
from tests.runtime.test_bench_video import _clip


class Streams:
    """A local HTTP server: ``/clip.avi`` a file; ``/live.mjpg`` an MJPEG stream of
    ``frames`` frames per connection at ``fps``, ending the connection after them; at most
    ``sessions`` connections are served, later ones refused (404)."""

    def __init__(self, clip, frames: int = 30, fps: float = 200.0, sessions: int = 1) -> None:
        self.clip, self.frames, self.fps, self.sessions = clip, frames, fps, sessions
        self.served = 0
        streams = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/clip.avi":
                    data = streams.clip.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "video/x-msvideo")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if self.path != "/live.mjpg" or streams.served >= streams.sessions:
                    self.send_error(404)
                    return
                streams.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for i in range(streams.frames):
                    ok, jpg = cv2.imencode(".jpg", np.full((64, 128, 3), 40 + i, np.uint8))
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(jpg)
                                         + jpg.tobytes() + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    time.sleep(1 / streams.fps)

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def video_of(streams: Streams, model, out, reconnects: int):
    """``ssr-deploy video`` of the live stream, which is closed after; it must succeed."""
    try:
        result = CliRunner().invoke(main, ["video", f"{streams.url}/live.mjpg", "--model",
                                           str(model), "-o", str(out), "--reconnects",
                                           str(reconnects)])
    finally:
        streams.close()
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def clip(tmp_path):
    return _clip(tmp_path / "clip.avi", 12, fourcc="MJPG")


def test_a_video_file_over_http_is_read_whole(tmp_path, clip, paper_uint8_onnx):
    streams = Streams(clip)
    try:
        stats = run_video(Segmenter.load(paper_uint8_onnx), f"{streams.url}/clip.avi",
                          str(tmp_path / "o.avi"))
    finally:
        streams.close()
    assert stats.frames == 12 and stats.dropped == 0 and stats.expected == 12


def test_a_live_stream_drops_what_inference_cannot_keep_up_with(tmp_path, clip, paper_uint8_onnx,
                                                               monkeypatch):
    streams = Streams(clip, frames=60, fps=200.0)
    prepare = Segmenter._prepare

    def slow(self, frames):  # inference at ~25 FPS behind a 200 FPS stream
        time.sleep(0.04)
        return prepare(self, frames)

    monkeypatch.setattr(Segmenter, "_prepare", slow)
    result = video_of(streams, paper_uint8_onnx, tmp_path / "o.avi", reconnects=0)
    summary = result.stdout.strip().splitlines()[-1]
    assert "frames dropped to stay live" in summary, summary
    written = int(summary.split(": ")[1].split()[0])
    dropped = int(summary.split("; ")[1].split()[0])
    assert 0 < written < 60 and dropped > 0 and written + dropped <= 60, summary


def test_a_stream_that_drops_is_opened_again_with_a_growing_pause(tmp_path, clip, paper_uint8_onnx):
    streams = Streams(clip, frames=8, fps=50.0, sessions=2)
    result = video_of(streams, paper_uint8_onnx, tmp_path / "o.avi", reconnects=2)
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert any("dropped; reconnecting in 0.5 s (attempt 1 of 2)" in n for n in notes), notes
    assert any("reconnecting in 1 s (attempt 2 of 2)" in n for n in notes), notes
    assert any("is gone after 2 reconnection attempts" in n for n in notes), notes
    assert streams.served == 2 and "1 reconnects" in result.stdout, result.stdout


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:1/live.mjpg", "cannot open the stream http://127.0.0.1:1/live.mjpg"),
    ("rtsp://127.0.0.1:1/stream", "cannot open the stream rtsp://127.0.0.1:1/stream"),
    ("ftp://host/x.mp4", "ftp:// is not a stream OpenCV opens here"),
])
def test_a_stream_that_cannot_be_opened_is_one_line_naming_the_url(url, words):
    with pytest.raises(SsrDeployError, match=words.replace("?", r"\?")):
        open_source(url)


def test_a_folder_keeps_its_images_names(tmp_path, paper_uint8_onnx):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("aachen_000001.png", "bonn_000002.jpg"):
        cv2.imwrite(str(frames / name), np.zeros((32, 64, 3), np.uint8))
    run_video(Segmenter.load(paper_uint8_onnx), str(frames), str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "aachen_000001.png", "bonn_000002.png"]
