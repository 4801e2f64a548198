"""Every name the real TensorRT Python bindings register, per release, read on a machine
without TensorRT.

The ``tensorrt-cu1x-bindings`` wheels hold the compiled module. It links against
libnvinfer, libnvinfer_plugin and libnvonnxparser, which cannot be installed here; but
registering the API calls none of them, so with stand-in libraries that export the dozen
entry points the module names (each returning null, never called) it imports, and ``dir()``
lists exactly what that release registers. Wheels and name lists are cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

# The releases ssr-deploy claims: the oldest and newest 10.x, the first and newest 11.x.
RELEASES = {"10.3": ("tensorrt-cu12-bindings", "10.3.0"),
            "10.16": ("tensorrt-cu12-bindings", "10.16.1.11"),
            "11.0": ("tensorrt-cu13-bindings", "11.0.0.114"),
            "11.4": ("tensorrt-cu13-bindings", "11.4.0.106")}

ENTRY_POINTS = ("createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL",
                "createInferRuntime_INTERNAL", "createNvOnnxParserRefitter_INTERNAL",
                "createNvOnnxParser_INTERNAL", "getBuilderPluginRegistry",
                "getNvOnnxParserVersion", "getPluginRegistry", "initLibNvInferPlugins",
                "getInferLibVersion")

DUMP = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("tensorrt", sys.argv[1])
trt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trt)
names = {"": sorted(dir(trt))}
for name in dir(trt):
    value = getattr(trt, name)
    if isinstance(value, type):
        names[name] = sorted(dir(value))
json.dump(names, sys.stdout)
"""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    path = Path(base) / "ssr-deploy" / "tensorrt-bindings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stub_libraries(folder: Path, major: str) -> Path:
    """libnvinfer.so.<major> and friends exporting the entry points, built with the C compiler."""
    lib = folder / f"stub-{major}"
    if (lib / f"libnvonnxparser.so.{major}").is_file():
        return lib
    lib.mkdir(exist_ok=True)
    source = lib / "stub.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in ENTRY_POINTS))
    for name in ("nvinfer", "nvinfer_plugin", "nvonnxparser"):
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib / f"lib{name}.so.{major}"),
                        str(source)], check=True)
    return lib


def registered_names(release: str) -> dict[str, list[str]]:
    """{"": module names, "ClassName": its attributes} for a release in RELEASES."""
    package, version = RELEASES[release]
    folder = cache_dir()
    names_file = folder / f"{package}-{version}.names.json"
    if names_file.is_file():
        return json.loads(names_file.read_text())
    wheels = list(folder.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", f"{package}=={version}", "-d", str(folder)],
                       check=True)
        wheels = list(folder.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    module = folder / f"{package}-{version}.so"
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith("/tensorrt.so"))
        module.write_bytes(wheel.read(member))
    stubs = _stub_libraries(folder, version.split(".")[0])
    env = {**os.environ, "LD_LIBRARY_PATH": str(stubs)}
    done = subprocess.run([sys.executable, "-c", DUMP, str(module)], env=env,
                          capture_output=True, text=True, check=True)
    names_file.write_text(done.stdout)
    return json.loads(done.stdout)
