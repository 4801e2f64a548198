import json

import pytest
from click.testing import CliRunner

from ssr_deploy.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_info_shows_paper_figures():
    result = invoke("info", "ssr-cityscapes")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "1,022,559" in out
    for size, gmacs in [("512x1024", "10.90"), ("768x1536", "24.52"), ("1024x2048", "43.59")]:
        line = next(line for line in out.splitlines() if line.startswith(size))
        assert gmacs in line
    assert "stages.1.layers.8" in out and "fr d=2 r=1/2" in out
    assert "1 MAC = 2 FLOPs" in out


def test_info_json():
    result = invoke("info", "ssr-cityscapes", "--size", "512x1024", "--size", "1024x2048",
                    "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"name", "hash", "params", "macs", "layers"} <= set(data)
    assert data["name"] == "ssr-cityscapes" and data["params"] == 1_022_559
    assert list(data["macs"]) == ["512x1024", "1024x2048"]
    assert data["macs"]["512x1024"] / 1e9 == pytest.approx(10.90, rel=0.005)
    assert sum(row["macs"]["512x1024"] for row in data["layers"]) == data["macs"]["512x1024"]
    assert sum(row["share"] for row in data["layers"]) == pytest.approx(1.0)
    assert data["output_shapes"]["1024x2048"] == [1, 19, 1024, 2048]


def test_info_classes_and_path(tmp_path):
    from ssr_deploy import Genotype

    path = Genotype.load("ssr-cityscapes").save(tmp_path / "g.json")
    data = json.loads(invoke("info", str(path), "--classes", "20", "--json",
                             "--size", "64x128").output)
    assert data["params"] == 1_022_688


def test_info_list():
    result = invoke("info", "--list")
    assert result.exit_code == 0 and "ssr-cityscapes" in result.output


@pytest.mark.parametrize("args, message", [
    (["info", "nope"], "error: no genotype 'nope'"),
    (["info", "ssr-cityscapes", "--size", "500x1000"], "error: input size 500x1000"),
    (["info", "ssr-cityscapes", "--size", "big"], "'big' is not a size"),
    (["info"], "give a GENOTYPE"),
])
def test_user_errors_are_one_line_without_traceback(args, message):
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_invalid_genotype_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 1}))
    result = invoke("info", str(bad))
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "name is missing" in result.output


def test_console_entry_point_prints_one_line_errors():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ssr_deploy", "info", "nope"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: no genotype 'nope'")
    assert done.stderr.strip().count("\n") == 0 and done.stdout == ""


def _command(path: list[str]):
    command = main
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path, declared", [
    (["bench"], "RunModel"), (["profile"], "RunModel"), (["video"], "RunModel"),
    (["serve"], "RunModel"), (["eval"], "ModelSize"), (["export", "onnx"], "ModelSize"),
    (["export", "openvino"], "ModelSize"), (["lut", "build"], "LutOptions")])
def test_shared_options_are_declared_once(path, declared):
    """The options every model-taking command shares come from one declaration (settings
    fields): same flag, type, default and help in each command, none mapped by hand."""
    import dataclasses

    from ssr_deploy.cli import options as cli_options
    from ssr_deploy.latency.options import LutOptions

    config = LutOptions if declared == "LutOptions" else getattr(cli_options, declared)
    params = {p.name: p for p in _command(path).params}
    fields = [f for f in dataclasses.fields(config) if "flag" in f.metadata]
    assert fields
    for f in fields:
        flag = f.metadata["flag"]
        param = params[f.name]
        assert param.opts == [flag.name] and param.help.startswith(flag.help), (path, f.name)
        assert type(param.type) is type(click_type(flag, f)), (path, f.name)


def click_type(flag, field):
    import click

    if flag.type is not None:
        return flag.type
    return click.BOOL if isinstance(field.default, bool) else click.STRING


def test_lut_build_takes_its_classes_from_a_genotype_and_refuses_a_bad_grid(tmp_path):
    out = tmp_path / "t.json"
    bad = CliRunner().invoke(main, ["lut", "build", "-o", str(out), "--classes", "nope"])
    assert bad.exit_code == 2 and "is not a number of classes, a genotype or a dataset" in (
        bad.output)
    grid = CliRunner().invoke(main, ["lut", "build", "-o", str(out), "--width-grid", "9,1"])
    assert grid.exit_code == 2 and "give three whole numbers of at least 2" in grid.output
    assert not out.exists()


def test_lut_build_takes_fp32_layers_repeated_as_export_does_or_comma_separated(
        tmp_path, monkeypatch):
    import ssr_deploy.latency

    seen = []
    monkeypatch.setattr(ssr_deploy.latency, "build_lut",
                        lambda space, out, o: seen.append(o.fp32_layers) or {"already": True,
                                                                             "entries": {},
                                                                             "seconds": 0.0})
    for args in (["--fp32-layers", "stem", "--fp32-layers", "stages.1.down,head"],
                 ["--fp32-layers", "stem,stages.1.down,head"]):
        result = CliRunner().invoke(main, ["lut", "build", "-o", str(tmp_path / "t.json"),
                                           "--precision", "int8", *args])
        assert result.exit_code == 0, result.output
    assert seen == [("stem", "stages.1.down", "head")] * 2
