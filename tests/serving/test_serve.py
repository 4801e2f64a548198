"""`ssr-deploy serve` on a real Triton server (the tritonserver binary of NVIDIA's PyTriton
wheel, python backend), driven by a real client (tritonclient), and `export triton`
repositories loaded by the same binary."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ssr_deploy import Segmenter, SsrDeployError, build_model
from ssr_deploy.data import classes
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.serving.triton import TritonInstall, TritonServer, free_port, is_ready
from ssr_deploy.spec import IOFormat, file_sha256
from tests.helpers import random_genotype

tritonclient = pytest.importorskip("tritonclient.grpc", reason="pip install 'ssr-deploy[serve]'")
from tritonclient.utils import InferenceServerException  # noqa: E402

from ssr_deploy.serving.client import SegmentationClient, load  # noqa: E402

try:
    INSTALL = TritonInstall.find()
except SsrDeployError as e:  # the README's install has it; say why where it does not
    pytest.skip(str(e), allow_module_level=True)


def _export(folder, size):
    """The tiny network, batches 1 to 8, uint8 frames in, labels out, at ``size``."""
    path = folder / f"m{size[0]}.onnx"
    genotype = dataclasses.replace(random_genotype(7, max_stages=2, max_width=12),
                                   classes=classes.NAMES, palette=classes.PALETTE)
    export_onnx(build_model(genotype).eval(), path, size=size, dynamic_batch=True,
                max_batch=8, simplify=False, io=IOFormat("uint8-nhwc-bgr", "labels"))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("serve"), (32, 64))


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """The same network at 384x768: each batch takes tens of milliseconds in the server,
    far longer than a client spends between two requests, so requests are in flight at
    any moment of a run of them."""
    return _export(tmp_path_factory.mktemp("serve"), (384, 768))


def _ports():
    return free_port(), free_port(), free_port()


@pytest.fixture(scope="module")
def server(model):
    http, grpc, metrics = _ports()
    with TritonServer(model, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      max_batch=8) as s:
        yield s


def _frames(n, h=48, w=80, seed=3):
    return np.stack(street_frames(n, h, w, seed=seed))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_labels_equal_the_segmenters(server, model, protocol):
    frames = _frames(3)
    with Segmenter.load(model) as seg:
        expected = np.stack(seg.predict_batch(list(frames)))
    client = SegmentationClient(server.url if protocol == "http" else server.grpc_url,
                                protocol=protocol)
    assert client.ready()
    labels = client.segment(frames)
    assert labels.dtype == np.uint8 and labels.shape == (3, 48, 80)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(client.segment(frames[0]), expected[0])  # one frame
    client.close()


def test_eight_clients_twenty_five_requests_each_without_an_error(server, model):
    frame = _frames(1)[0]
    with Segmenter.load(model) as seg:
        expected = seg(frame)
    result = load(server.grpc_url, frame, clients=8, requests=25, expected=expected)
    assert result["errors"] == [] and result["ok"] == 200, result["errors"][:3]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                     timeout=5).read().decode()
    success = [ln for ln in metrics.splitlines()
               if ln.startswith('nv_inference_request_success{model="ssrnet"')]
    assert success and float(success[0].split()[-1]) >= 200


def test_malformed_requests_get_errors_and_the_server_serves_on(server):
    import tritonclient.http as http

    client = SegmentationClient(server.grpc_url, protocol="grpc")
    good = _frames(1)
    malformed = [
        good.astype(np.float32),  # wrong dtype
        good.astype(np.int32),
        good[0, :, :, 0],  # wrong rank: (H, W)
        good[None],  # wrong rank: 5 dims
        np.zeros((1, 48, 80, 4), np.uint8),  # 4 channels
        np.zeros((1, 0, 80, 3), np.uint8),  # empty height
        np.zeros((1, 48, 0, 3), np.uint8),  # empty width
        np.zeros((9, 8, 8, 3), np.uint8),  # over --max-batch
    ]
    errors = []
    for frames in malformed:
        with pytest.raises(InferenceServerException) as e:
            client.segment(frames)
        errors.append(str(e.value))
    other = SegmentationClient(server.grpc_url, model="nope", protocol="grpc")
    with pytest.raises(InferenceServerException):  # a model that is not there
        other.segment(good)
    raw = http.InferenceServerClient(server.url)  # an input of the wrong name
    tensor = http.InferInput("frames", list(good.shape), "UINT8")
    tensor.set_data_from_numpy(good)
    with pytest.raises(InferenceServerException):
        raw.infer("ssrnet", [tensor])
    assert len(errors) + 2 == 10
    assert "images are UINT8, not FP32" in errors[0] and "send (batch, H, W, 3)" in errors[2]
    assert "H and W 1 to 8192, 3 channels" in errors[5] and "batch 1 to 8" in errors[7]
    with urllib.request.urlopen(f"http://{server.url}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    assert client.segment(good).shape == (1, 48, 80)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_server_survives_hostile_requests_interleaved_with_normal_ones(server, model):
    """A request declaring 30 GB with 3 values (it aborted Triton once), an 805 MB gRPC
    message, malformed and normal requests, from four threads at once: every hostile one is
    refused before Triton allocates, every normal one answered, the same tritonserver
    process stays ready, and its memory stays bounded."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    pid, before = server.process.pid, _rss_mib(server.process.pid)
    good = _frames(1)
    with Segmenter.load(model) as seg:
        expected = seg(good[0])

    def huge_json() -> int:
        body = json.dumps({"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3],
                                       "datatype": "UINT8", "data": [1, 2, 3]}]}).encode()
        request = urllib.request.Request(f"http://{server.url}/v2/models/ssrnet/infer",
                                         data=body, method="POST")
        try:
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as e:
            return e.code
        return 200

    def huge_grpc() -> str:
        channel = grpc.insecure_channel(server.grpc_url, options=[
            ("grpc.max_send_message_length", -1)])
        request = service_pb2.ModelInferRequest(model_name="ssrnet")
        tensor = request.inputs.add(name="images", datatype="UINT8")
        tensor.shape.extend([1, 16384, 16384, 3])
        request.raw_input_contents.append(bytes(16384 * 16384 * 3))
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        except grpc.RpcError as e:
            return e.code().name
        finally:
            channel.close()
        return "OK"

    def normal() -> bool:
        client = SegmentationClient(server.grpc_url, protocol="grpc")
        try:
            return bool(np.array_equal(client.segment(good)[0], expected))
        finally:
            client.close()

    def malformed() -> bool:
        client = SegmentationClient(server.url, protocol="http")
        try:
            client.segment(np.zeros((1, 0, 80, 3), np.uint8))
        except InferenceServerException:
            return True
        finally:
            client.close()
        return False

    from concurrent.futures import ThreadPoolExecutor

    calls = [huge_json, normal, malformed, normal, huge_grpc, normal, huge_json, malformed,
             normal, normal] * 2
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda call: (call.__name__, call()), calls))
    by = {}
    for name, value in results:
        by.setdefault(name, []).append(value)
    assert set(by["huge_json"]) == {400} and set(by["huge_grpc"]) == {"RESOURCE_EXHAUSTED"}
    assert all(by["normal"]) and all(by["malformed"])
    assert server.process.poll() is None and server.process.pid == pid and server.ready()
    assert _rss_mib(pid) - before < 512, (before, _rss_mib(pid))


