"""The TensorRT code uses only names that every release it claims registers: checked against
the real bindings of TensorRT 10.3, 10.16, 11.0 and 11.4 (no TensorRT libraries needed) and
the installed TensorRT-RTX 1.7.

Code for one library only is marked where it stands: inside ``if ....is_rtx:`` (or a function
or class with ``rtx`` in its name) it is TensorRT-RTX's and checked against it alone; in that
``if``'s ``else:`` it is full TensorRT's; everything else must be in both."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

from tests.export.tensorrt_bindings import RELEASES, registered_names

PACKAGE = Path(__file__).resolve().parents[2] / "ssr_deploy"

# The variable (or self.<attribute>) names our TensorRT code keeps TensorRT objects under.
RECEIVERS = {"builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
             "config": "IBuilderConfig", "trt_profile": "IOptimizationProfile",
             "timing_cache": "ITimingCache", "engine": "ICudaEngine",
             "context": "IExecutionContext", "trt_runtime": "Runtime", "trt_layer": "ILayer",
             "runtime_config": "IRuntimeConfig", "rtx_cache": "IRuntimeCache"}

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


def tensorrt_files() -> list[Path]:
    """The files that take a TensorRT module from a loaded library (``trt = ....module``)."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if re.search(r"\btrt = [\w.]*\bmodule\b", p.read_text()))


def _is_rtx_test(node: ast.expr) -> bool | None:
    """``x.is_rtx`` -> True, ``not x.is_rtx`` -> False, anything else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _is_rtx_test(node.operand)
        return None if inner is None else not inner
    return True if isinstance(node, ast.Attribute) and node.attr == "is_rtx" else None


def _library_of(tree: ast.AST) -> dict[ast.AST, str]:
    """Each node -> "rtx", "full" or "both": which library's code it is."""
    owner: dict[ast.AST, str] = {}

    def visit(node: ast.AST, library: str) -> None:
        owner[node] = library
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and "rtx" in node.name.lower():
            library = "rtx"
        if isinstance(node, ast.FunctionDef) and node.name.startswith("full_tensorrt"):
            library = "full"
        if isinstance(node, ast.If) and (rtx := _is_rtx_test(node.test)) is not None:
            visit(node.test, library)
            for child in node.body:
                visit(child, "rtx" if rtx else "full")
            for child in node.orelse:
                visit(child, "full" if rtx else "rtx")
            return
        if isinstance(node, ast.IfExp) and (rtx := _is_rtx_test(node.test)) is not None:
            visit(node.test, library)
            visit(node.body, "rtx" if rtx else "full")
            visit(node.orelse, "full" if rtx else "rtx")
            return
        for child in ast.iter_child_nodes(node):
            visit(child, library)

    visit(tree, "both")
    return owner


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


def used_names(library: str | None = None) -> set[tuple[str, str, str]]:
    """(file:line, class or "" for the module, name) for every TensorRT name the code uses
    (with ``library`` "rtx" or "full": in code that library runs)."""
    used = set()
    for path in tensorrt_files():
        tree = ast.parse(path.read_text())
        owner_library = _library_of(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            if library and owner_library[node] not in (library, "both"):
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


def rtx_names() -> dict[str, list[str]]:
    """The same listing for the installed TensorRT-RTX (its library is real: it imports)."""
    trt = pytest.importorskip("tensorrt_rtx", reason="needs pip install 'ssr-deploy[rtx]'")
    names = {"": sorted(dir(trt))}
    for name in dir(trt):
        value = getattr(trt, name)
        if isinstance(value, type):
            names[name] = sorted(dir(value))
    return names


def missing(release: str) -> list[str]:
    names = rtx_names() if release == "rtx" else registered_names(release)
    gaps = []
    for where, owner, name in sorted(used_names("rtx" if release == "rtx" else "full")):
        if owner.startswith("__") or name.startswith("__"):
            continue
        if owner in names and name not in names[owner]:
            gaps.append(f"{where}: {'trt.' + owner if owner else 'trt'}.{name}")
    return gaps


def test_the_scan_sees_the_tensorrt_code():
    files = {str(p.relative_to(PACKAGE)) for p in tensorrt_files()}
    assert {"backends/tensorrt/build.py", "backends/tensorrt/runner.py",
            "backends/tensorrt/library.py", "backends/tensorrt/timer.py"} <= files, files
    outside = {f for f in files if not f.startswith("backends/tensorrt/")}
    assert not outside, f"TensorRT code outside its backend's package: {outside}"
    owners = {owner for _, owner, _ in used_names()}
    assert {"", "Builder", "IBuilderConfig", "ICudaEngine", "IExecutionContext"} <= owners
    rtx_only = {(o, n) for _, o, n in used_names("rtx")} - {(o, n) for _, o, n in
                                                           used_names("full")}
    full_only = {(o, n) for _, o, n in used_names("full")} - {(o, n) for _, o, n in
                                                            used_names("rtx")}
    assert {("IBuilderConfig", "set_compute_capability"), ("", "CudaGraphStrategy"),
            ("Runtime", "get_engine_validity")} <= rtx_only, rtx_only
    assert ("IBuilderConfig", "create_timing_cache") in full_only, full_only


@pytest.mark.parametrize("release", sorted(RELEASES) + ["rtx"])
def test_every_tensorrt_name_is_registered(release):
    assert missing(release) == [], f"not in TensorRT {release}"


def test_the_rtx_only_names_are_not_in_full_tensorrt():
    """What the code runs only under TensorRT-RTX is what full TensorRT lacks (else the split
    would hide nothing)."""
    new = registered_names("11.4")
    assert "set_compute_capability" not in new["IBuilderConfig"]
    assert "get_engine_validity" not in new["Runtime"]
    assert "create_timing_cache" in new["IBuilderConfig"]


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
