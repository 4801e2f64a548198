"""Every value read from a sidecar, a search space or a latency table is typed and bounded at
load, with one line naming the field (the third hostile round's wrong results, tracebacks and
hangs from such files)."""

from __future__ import annotations

import json
import math
import re

import pytest
from click.testing import CliRunner

from ssr_deploy.cli import main
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.latency.table import LatencyTable
from ssr_deploy.space import SearchSpace
from ssr_deploy.spec import ModelSpec, sidecar_path


def _set(path: str, value):
    def change(meta: dict) -> None:
        *parents, key = path.split(".")
        node = meta
        for parent in parents:
            node = node[parent]
        node[key] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("input.std", [0, 0, 0]), "input.std is [0, 0, 0]; it must be three finite numbers "
                                   "above 0"),
    (_set("input.mean", [math.nan, 0, 0]), "input.mean is [nan, 0, 0]; it must be three"),
    (_set("input.mean", [0.5]), "input.mean is [0.5]"),
    (_set("input.mean", "abc"), "input.mean is abc"),
    (_set("input.scale", "abc"), "input.scale is abc; it must be a finite number above 0"),
    (_set("input.size_multiple", 0), "input.size_multiple is 0; it must be 1 to 1024"),
    (_set("input.min_size", -100), "input.min_size is -100"),
    (_set("producer", 5), "producer is 5, not an object"),
    (_set("classes", ["road", "sidewalk", "building"]), None),
])
def test_a_sidecar_value_that_would_change_the_results_is_refused(small_logits_meta, change,
                                                                  message):
    meta = json.loads(json.dumps(small_logits_meta))
    change(meta)
    expected = re.escape(message) if message else \
        "the output has 19 channels and the sidecar lists 3 classes"
    with pytest.raises(SsrDeployError, match=expected):
        ModelSpec.from_dict(meta, "sidecar")


@pytest.fixture(scope="module")
def small_logits_meta(tmp_path_factory):
    """The sidecar of the paper's network exported with logits out at 32x64."""
    from ssr_deploy import build_model
    from ssr_deploy.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("logits") / "m.onnx"
    export_onnx(build_model("ssr-cityscapes"), path, size=(32, 64))
    return json.loads(sidecar_path(path).read_text())


def test_a_json_integer_of_thousands_of_digits_is_one_line(tmp_path):
    genotype = tmp_path / "g.json"
    genotype.write_text('{"format": ' + "9" * 5000 + "}")
    result = CliRunner().invoke(main, ["info", str(genotype)])
    assert result.exit_code == 1 and "is not a" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("change, message", [
    ({"stages": [{"stride": 4, "channels": 64, "max_layers": 10 ** 6, "dropout": 0.0}]},
     r"stages\[0\].max_layers is 1000000; allowed: 1 to 64"),
    ({"resolutions": ["abc"]}, r"resolutions\[0\] is 'abc'; allowed: 1, 0.5"),
    ({"width_choices": 0}, "width_choices is 0; allowed: 1 to 32"),
    ({"stages": []}, "stages is \\[\\]; allowed: a list of at least 1 items"),
    ({"stages": [{"stride": 4, "channels": 100000, "max_layers": 2, "dropout": 0.0}]},
     r"stages\[0\].channels is 100000; allowed: 1 to 4096"),
    ({"bn_eps": -1}, r"bn_eps is -1; allowed: a number in \(0, 1\)"),
    ({"skip": "yes"}, "skip is 'yes'; allowed: true or false"),
    ({"stagez": []}, "stagez is"),
])
def test_a_search_space_is_typed_and_bounded_at_load(tmp_path, change, message):
    space = {**SearchSpace().to_dict(), **change}
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    with pytest.raises(SsrDeployError, match=message):
        SearchSpace.load(path)
    result = CliRunner().invoke(main, ["search", "--data", "synthetic:4", "--space", str(path),
                                       "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    from ssr_deploy.latency import LutOptions, build_lut
    from tests.latency.test_latency import TINY

    path = tmp_path_factory.mktemp("lut") / "lut.json"
    build_lut(TINY, path, LutOptions(size=(32, 64), width_grid=(2, 2, 2), repeats=1, passes=1,
                                     check_points=0, calibrate=0), progress=False)
    return json.loads(path.read_text())


@pytest.mark.parametrize("value", [math.nan, 1e308, -35.0, "fast", True])
def test_a_latency_table_entry_that_is_not_a_time_is_refused(tmp_path, tiny_table, value):
    data = json.loads(json.dumps(tiny_table))
    data["entries"]["stem"] = value
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SsrDeployError, match="part stem is .* ms; a part's time is a number"):
        LatencyTable.load(path)


def test_a_latency_tables_settings_are_typed(tmp_path, tiny_table):
    for key, value in (("num_classes", "19"), ("size", [32]), ("batch", 0),
                       ("width_grid", [2, 2])):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({**tiny_table, key: value}))
        with pytest.raises(SsrDeployError, match=f"{key} is"):
            LatencyTable.load(path)