def test_sigterm_under_load_finishes_the_accepted_requests_and_exits_0(slow_model, tmp_path):
    model = slow_model
    http, grpc, metrics = _ports()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ssr_deploy", "serve", str(model),
                             "--http-port", str(http), "--grpc-port", str(grpc),
                             "--metrics-port", str(metrics), "--max-batch", "4"],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not is_ready(http):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
    frame = _frames(1, 384, 768)[0]
    with Segmenter.load(model) as seg:
        expected = seg(frame)
    outcomes, stop, lock = [], threading.Event(), threading.Lock()

    def client():
        c = SegmentationClient(f"127.0.0.1:{grpc}", protocol="grpc", timeout=120)
        while not stop.is_set():
            sent = time.monotonic()
            try:
                ok = np.array_equal(c.segment(frame), expected)
                outcome = ("ok" if ok else "wrong", sent, time.monotonic(), "")
            except InferenceServerException as e:
                outcome = ("error", sent, time.monotonic(), str(e))
            with lock:
                outcomes.append(outcome)
            if outcome[0] == "error":
                break

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    while len([o for o in outcomes if o[0] == "ok"]) < 16:
        time.sleep(0.05)
    term = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not [o for o in outcomes if o[0] == "wrong"]
    # every failure is a refusal of a request the stopping server did not take
    refusals = ("unavailable", "stopping", "connect", "not ready", "socket closed",
                "no available versions")  # the model unloaded after its last request
    failed = [o[3] for o in outcomes if o[0] == "error"]
    assert all(any(r in f.lower() for r in refusals) for f in failed), failed
    # requests in flight when SIGTERM came were answered, not dropped
    in_flight = [o for o in outcomes if o[1] < term < o[2]]
    assert any(o[0] == "ok" for o in in_flight), (term, in_flight)


