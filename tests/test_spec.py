"""ModelSpec: the typed sidecar. Validation names the field; derived facts are defined once;
sidecars written by ssr-deploy 0.1 still load; the runtime layer imports no export code."""

import ast
import copy
import json
from pathlib import Path

import pytest

from ssr_deploy.errors import SpecError, SsrDeployError
from ssr_deploy.spec import ModelSpec

# A sidecar exactly as ssr-deploy 0.1 wrote it (dynamic batch, uint8 frames in, labels out).
V01 = json.loads("""{
 "metadata_format": 1, "genotype": {"name": "ssr-cityscapes", "hash": "ab12cd34ef56"},
 "classes": ["road", "sidewalk"], "palette": [[128, 64, 128], [244, 35, 232]],
 "input": {"name": "images", "layout": "NHWC", "dtype": "uint8", "color": "bgr",
           "shape": [-1, 512, 1024, 3], "normalization": "in-graph", "size": [512, 1024],
           "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 0.00392156862745098,
           "size_multiple": 8, "min_size": 16},
 "output": {"name": "labels", "kind": "labels", "layout": "NHW", "dtype": "uint8",
            "shape": [-1, 512, 1024]},
 "dynamic": {"batch": {"min": 1, "opt": 1, "max": 8}, "size": null}, "opset": 18,
 "producer": {"ssr_deploy": "0.1.0", "torch": "2.13.0"}, "created": "2026-11-01T00:00:00+00:00",
 "file": "model.onnx", "sha256": "00"}""")


def test_a_0_1_sidecar_loads_with_its_derived_facts():
    spec = ModelSpec.from_dict(V01)
    assert spec.input.size == (512, 1024) and spec.input.dtype == "uint8"
    assert spec.batch_range == (1, 8) and spec.fixed_batch is None
    assert spec.output_shape((4, 512, 1024, 3)) == (4, 512, 1024)
    assert spec.largest_input == (8, 512, 1024, 3) and spec.precision == "fp32"
    assert spec.to_dict() == V01  # what was written, unchanged


def test_engine_and_fixed_batch_facts():
    engine = {**V01, "profile": {"min": [1, 256, 512, 3], "opt": [2, 512, 1024, 3],
                                 "max": [4, 1024, 2048, 3]}, "precision": "fp16"}
    spec = ModelSpec.from_dict(engine)
    assert spec.batch_range == (1, 4) and spec.largest_input == (4, 1024, 2048, 3)
    assert spec.fixed_batch is None
    fixed = copy.deepcopy(V01)
    fixed["dynamic"]["batch"] = None
    fixed["input"]["shape"][0], fixed["output"]["shape"][0] = 2, 2
    assert ModelSpec.from_dict(fixed).fixed_batch == 2
    # an engine whose profile allows one batch: every input is padded to it (before, a
    # profile made fixed_batch None and `bench --batch 1` failed in the profile check)
    static = {**fixed, "profile": {"min": [4, 512, 1024, 3], "opt": [4, 512, 1024, 3],
                                   "max": [4, 512, 1024, 3]}}
    static["input"] = {**fixed["input"], "shape": [4, 512, 1024, 3]}
    static["output"] = {**fixed["output"], "shape": [4, 512, 1024]}
    assert ModelSpec.from_dict(static).fixed_batch == 4
    one = {**engine, "profile": {**engine["profile"], "min": [2, 256, 512, 3],
                                 "max": [2, 1024, 2048, 3]}}
    assert ModelSpec.from_dict(one).fixed_batch == 2  # a dynamic ONNX built for batch 2


@pytest.mark.parametrize("path, value, message", [
    (("input", "layout"), "HWC", "input.layout is 'HWC'"),
    (("input", "dtype"), "float64", "input.dtype is 'float64'"),
    (("input", "shape"), [1, 2, 3], "input.shape is \\[1, 2, 3\\]; 4 dimensions"),
    (("output", "kind"), "boxes", "output.kind is 'boxes'"),
    (("input", "size_multiple"), "8", "input.size_multiple is '8', not int"),
    (("genotype", "hash"), None, "genotype.hash is None"),
    (("metadata_format",), 9, "metadata format 9, this ssr-deploy reads 1; export again"),
    (("palette",), [[1, 2, 3]], "palette must hold an RGB triple of 0-255 for every class"),
])
def test_a_wrong_field_is_named(path, value, message):
    broken = copy.deepcopy(V01)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SpecError, match=message) as err:
        ModelSpec.from_dict(broken)
    assert isinstance(err.value, ValueError) and isinstance(err.value, SsrDeployError)
    missing = copy.deepcopy(V01)
    del missing["input"]["color"]
    with pytest.raises(SpecError, match="input.color is missing"):
        ModelSpec.from_dict(missing)


def test_too_many_classes_for_uint8_labels_is_refused():
    wide = {**V01, "classes": [f"c{i}" for i in range(300)],
            "palette": [[0, 0, 0]] * 300}
    with pytest.raises(SpecError, match="300 classes do not fit uint8 labels"):
        ModelSpec.from_dict(wide)


def test_runtime_imports_nothing_from_export_train_search():
    """The layering rule, checked on the source: runtime/ and backends/ (and the modules below
    both sides) import no export/, train/ or search/ module, and torch only in the torch
    backend's package."""
    root = Path(__file__).resolve().parents[1] / "ssr_deploy"
    files = [*(root / "runtime").rglob("*.py"), *(root / "backends").rglob("*.py"),
             root / "spec.py", root / "preprocess.py", root / "metrics.py", root / "io.py",
             root / "data" / "synthetic.py"]
    assert (root / "backends" / "tensorrt" / "build.py") in files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [
                a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith(("ssr_deploy.export", "ssr_deploy.train",
                                            "ssr_deploy.search")), (path.name, name)
                if path.parent.name != "torch":
                    assert name.split(".")[0] != "torch", (path.name, name)
