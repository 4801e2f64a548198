"""A Triton Inference Server model repository from an exported model and its metadata:
``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/model.plan|model.onnx``."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.export.onnx_file import check_onnx_file
from ssr_deploy.io import atomic_write_many, check_input_file, check_outputs_spare_inputs
from ssr_deploy.names import pbtxt_string
from ssr_deploy.runs import run_lock
from ssr_deploy.spec import ModelSpec, sidecar_path

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8",
                "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


def valid_model_name(name: str) -> bool:
    """A Triton model name that is also a safe folder name (no separators, no '..')."""
    return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", name)) and ".." not in name


def config_pbtxt(spec: ModelSpec, name: str, platform: str, max_batch: int,
                 instances: int, kind: str = "KIND_GPU") -> str:
    """The config.pbtxt text. With ``max_batch`` > 0 Triton owns the batch dimension, so
    dims leave it out and dynamic batching is on; -1 marks dynamic height/width."""
    low, high = spec.batch_range
    if max_batch > 0 and (low > 1 or high < max_batch):
        raise SsrDeployError(
            f"--max-batch {max_batch} needs a model taking batches 1 to {max_batch}, and this "
            f"one takes {low} to {high}; export with --dynamic-batch --max-batch {max_batch} "
            "(and build the engine's profile up to it), or use --max-batch 0")

    def dims(shape: tuple[int, ...]) -> str:
        return ", ".join(str(d) for d in (shape[1:] if max_batch > 0 else shape))

    lines = [f"name: {pbtxt_string(name)}", f'platform: "{platform}"',
             f"max_batch_size: {max_batch}"]
    for word, tensor in (("input", spec.input), ("output", spec.output)):
        lines += [f"{word} [", "  {", f"    name: {pbtxt_string(tensor.name)}",
                  f"    data_type: {TRITON_TYPES[tensor.dtype]}",
                  f"    dims: [ {dims(tensor.shape)} ]", "  }", "]"]
    if max_batch > 0:
        preferred = sorted({b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max_batch} | {max_batch})
        lines += ["dynamic_batching {",
                  f"  preferred_batch_size: [ {', '.join(map(str, preferred[-3:]))} ]",
                  "  max_queue_delay_microseconds: 100", "}"]
    lines += ["instance_group [", "  {", f"    count: {instances}", f"    kind: {kind}", "  }",
              "]", "parameters {", '  key: "ssr_deploy_genotype"',
              f"  value: {{ string_value: "
              f"{pbtxt_string(spec.genotype_name + ' ' + spec.genotype_hash[:12])} }}",
              "}"]
    return "\n".join(lines) + "\n"


def check_plan_for_triton(name: str, spec: ModelSpec, server_tensorrt: str | None) -> None:
    """Triton's TensorRT backend loads plans of full TensorRT, of its own release only."""
    built = spec.engine
    if built is not None and built.builder == "tensorrt-rtx":
        raise SsrDeployError(f"{name} was built by TensorRT-RTX, whose engines Triton's TensorRT "
                             "backend cannot load: serve it with `ssr-deploy serve` (Triton's "
                             "python backend runs it), or give the fleet the .onnx or an engine "
                             "built with --builder tensorrt")
    version = built.version if built else None
    if server_tensorrt and version and _release(version) != _release(server_tensorrt):
        raise SsrDeployError(f"{name} was built by TensorRT {version}; the server's is "
                             f"{server_tensorrt}, and a plan loads only in the release that "
                             "built it: build the engine with that TensorRT (e.g. in the "
                             "server's container), or give the fleet the .onnx")


def _release(version: str) -> tuple[str, ...]:
    """``10.3.0.26`` -> ("10", "3", "0"): what must match for a plan to load."""
    return tuple(version.split(".")[:3])


