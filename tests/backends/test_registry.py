"""Which backend runs a file, and the rule that keeps backends in their packages: the code
above them (the runtime's loops, the latency table) never branches on a backend's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ssr_deploy import SsrDeployError
from ssr_deploy.backends import (
    BACKENDS,
    PACKAGES,
    backend_class,
    backend_for,
    part_timer_class,
    takes_option,
)
from ssr_deploy.backends.base import Backend, PartTimer

PACKAGE = Path(__file__).resolve().parents[2] / "ssr_deploy"


def test_files_go_to_their_backend_and_overrides_are_checked(tmp_path):
    assert [backend_for(f"m{s}") for s in (".onnx", ".xml", ".engine", ".plan", ".pt")] == [
        "onnxruntime", "openvino", "tensorrt", "tensorrt", "torch"]
    assert backend_for("m.onnx", "openvino") == "openvino"  # it also reads an fp32 ONNX
    for path, backend, message in (("m.xml", "onnxruntime", "m.xml is for openvino"),
                                   ("m.engine", "openvino", "m.engine is for tensorrt"),
                                   ("m.onnx", "tflite", "'tflite' is not known"),
                                   ("m.bin", None, "cannot tell how to run m.bin")):
        with pytest.raises(SsrDeployError, match=message):
            backend_for(path, backend)


@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_is_one_package_with_a_runner_and_a_part_timer(name):
    runner, timer = backend_class(name), part_timer_class(name)
    assert issubclass(runner, Backend) and issubclass(timer, PartTimer)
    assert runner.name == name and runner.__module__.startswith(PACKAGES[name][0] + ".")
    assert timer.__module__.startswith(PACKAGES[name][0] + ".")
    assert takes_option(name, "profile") == (name in ("onnxruntime", "openvino"))


def branches_on_a_backend(source: str, where: str) -> list[str]:
    """``x == "tensorrt"``, ``kind in ("torch", ...)``, ``{"onnxruntime": ...}.get(kind)``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            names = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            names = [k for k in node.keys if k is not None]
        for item in names:
            values = item.elts if isinstance(item, ast.Tuple | ast.List | ast.Set) else [item]
            if any(isinstance(v, ast.Constant) and v.value in BACKENDS for v in values):
                found.append(f"{where}:{node.lineno}")
    return found


def test_the_code_above_the_backends_never_branches_on_a_backends_name():
    files = [*sorted((PACKAGE / "runtime").glob("*.py")),
             *sorted((PACKAGE / "latency").glob("*.py"))]
    assert {"profile.py", "segmenter.py", "build.py", "clock.py"} <= {f.name for f in files}
    assert [hit for f in files
            for hit in branches_on_a_backend(f.read_text(), f.name)] == []


def test_the_check_would_see_a_branch():
    for line in ('if kind == "tensorrt":\n    pass\n', 'x = kind in ("torch", "cuda")\n',
                 'x = {"onnxruntime": 1}.get(kind)\n'):
        assert branches_on_a_backend(line, "x.py") == ["x.py:1"]