def _children(pid: int, name: str) -> list[int]:
    """The processes called ``name`` whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            comm, ppid = fields[0].split("(", 1)[1], int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and comm == name:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_a_killed_serve_leaves_no_server_behind(model):
    """SIGKILL gives `serve` no chance to stop its server: the server's parent-death signal
    (SIGKILL: with `serve` gone nothing can reach it) ends it at once, mid-request or not,
    so nothing keeps the ports."""
    http, metrics = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ssr_deploy", "serve", str(model),
                             "--http-port", str(http), "--grpc-port", str(free_port()),
                             "--metrics-port", str(metrics)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not is_ready(http):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
    servers = _children(proc.pid, "tritonserver")
    assert len(servers) == 1
    client = SegmentationClient(f"127.0.0.1:{http}", protocol="http")  # a connection open
    client.segment(_frames(1))
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _running(servers[0]):
        assert time.monotonic() < deadline, "the server outlived serve"
        time.sleep(0.1)
    import socket

    while True:  # its metrics port is free again (its model's process lets go a moment later)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", metrics))
                break
            except OSError:
                assert time.monotonic() < deadline + 10, "the server's port stayed taken"
                time.sleep(0.2)


def test_export_triton_repositories_load_in_the_real_server(model, tmp_path):
    """onnx and engine repositories, with and without batching: the config is parsed and
    accepted, the only failure the missing onnxruntime/tensorrt backend library (this
    server has the python backend only). A control with a broken config fails otherwise."""
    from ssr_deploy.export.triton import write_repository

    repo = tmp_path / "repo"
    engine = tmp_path / "m.engine"  # the repository only copies an engine and its sidecar
    engine.write_bytes(b"not a real plan")
    meta = {**json.loads(Path(f"{model}.json").read_text()), "sha256": file_sha256(engine)}
    Path(f"{engine}.json").write_text(json.dumps(meta))
    cases = {"onnx_b8": (model, 8, False), "onnx_b0": (model, 0, False),
             "onnx_cpu": (model, 8, True), "plan_b8": (engine, 8, False),
             "plan_b0": (engine, 0, False)}
    for name, (source, batch, cpu) in cases.items():
        write_repository(source, repo, name, max_batch=batch, cpu=cpu)
    write_repository(model, repo, "broken", max_batch=8)
    text = (repo / "broken" / "config.pbtxt").read_text()
    (repo / "broken" / "config.pbtxt").write_text(text.replace("TYPE_UINT8", "TYPE_NOPE", 1))
    states = _load_repository(repo, tmp_path)
    for name in cases:
        backend = "tensorrt" if name.startswith("plan") else "onnxruntime"
        assert states[name] == (f"unable to find backend library for backend '{backend}'"), (
            name, states[name])
    assert "backend library" not in states["broken"] and states["broken"]


def _load_repository(repo, tmp_path):
    """{model: why it is not ready} from tritonserver's repository index."""
    http, grpc, metrics = _ports()
    empty = tmp_path / "no-backends"
    empty.mkdir()
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(map(str, INSTALL.libraries))}
    proc = subprocess.Popen([str(INSTALL.server), f"--model-repository={repo}",
                             f"--backend-directory={empty}", f"--http-port={http}",
                             f"--grpc-port={grpc}", f"--metrics-port={metrics}",
                             "--exit-on-error=false"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{http}/v2/repository/index",
                                                 data=b"{}", method="POST")
                with urllib.request.urlopen(request, timeout=2) as r:
                    index = json.loads(r.read())
                # a model whose config cannot be read is listed without version or state
                if index and all(m.get("state") or "version" not in m for m in index):
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    reasons = {}
    for m in index:
        reason = m.get("reason", "config not read" if "version" not in m else "")
        reasons[m["name"]] = (reason.removeprefix("Invalid argument: ").split(", try")[0]
                              if m.get("state") != "READY" else "ready")
    return reasons


def test_serve_refusals_name_the_problem(model, tmp_path):
    from click.testing import CliRunner

    from ssr_deploy.cli import main

    runner = CliRunner()
    cases = [([str(tmp_path / "none.onnx")], "does not exist"),
             ([str(model), "--name", "../x"], "a Triton model name"),
             ([str(model), "--http-port", "9000", "--grpc-port", "9000"], "must differ"),
             ([str(model), "--tritonserver", str(model)], "not an executable file")]
    for args, message in cases:
        result = runner.invoke(main, ["serve", *args])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_model_the_server_cannot_load_stops_it_with_the_reason(model, tmp_path):
    broken = tmp_path / "m.onnx"
    broken.write_bytes(Path(model).read_bytes())
    Path(f"{broken}.json").write_text(Path(f"{model}.json").read_text())
    server = TritonServer(broken, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port())
    broken.write_bytes(b"garbage")  # after the check: the server's own load fails
    with pytest.raises(SsrDeployError, match="tritonserver stopped while starting: .*ssrnet"):
        server.start(timeout=120)
    assert server.workdir is None and server.process.poll() is not None


def test_two_instances_load_and_serve(model):
    frame = _frames(1)[0]
    with Segmenter.load(model) as seg:
        expected = seg(frame)
    with TritonServer(model, http_port=free_port(), grpc_port=free_port(),
                      metrics_port=free_port(), instances=2,
                      allow_api=("model-config",)) as server:
        with urllib.request.urlopen(f"http://{server.url}/v2/models/ssrnet/config",
                                    timeout=5) as r:
            config = json.loads(r.read())
        assert config["instance_group"][0]["count"] == 2
        result = load(server.grpc_url, frame, clients=4, requests=5, expected=expected)
        assert result["errors"] == [] and result["ok"] == 20


def _listening() -> dict[int, set[str]]:
    """Port -> the addresses a TCP socket listens on (from /proc/net/tcp and tcp6)."""
    import ipaddress

    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is 127.0.0.1
            found.setdefault(int(port, 16), set()).add(str(ip))
    return found


def test_serve_binds_loopback_and_keeps_the_admin_apis_closed(server, tmp_path):
    """By default every endpoint listens on 127.0.0.1 only, and a client can infer and read
    health and metadata, nothing else: no shared-memory registration (outputs written into
    a host segment of its choosing), no log or trace changes, no repository control."""
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    listening = _listening()
    for port in (server.http_port, server.grpc_port, server.metrics_port):
        assert listening[port] == {"127.0.0.1"}, (port, listening.get(port))
    for client in (http.InferenceServerClient(server.url),
                   grpc.InferenceServerClient(server.grpc_url)):
        assert client.is_server_ready() and client.get_model_metadata("ssrnet")
        calls = [lambda c=client: c.register_system_shared_memory("x", "/ssr-victim", 64),
                 lambda c=client: c.update_log_settings({"log_verbose_level": 1}),
                 lambda c=client: c.update_trace_settings(settings={"trace_rate": "1"}),
                 lambda c=client: c.unload_model("ssrnet"),
                 lambda c=client: c.get_inference_statistics("ssrnet")]
        for call in calls:
            with pytest.raises(InferenceServerException):
                call()
    assert not Path("/dev/shm/ssr-victim").exists()
    assert SegmentationClient(server.url).segment(_frames(1)).shape == (1, 48, 80)


def test_serve_log_never_destroys_an_input_or_follows_a_link(model, tmp_path):
    from click.testing import CliRunner

    from ssr_deploy.cli import main
    from ssr_deploy.serving.triton import open_log

    before = Path(model).read_bytes()
    result = CliRunner().invoke(main, ["serve", str(model), "--log", str(model)])
    assert result.exit_code == 1 and "is an input of this command" in result.output
    assert Path(model).read_bytes() == before
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    planted = tmp_path / "triton.log"
    planted.symlink_to(victim)
    with open_log(planted) as log:
        log.write(b"server output")
    assert victim.read_text() == "keep me" and not planted.is_symlink()
    assert planted.read_bytes() == b"server output"


def test_a_killed_serves_work_folder_is_swept_by_the_next(tmp_path):
    import tempfile

    from ssr_deploy.serving.triton import WORKDIR_PREFIX, sweep_stale_workdirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    (stale / "owner.pid").write_text(str(dead.pid))
    live = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    (live / "owner.pid").write_text(str(os.getpid()))
    try:
        assert stale in sweep_stale_workdirs()
        assert not stale.exists() and live.is_dir()
    finally:
        import shutil

        shutil.rmtree(live, ignore_errors=True)


def test_a_port_in_use_is_named_as_the_reason(model):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = TritonServer(model, http_port=taken.getsockname()[1], grpc_port=free_port(),
                              metrics_port=free_port())
        with pytest.raises(SsrDeployError, match=r"a port is in use .*already in use.*choose "
                                                 "free ones with --http-port"):
            server.start(timeout=120)