def write_repository(model: str | Path, repo: str | Path, name: str = "ssrnet",
                     max_batch: int = 8, instances: int = 1, version: int = 1,
                     cpu: bool = False, server_tensorrt: str | None = None) -> Path:
    """Copy ``model`` (an .onnx or an engine) and its sidecar into a Triton repository.
    An engine must be full TensorRT's (Triton's TensorRT backend loads no TensorRT-RTX
    plan) and, where ``server_tensorrt`` names the server's TensorRT, of that release."""
    model, repo = Path(model), Path(repo)
    if not valid_model_name(name):
        raise UsageError(f"--name {name!r}: a Triton model name is letters, digits, _, . and - "
                         "(no path separators or '..'), e.g. ssrnet")
    check_input_file(model, "model file")
    is_engine = model.suffix.lower() in (".engine", ".plan")
    if not is_engine and model.suffix.lower() != ".onnx":
        raise SsrDeployError(f"{model.name}: Triton serves .onnx or .engine/.plan files here")
    # as `bench` would open it: its sidecar's sha256 matches, the ONNX reads, external data
    # stays inside its folder and is there (and is copied along)
    spec = ModelSpec.load(model)
    external = [] if is_engine else check_onnx_file(model)[1]
    if is_engine and cpu:
        raise SsrDeployError("a TensorRT engine runs on a GPU only; drop --cpu")
    if is_engine:
        check_plan_for_triton(model.name, spec, server_tensorrt)
    platform = "tensorrt_plan" if is_engine else "onnxruntime_onnx"
    if instances < 1:
        raise SsrDeployError(f"--instances {instances}: at least 1")
    text = config_pbtxt(spec, name, platform, max_batch, instances,
                        "KIND_CPU" if cpu else "KIND_GPU")
    folder = repo / name / str(version)
    target = folder / ("model.plan" if is_engine else "model.onnx")
    check_outputs_spare_inputs([("--repo", target)], [model])
    names = {target, sidecar_path(target), repo / name / "config.pbtxt"}
    for data in external:
        if folder / data.relative_to(model.resolve().parent) in names:
            raise SsrDeployError(f"{model.name} keeps its external data in a file named "
                                 f"{data.name}, the name the repository gives the model or its "
                                 "files; export it again (ssr-deploy keeps weights inside)")
    for part in (repo / name, folder):  # inside --repo, every folder is the repository's own
        if part.is_symlink():
            raise SsrDeployError(f"--repo: {part} is a symbolic link ({os.readlink(part)}); "
                                 "the repository's model folders must be real folders (a "
                                 "link would have the export replace files elsewhere): "
                                 "remove it, or give another --repo or --name")
    for part in (repo, repo / name, folder):
        if part.exists() and not part.is_dir():
            raise SsrDeployError(f"--repo: {part} is a file where the repository needs a "
                                 "folder; move it, or give another --repo or --name")
    folder.mkdir(parents=True, exist_ok=True)
    with run_lock(repo / name, "export triton", "--repo"):  # one writer per model folder
        _write(model, repo, name, folder, target, spec, text, external, is_engine)
    return repo / name / "config.pbtxt"


def _write(model: Path, repo: Path, name: str, folder: Path, target: Path, spec: ModelSpec,
           text: str, external: list[Path], is_engine: bool) -> None:
    sidecar = ModelSpec.sidecar_text(target.name, spec.sha256, spec.to_dict())  # names the copy
    writers = {target: lambda tmp: shutil.copyfile(model, tmp),
               sidecar_path(target): lambda tmp: tmp.write_text(sidecar),
               repo / name / "config.pbtxt": lambda tmp: tmp.write_text(text)}
    for data in external:
        relative = data.relative_to(model.resolve().parent)
        for part in (folder / relative).parents:
            if part == folder:
                break
            if part.is_symlink():
                raise SsrDeployError(f"--repo: {part} is a symbolic link; the repository's "
                                     "folders must be real folders: remove it")
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        writers[folder / relative] = lambda tmp, data=data: shutil.copyfile(data, tmp)
    atomic_write_many(writers)
    stale = folder / ("model.onnx" if is_engine else "model.plan")  # from an earlier export
    for path in (stale, sidecar_path(stale)):
        path.unlink(missing_ok=True)
