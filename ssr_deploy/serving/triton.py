"""A real Triton Inference Server serving a model through the ``Segmenter``.

``tritonserver`` comes from, in order: ``--tritonserver PATH``, the ``TRITONSERVER``
environment variable, ``tritonserver`` on PATH, ``/opt/tritonserver`` (NVIDIA's container),
or the binary inside NVIDIA's PyTriton wheel (``pip install --no-deps nvidia-pytriton``:
Triton 2.51 with its python backend; its own Python layer is not used). The model is a
python-backend model (``triton_model.py``) with dynamic batching; clients speak HTTP and gRPC
(KServe v2) to the front door (``door.py``) on the user's ports, and Prometheus metrics are
Triton's own. Triton itself listens on a unix socket in this run's private folder (mode 0700,
its HTTP front off), so the door is the only way in: no other local user can reach Triton,
and nothing on its command line or in its environment is a secret. SIGTERM: Triton stops
taking requests, finishes those it accepted, and exits 0.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ssr_deploy
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.export.triton import valid_model_name
from ssr_deploy.io import open_in_place
from ssr_deploy.serving.checks import RESTRICTED_APIS

MODEL_FILE = Path(__file__).with_name("triton_model.py")


@dataclass(frozen=True)
class TritonInstall:
    """Where a ``tritonserver`` and its python backend are."""

    server: Path
    backends: Path  # holds python/ (libtriton_python.so, triton_python_backend_utils.py)
    stub: Path | None  # a python-backend stub for this Python, where the install has several
    libraries: tuple[Path, ...]  # for LD_LIBRARY_PATH

    @classmethod
    def find(cls, server: str | Path | None = None) -> TritonInstall:
        server = server or os.environ.get("TRITONSERVER") or shutil.which("tritonserver")
        if server:
            path = Path(server)
            if not path.is_file() or not os.access(path, os.X_OK):
                raise UsageError(f"tritonserver {path}: not an executable file; give the "
                                 "binary of a Triton install (bin/tritonserver)")
            backends = path.resolve().parent.parent / "backends"
            if not (backends / "python").is_dir():
                raise UsageError(f"tritonserver {path}: no python backend at {backends}/python, "
                                 "where a Triton install keeps it; give the bin/tritonserver of "
                                 "a Triton install, or pip install --no-deps nvidia-pytriton")
            return cls(path, backends, None, ())
        if Path("/opt/tritonserver/bin/tritonserver").is_file():
            return cls.find("/opt/tritonserver/bin/tritonserver")
        return cls._from_pytriton()

    @classmethod
    def _from_pytriton(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")  # located, not imported
        if spec is None or not spec.submodule_search_locations:
            raise SsrDeployError("serving needs a Triton server: pip install --no-deps "
                                 "nvidia-pytriton (Triton's binary, no CUDA needed), or give "
                                 "--tritonserver PATH of your own install")
        root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise SsrDeployError(f"{root.parent.name} has no python-backend stub for Python "
                                 f"{version}; serve from Python 3.8 to 3.13")
        libs = root.parent.parent / "nvidia_pytriton.libs"
        return cls(root / "bin" / "tritonserver", root / "backends", stub,
                   tuple(p for p in (libs, root / "external_libs") if p.is_dir()))


def _die_with_parent(parent: int):
    """For the server's process (run between fork and exec): SIGKILL when the process that
    started it dies, however it dies. SIGTERM was used before, and a server stopping
    gracefully could outlive `serve` by its exit timeout and more (a model mid-request, a
    client's open connection): with `serve` gone its front door is gone, nothing can reach
    the server, and only a kill frees its ports now. A parent that died before the signal
    was armed (the race between fork and prctl) is seen, and the child ends at once."""
    import contextlib
    import ctypes

    def arm() -> None:
        os.umask(0o077)  # its socket and the python backend's shared memory: this user's only
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arm


def is_ready(http_port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server answers ready (KServe v2 /v2/health/ready) on ``http_port``."""
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/v2/health/ready",
                                    timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def upstream_ready(address: str) -> bool:
    """Whether Triton answers ServerReady on its gRPC ``address``."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                service_pb2.ServerReadyRequest(), timeout=1).ready
        except grpc.RpcError:
            return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKDIR_PREFIX = "ssr-serve-"


class TritonServer:
    """``tritonserver`` serving ``model`` as ``name``; a context manager (start/stop).

    ``max_batch``: the largest batch Triton's dynamic batcher forms (the Segmenter splits
    it further if the model takes less); ``instances``: model copies, each its own process.
    ``host``: the address every endpoint binds (loopback by default); ``allow_api``: which
    of RESTRICTED_APIS the door opens to clients (the rest it refuses itself).
    """

    def __init__(self, model: str | Path, name: str = "ssrnet", http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, max_batch: int = 8,
                 instances: int = 1, queue_delay_us: int = 500, backend: str | None = None,
                 device: str | None = None, letterbox: bool = False,
                 tritonserver: str | Path | None = None, log: str | Path | None = None,
                 exit_timeout: int = 30, options: dict | None = None, host: str = "127.0.0.1",
                 allow_api: tuple[str, ...] = (), max_request_mb: int = 256) -> None:
        unknown = sorted(set(allow_api) - set(RESTRICTED_APIS))
        if unknown:
            raise UsageError(f"--allow-api {unknown[0]}: use one of {', '.join(RESTRICTED_APIS)}")
        self.host, self.allow_api = host, tuple(allow_api)
        if not valid_model_name(name):
            raise UsageError(f"--name {name!r}: a Triton model name is letters, digits, _, . "
                             "and - (no path separators or '..'), e.g. ssrnet")
        ports = {"--http-port": http_port, "--grpc-port": grpc_port,
                 "--metrics-port": metrics_port}
        if len(set(ports.values())) < 3:
            raise UsageError(f"{', '.join(f'{k} {v}' for k, v in ports.items())}: the three "
                             "ports must differ")
        self.model, self.name = Path(model), name
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.max_batch, self.instances, self.queue_delay_us = max_batch, instances, queue_delay_us
        self.backend, self.device, self.letterbox = backend, device, letterbox
        self.options = dict(options or {})  # the backend's (e.g. size for a checkpoint)
        self.install = TritonInstall.find(tritonserver)
        self.log_path = Path(log) if log else None
        self.exit_timeout = exit_timeout
        if not 1 <= max_request_mb <= 4096:
            raise UsageError(f"--max-request-mb {max_request_mb}: give 1 to 4096")
        self.max_request_bytes = max_request_mb << 20
        self.door = None
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self._log = None
        self.stopping = False
        self.labels_dtype = self._check_model()

    def _check_model(self) -> str:
        """Open the model once here: a bad model is refused before the server starts, and
        the label dtype the config declares is the model's (uint8, int32 past 256 classes)."""
        from ssr_deploy.runtime.segmenter import Segmenter

        with Segmenter.load(self.model, self.backend, self.device, **self.options) as seg:
            return "uint8" if len(seg.classes) <= 256 else "int32"

    # ---- the repository ---------------------------------------------------------------
    def config_pbtxt(self) -> str:
        triton_type = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32"}[self.labels_dtype]
        return "\n".join([
            f'name: "{self.name}"', 'backend: "python"', f"max_batch_size: {self.max_batch}",
            'input [ { name: "images" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] } ]',
            f'output [ {{ name: "labels" data_type: {triton_type} dims: [ -1, -1 ] }} ]',
            f"dynamic_batching {{ max_queue_delay_microseconds: {self.queue_delay_us} }}",
            f"instance_group [ {{ count: {self.instances} kind: KIND_CPU }} ]", ""])

    def _write_workdir(self) -> Path:
        sweep_stale_workdirs()
        work = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        try:
            return self._fill_workdir(work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # no temp folder outlives its command
            raise

    def _fill_workdir(self, work: Path) -> Path:
        (work / "owner.pid").write_text(str(os.getpid()))
        python = work / "backends" / "python"
        python.mkdir(parents=True)
        for item in (self.install.backends / "python").iterdir():
            if item.name != "__pycache__":
                (python / item.name).symlink_to(item)
        if self.install.stub:  # the stub built for this Python, under the name Triton runs
            stub = python / "triton_python_backend_stub"
            stub.unlink(missing_ok=True)
            shutil.copy2(self.install.stub, stub)
        version = work / "repo" / self.name / "1"
        version.mkdir(parents=True)
        (work / "repo" / self.name / "config.pbtxt").write_text(self.config_pbtxt())
        shutil.copyfile(MODEL_FILE, version / "model.py")
        package_root = str(Path(ssr_deploy.__file__).resolve().parents[1])
        site_dirs = [package_root, *site.getsitepackages(), site.getusersitepackages()]
        (version / "serve.json").write_text(json.dumps({
            "model": str(self.model.resolve()), "backend": self.backend, "device": self.device,
            "letterbox": self.letterbox, "labels_dtype": self.labels_dtype,
            "options": self.options,
            "site_dirs": [d for d in dict.fromkeys(site_dirs) if Path(d).is_dir()]}))
        return work

    # ---- the process ------------------------------------------------------------------
    @property
    def upstream(self) -> str:
        """Triton's gRPC address: a unix socket in the private work folder (Triton appends
        ":PORT" to the path it is given, and 0 is the port it is given)."""
        return f"unix:{self.workdir / 'triton'}:0"

    def command(self, repo: Path, backends: Path) -> list[str]:
        return [str(self.install.server), f"--model-repository={repo}",
                f"--backend-directory={backends}", "--allow-http=false",
                f"--grpc-address=unix:{self.workdir / 'triton'}", "--grpc-port=0",
                f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                f"--exit-timeout-secs={self.exit_timeout}", "--strict-readiness=true",
                "--log-verbose=0"]

    def start(self, timeout: float = 120.0) -> TritonServer:
        self.workdir = self._write_workdir()
        if len(str(self.workdir)) > 90:  # a unix socket's path is at most 107 bytes
            self.stop()
            raise SsrDeployError(f"the temp folder {self.workdir.parent} has too long a path "
                                 "for a unix socket; set TMPDIR to a short one, e.g. /tmp")
        self.log_file = self.log_path or self.workdir / "triton.log"
        env = dict(os.environ)
        libs = [str(p) for p in self.install.libraries] + [sysconfig.get_config_var("LIBDIR")
                                                           or ""]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        self._log = open_log(self.log_file)
        self.process = subprocess.Popen(
            self.command(self.workdir / "repo", self.workdir / "backends"), env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stopping:  # SIGTERM while starting
                self.stop()
                return self
            if self.process.poll() is not None:
                reason = self._failure()
                self.stop()
                raise SsrDeployError(f"tritonserver stopped while starting: {reason}")
            if upstream_ready(self.upstream):
                self._check_private()
                self._open_door()
                return self
            time.sleep(0.2)
        self.stop()
        raise SsrDeployError(f"tritonserver was not ready after {timeout:.0f} s; " + (
            f"see its log, {self.log_path}" if self.log_path else
            "run with --log FILE to keep its log"))

    def _check_private(self) -> None:
        """The door's promise, checked on the running server where /proc says: Triton listens
        on no TCP port but its metrics (a tritonserver that ignores --http=false would)."""
        ports = tcp_ports(self.process.pid)
        if ports and ports - {self.metrics_port}:
            self.stop()
            raise SsrDeployError(f"this tritonserver listens on TCP {sorted(ports)}, not on "
                                 "its unix socket alone: it would be reachable around the "
                                 "front door; use Triton 2.51 or later (--tritonserver)")

    def _open_door(self) -> None:
        """The front door on the user's ports (see door.py); a port in use is one line."""
        from ssr_deploy.serving.checks import Limits
        from ssr_deploy.serving.door import Door

        limits = Limits(self.name, self.max_batch, max_request_bytes=self.max_request_bytes,
                        inflight_bytes=2 * self.max_request_bytes)
        self.door = Door(limits, self.host, self.http_port, self.grpc_port, self.upstream,
                         open_apis=self.allow_api)
        try:
            self.door.start()
        except OSError as e:
            self.door = None
            self.stop()
            why = str(e.strerror or e)[:200]
            if e.errno == errno.EADDRINUSE or "in use" in why.lower():
                raise SsrDeployError(f"a port is in use ({why}); choose free ones with "
                                     "--http-port and --grpc-port") from None
            raise SsrDeployError(f"cannot listen on {self.host} ({why}): give an address of "
                                 "this machine with --host (127.0.0.1, ::1, 0.0.0.0)") from None

    def _failure(self) -> str:
        """The first error line of the server's log, for the one-line message."""
        if not self.log_file.is_file():
            return f"exit code {self.process.returncode}"
        lines = self.log_file.read_text(errors="replace").splitlines()
        errors = [ln for ln in lines if ln.startswith("E") and "CudaDriverHelper" not in ln
                  or ln.startswith("error:")]
        failed = [ln for ln in errors if "failed to load" in ln]
        in_use = [ln for ln in lines if "already in use" in ln.lower()
                  or "address in use" in ln.lower()]
        if in_use:  # the socket, not the GPU-less machine's NVML notice, is why it stopped
            return (f"a port is in use ({in_use[0].split('] ', 1)[-1].strip()[:200]}); choose "
                    "free ones with --http-port, --grpc-port and --metrics-port")
        line = (failed or errors or lines[-1:] or ["no output"])[0]
        return line.split("] ", 1)[-1].strip().strip('"')[:300]

    def ready(self) -> bool:
        return is_ready(self.http_port, self._client_host)

    def serve_forever(self, started=None) -> int:
        """Start, then block until the server exits; SIGTERM and Ctrl-C (also while it
        starts) make Triton finish the requests it accepted and exit. Returns its exit code
        (0 after a signal). ``started`` is called once the server is ready."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM,
                                                                   signal.SIGINT)}
        try:
            self.start()
            if self.process is None or self.process.poll() is not None:  # stopped starting
                return 0
            if started:
                started(self)
            while True:
                try:
                    return self.process.wait()
                except KeyboardInterrupt:
                    continue
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self._cleanup()

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then wait for the accepted requests to finish (Triton's exit timeout)."""
        code = None
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout or self.exit_timeout + 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        elif self.process:
            code = self.process.returncode
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self.door is not None:
            self.door.close()
            self.door = None
        if self._log:
            self._log.close()
            self._log = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"


def tcp_ports(pid: int) -> set[int] | None:
    """The TCP ports process ``pid`` listens on, from its sockets' inodes in /proc/net/tcp*
    (None where there is no /proc: not Linux)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def open_log(path: Path):
    """The server's log, opened for writing without following a symlink (one planted at the
    name is replaced by the new file, never written through), and only where the name is a
    plain file of its own (not a FIFO, not a hard link to another file); emptied once it is
    known to be the log's own."""
    if path.is_symlink():
        path.unlink()
    fd = open_in_place(path, "--log")
    os.ftruncate(fd, 0)
    return os.fdopen(fd, "wb")


def sweep_stale_workdirs() -> list[Path]:
    """Remove the work folders of `serve` runs that were killed (SIGKILL leaves no chance to
    clean up): each records its process id; a folder whose process is gone is stale."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            pid = int((folder / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
