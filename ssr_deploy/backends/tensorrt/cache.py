"""Engines built on first use for the GPU that runs them, and kept: the ONNX is what ships.

``cached_engine("model.onnx")`` returns an engine of that ONNX for this machine: the one in
the cache folder (``~/.cache/ssr-deploy/engines``) when it was built from the same ONNX
(sha256), with the same optimisation profile, by the same builder (TensorRT or TensorRT-RTX)
for the same target (full TensorRT: this GPU's name and compute capability; TensorRT-RTX: the
compute capabilities it is built for) on the same platform; else one built now and kept.
Those make the file's name, so each GPU of a machine keeps its own. Inside, the builder's
version and this project's engine format are checked, the file against its sidecar's sha256,
and (on an RTX GPU) TensorRT-RTX's own validity verdict: an engine failing any check is never
used but rebuilt, with one line saying why (another version, a damaged file, ...).

One process builds a key while the others wait for it (flock); an engine appears under its
name complete, with its sidecar, or not at all (temp + rename). A cache folder that cannot be
written (read-only, full) gets the engine built in a temporary folder, used, and removed at
exit: one line says it will not be kept.

The ONNX is built as it is: its precision is the engine's (precision lives in the graph). The
fp16 graph comes from ``export onnx --precision fp16`` or ``ssr_deploy.export.engine_for``,
which convert and verify it first.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

from ssr_deploy.backends.tensorrt.build import BuildSettings, build_network, engine_metadata
from ssr_deploy.backends.tensorrt.engine import rtx_invalidity
from ssr_deploy.backends.tensorrt.library import (
    INSTALL,
    RTX_MAGIC,
    TensorRT,
    check_engine_builder,
    load_tensorrt,
    parse_compute_capabilities,
    rtx_targets,
    shared_logger,
    sm,
)
from ssr_deploy.backends.tensorrt.profiles import optimization_profile
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.io import (
    OutputError,
    atomic_write_many,
    cache_root,
    check_input_file,
    describe_os_error,
    open_in_place,
    seal,
    shared_with_others,
)
from ssr_deploy.spec import ModelSpec, file_sha256, sidecar_path

#: What an engine this project builds holds; raised when that changes (2: uint8 labels), so
#: engines an older ssr-deploy cached are rebuilt rather than used.
ENGINE_FORMAT = 2


def engine_cache_folder() -> Path:
    return cache_root() / "engines"


def say(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)


def cached_engine(onnx_path: str | Path, builder: str | None = None,
                  compute_capabilities: str | tuple[str, ...] | None = None, device: int = 0,
                  shapes: tuple[str | None, str | None, str | None] = (None, None, None),
                  folder: str | Path | None = None, to_run: bool = False) -> Path:
    """The engine of ``onnx_path`` for this machine, built on first use into ``folder``
    (default ``engine_cache_folder()``) and found there afterwards; see the module's text.

    ``builder``: "tensorrt" or "tensorrt-rtx" (None: full TensorRT where it imports, else
    TensorRT-RTX); ``compute_capabilities``: TensorRT-RTX's targets ("8.6,8.9"; None: the GPU
    ``device`` where there is one, else its defaults); ``shapes``: the profile's min, opt and
    max as BxHxW (None: the ONNX's own ranges); ``to_run``: refuse at once, before building,
    where this machine has no GPU to run the engine on."""
    onnx_path = check_input_file(onnx_path, "ONNX file")
    spec = ModelSpec.load(onnx_path)  # its sha256 checked against the file
    if spec.profile is not None:
        raise UsageError(f"{onnx_path.name}'s sidecar is an engine's, not an ONNX's")
    library = _library(builder, onnx_path)
    gpu, targets = _target(library, device, compute_capabilities)
    if to_run and gpu is None:
        raise SsrDeployError(f"--backend tensorrt runs {onnx_path.name} on an NVIDIA GPU, and "
                             "this machine has no usable one: run it with --backend "
                             "onnxruntime (or openvino on an Intel CPU)")
    profile = optimization_profile(spec, *shapes)
    asked = {"onnx_sha256": spec.sha256 or file_sha256(onnx_path),
             "precision": spec.precision, "profile": profile.to_dict(),
             "builder": library.builder,
             "gpu": None if library.is_rtx else {k: gpu[k] for k in ("name",
                                                                      "compute_capability")},
             "compute_capabilities": list(targets),
             "platform": f"{sys.platform}-{platform.machine()}"}
    key = {**asked, "version": library.version, "format": ENGINE_FORMAT}
    digest = hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{onnx_path.stem}-{digest}.engine"
    where = _where(gpu, targets)
    folder = Path(folder) if folder is not None else engine_cache_folder()
    shared = shared_with_others(folder)
    if shared:  # an engine planted there would run: this one is built, used, not kept
        tmp = _temporary(folder, name, f"is not trusted: {shared}, and an engine another user "
                         "put there would run here; chmod go-w it")
        return _publish(tmp / name, *_build(onnx_path, spec, library, gpu, targets, profile,
                                            key))
    try:
        lock = _lock(folder, name)
    except (OSError, OutputError) as e:
        tmp = _temporary(folder, name, _cannot_write(e))
        return _publish(tmp / name, *_build(onnx_path, spec, library, gpu, targets, profile,
                                            key))
    with lock:
        path = folder / name
        if any(os.path.lexists(p) for p in (path, sidecar_path(path))):
            problem = _problem(path, key, library, gpu)
            if problem is None:
                return path
            say(f"the cached engine {path} {problem}: building it again")
            _clear(path)
        else:
            say(f"building the engine of {onnx_path.name} for {where} (first use; kept in "
                f"{folder})")
        built = _build(onnx_path, spec, library, gpu, targets, profile, key)
        try:
            return _publish(path, *built)
        except OutputError as e:  # full: this run still gets its engine
            return _publish(_temporary(folder, name, _cannot_write(e)) / name, *built)


def _library(builder: str | None, onnx_path: Path) -> TensorRT:
    """The builder, or one line naming its install and what runs the ONNX without it."""
    try:
        return load_tensorrt(builder)
    except UsageError:
        raise
    except SsrDeployError as e:
        if "is not installed" not in str(e):
            raise
        raise SsrDeployError(f"{e}; or run {onnx_path.name} as it is with --backend "
                             "onnxruntime (or openvino on an Intel CPU)") from None


def _target(library: TensorRT, device: int, compute_capabilities) -> tuple[dict | None,
                                                                             tuple[str, ...]]:
    """(this GPU or None, TensorRT-RTX's targets) for the build; one line where this machine
    cannot build or run what is asked."""
    from ssr_deploy.backends.tensorrt import cuda as cuda_module

    try:
        gpu, why = cuda_module.find_gpu(device)
    except SsrDeployError as e:  # no cuda-python
        gpu, why = None, str(e)
    if not library.is_rtx:
        if compute_capabilities:
            parse_compute_capabilities(",".join(compute_capabilities)
                                       if isinstance(compute_capabilities, tuple)
                                       else compute_capabilities, library)
        if gpu is None:
            raise SsrDeployError(f"{library.title} builds an engine on the GPU that runs it, "
                                 f"and this machine has no usable NVIDIA GPU ({why}); run the "
                                 "ONNX with --backend onnxruntime (or openvino), or build "
                                 "ahead of time with --builder tensorrt-rtx for RTX GPUs")
        return gpu, ()
    if compute_capabilities:
        text = (",".join(compute_capabilities) if isinstance(compute_capabilities, tuple)
                else compute_capabilities)
        return gpu, parse_compute_capabilities(text, library)
    if gpu is None:
        return None, ()  # TensorRT-RTX's defaults: built ahead of time for any RTX GPU
    cc = gpu["compute_capability"]
    if cc not in rtx_targets(library):
        raise SsrDeployError(f"{library.title} does not run on {gpu['name']} ({sm(cc)}): "
                             f"install full TensorRT there ({INSTALL['tensorrt']}), or run "
                             "the ONNX with --backend onnxruntime")
    return gpu, (cc,)


def _where(gpu: dict | None, targets: tuple[str, ...]) -> str:
    if targets or gpu is None:
        return ", ".join(sm(cc) for cc in targets) if targets else \
            "TensorRT-RTX's default targets"
    return f"{gpu['name']} ({sm(gpu['compute_capability'])})"


@contextlib.contextmanager
def _locked(fd: int, folder: Path, name: str) -> Iterator[None]:
    import fcntl

    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another process is building {name} in {folder}: waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the lock file stays: removing it would let a waiter lock a stale name


def _lock(folder: Path, name: str):
    """The key's lock, taken when entered; OSError where the folder cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = open_in_place(folder / f".{name}.lock", "the engine cache's lock")
    return _locked(fd, folder, name)


def scratch_folder() -> Path:
    """A new temporary folder, removed when this process exits."""
    tmp = Path(tempfile.mkdtemp(prefix="ssr-deploy-engine-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


def _cannot_write(error: BaseException) -> str:
    reason = describe_os_error(error) if isinstance(error, OSError) else str(error)
    return f"cannot be written ({reason[:160]})"


def _temporary(folder: Path, name: str, why: str) -> Path:
    tmp = scratch_folder()
    say(f"the engine cache {folder} {why}: building {name} in {tmp}, which is removed at "
        "exit; the engine will not be kept (set XDG_CACHE_HOME to a folder of your own to "
        "keep it)")
    return tmp


def _problem(path: Path, key: dict[str, Any], library: TensorRT, gpu: dict | None
             ) -> str | None:
    """Why the cached ``path`` must not be used (None: it may)."""
    for part in (path, sidecar_path(path)):  # never read a FIFO (it blocks) or follow a link
        if part.is_symlink() or (part.exists() and not part.is_file()):
            return f"is not a plain file ({part.name} is a link, FIFO or device)"
    try:
        spec = ModelSpec.load(path)  # the file against its sidecar's sha256
        data = path.read_bytes()
        check_engine_builder(path.name, library.builder, data[:len(RTX_MAGIC)])
    except (SsrDeployError, OSError) as e:
        return f"is damaged or incomplete ({str(e)[:160]})"
    cached = spec.cache or {}
    if cached.get("format") != ENGINE_FORMAT:
        return (f"was built by an older ssr-deploy (engine format {cached.get('format')}, this "
                f"one writes {ENGINE_FORMAT})")
    if cached.get("version") != library.version:
        return f"was built with {cached.get('builder')} {cached.get('version')}, this is " \
               f"{library.title}"
    recorded = {k: v for k, v in cached.items() if k != "seal"}
    if recorded != key:
        differs = sorted(k for k in key if cached.get(k) != key[k])
        return f"does not match its name ({', '.join(differs)} differ)"
    if cached.get("seal") != _seal(spec.sha256, key):
        return "was not written by this cache (its seal does not match the engine)"
    if library.is_rtx and gpu is not None:  # its own verdict needs the GPU that runs it
        why = rtx_invalidity(library, library.module.Runtime(shared_logger(library)), data)
        if why is not None:
            return f"is invalid here ({why})"
    return None


def _build(onnx_path: Path, spec: ModelSpec, library: TensorRT, gpu: dict | None,
           targets: tuple[str, ...], profile, key: dict[str, Any]) -> tuple[bytes, dict]:
    """(the serialized engine, its sidecar's metadata, less the file's name and sha256)."""
    start = time.perf_counter()
    settings = BuildSettings(compute_capabilities=targets)
    meta = spec.to_dict()
    built = build_network(library, onnx.load(str(onnx_path)), onnx_path, settings, profile,
                          meta)
    engine_meta = engine_metadata(built.meta or meta, onnx_path, library,
                                  None if library.is_rtx else gpu, settings, profile,
                                  time.perf_counter() - start)
    digest = hashlib.sha256(built.engine).hexdigest()
    engine_meta.update(sha256=digest, cache={**key, "seal": _seal(digest, key)})
    return built.engine, engine_meta


def _seal(engine_sha256: str | None, key: dict[str, Any]) -> str:
    """What ties a cached engine to the key it was built for (see ``io.seal``)."""
    return seal(f"{engine_sha256}\n{json.dumps(key, sort_keys=True)}")


def _clear(path: Path) -> None:
    """A cache entry that is not a plain file (a planted FIFO or link) removed, so the new
    engine can take its name; a plain file is replaced by the rename."""
    for part in (path, sidecar_path(path)):
        if part.is_symlink() or (part.exists() and not part.is_file() and not part.is_dir()):
            part.unlink()


def _publish(path: Path, engine: bytes, meta: dict[str, Any]) -> Path:
    """The engine and its sidecar at ``path``, both or neither."""
    meta = {**meta, "file": path.name}
    ModelSpec.from_dict(meta)  # what the runtime will read back
    text = json.dumps(meta, indent=1)
    atomic_write_many({path: lambda tmp: tmp.write_bytes(engine),
                       sidecar_path(path): lambda tmp: tmp.write_text(text)})
    return path
