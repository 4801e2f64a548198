"""The TensorRT code uses only names that every release it claims registers: checked against
the real bindings of TensorRT 10.3, 10.16, 11.0 and 11.4 (no TensorRT libraries needed)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from tests.export.tensorrt_bindings import RELEASES, registered_names

PACKAGE = Path(__file__).resolve().parents[2] / "ssr_deploy"

# The variable (or self.<attribute>) names our TensorRT code keeps TensorRT objects under.
RECEIVERS = {"builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
             "config": "IBuilderConfig", "trt_profile": "IOptimizationProfile",
             "timing_cache": "ITimingCache", "engine": "ICudaEngine",
             "context": "IExecutionContext", "trt_runtime": "Runtime", "trt_layer": "ILayer"}

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


def tensorrt_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "import_tensorrt()" in p.read_text()
                  and p.name != "__init__.py")


def _chain(node: ast.AST) -> list[str] | None:
    """``trt.BuilderFlag.FP16`` -> ["BuilderFlag", "FP16"]; None if not rooted at trt."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return parts[::-1] if isinstance(node, ast.Name) and node.id == "trt" else None


def _receiver(node: ast.Attribute) -> str | None:
    value = node.value
    if isinstance(value, ast.Name) and value.id in RECEIVERS:
        return value.id
    if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and \
            value.value.id == "self" and value.attr in RECEIVERS:
        return value.attr
    return None


def used_names() -> set[tuple[str, str, str]]:
    """(file:line, class or "" for the module, name) for every TensorRT name the code uses."""
    used = set()
    for path in tensorrt_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            chain = _chain(node)
            if chain:
                owner = ""
                for name in chain:
                    used.add((where, owner, name))
                    owner = name
            receiver = _receiver(node)
            if receiver:
                used.add((where, RECEIVERS[receiver], node.attr))
    return used


def missing(release: str) -> list[str]:
    names = registered_names(release)
    gaps = []
    for where, owner, name in sorted(used_names()):
        if owner.startswith("__") or name.startswith("__"):
            continue
        if owner in names and name not in names[owner]:
            gaps.append(f"{where}: {'trt.' + owner if owner else 'trt'}.{name}")
    return gaps


def test_the_scan_sees_the_tensorrt_code():
    files = {p.name for p in tensorrt_files()}
    assert {"tensorrt.py", "profile.py"} <= files, files
    owners = {owner for _, owner, _ in used_names()}
    assert {"", "Builder", "IBuilderConfig", "ICudaEngine", "IExecutionContext"} <= owners


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_every_tensorrt_name_is_registered(release):
    assert missing(release) == [], f"not in TensorRT {release}"


def test_the_check_would_catch_the_removed_weakly_typed_api():
    """The names TensorRT 11 removed are in 10.x and absent from 11.x."""
    old, new = registered_names("10.16"), registered_names("11.4")
    for owner, name in (("BuilderFlag", "FP16"), ("BuilderFlag", "INT8"),
                        ("IBuilderConfig", "int8_calibrator"), ("", "IInt8EntropyCalibrator2"),
                        ("ILayer", "precision")):
        assert name in old[owner] and name not in new[owner], (owner, name)
    for owner, name in (("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
                        ("IExecutionContext", "execute_async_v3")):
        assert name in old[owner] and name in new[owner], (owner, name)
