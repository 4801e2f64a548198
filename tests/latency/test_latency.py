"""Latency tables: building (resumable, refusals), interpolation, prediction, the search's
differentiable expected latency, and the CLI."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ssr_deploy import Genotype
from ssr_deploy import latency as lut_module
from ssr_deploy.cli import main
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.latency import LutOptions, build_lut
from ssr_deploy.latency.calibrate import PACE
from ssr_deploy.latency.table import LatencyTable, block_key, down_key, head_key, one_hot
from ssr_deploy.search.supernet import SuperNet
from ssr_deploy.space import SearchSpace, StageSpace
from tests.nets import smallest_ms

TINY = SearchSpace(stages=(StageSpace(4, 24, 2, 0.0), StageSpace(8, 40, 2, 0.0)),
                   dilations=(1, 2), width_choices=3)
OPTIONS = LutOptions(size=(32, 64), width_grid=(2, 2, 2), repeats=1, check_points=2,
                     num_classes=19, calibrate=3)


@pytest.fixture(scope="module")
def tiny_lut(tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "lut.json"
    build_lut(TINY, path, OPTIONS, progress=False)
    return path


def test_a_built_table_holds_every_part_measured_and_where(tiny_lut):
    data = json.loads(tiny_lut.read_text())
    table = LatencyTable.load(tiny_lut)
    assert data["complete"] and set(table.entries) == set(table.required())
    assert all(math.isfinite(v) and v > 0 for v in table.entries.values())
    # every width of the grid, every op, both stages, the head's grid
    assert block_key(1, 1, 0.5, 40, 32, 40) in table.entries
    assert block_key(0, 2, 1.0, 24, 24, 24) in table.entries  # other dilations: widest
    assert block_key(0, 2, 1.0, 16, 24, 24) not in table.entries
    assert {down_key(0, 16), down_key(1, 24), down_key(1, 16), head_key(16, 32)} <= set(
        table.entries)
    assert data["backend"] == "onnxruntime" and data["size"] == [32, 64]
    assert data["fingerprint"]["cpu"] and data["fingerprint"]["onnxruntime"]
    assert data["check"]["points"] == 2 and len(data["check_entries"]) == 2


def test_an_interrupted_build_keeps_its_parts_and_the_same_command_finishes_it(tmp_path,
                                                                                monkeypatch):
    path = tmp_path / "lut.json"
    real, calls = lut_module.Clock.time, []

    def stop_after_five(self, probe):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(probe.key)
        return real(self, probe)

    monkeypatch.setattr(lut_module.Clock, "time", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        build_lut(TINY, path, OPTIONS, progress=False)
    partial = json.loads(path.read_text())
    measured_first = [k.removeprefix(PACE) for k, _ in partial["timelines"][0]
                      if k != "network/reference"]  # the pacer: a part timed as "pace/<key>"
    assert not partial["complete"] and measured_first == [c for c in calls
                                                           if c != "network/reference"]
    with pytest.raises(SsrDeployError, match="unfinished"):
        LatencyTable.load(path)

    measured = []
    monkeypatch.setattr(lut_module.Clock, "time",
                        lambda self, probe: measured.append(probe.key) or real(self, probe))
    build_lut(TINY, path, OPTIONS, progress=False)
    table = LatencyTable.load(path)
    parts = [p.key for p in lut_module.probes(TINY, OPTIONS)]
    first = dict(partial["timelines"][0])
    # parts whose two passes disagree by more than 10% are timed a third time; the pacer
    # as often as the timelines say
    final = json.loads(path.read_text())["timelines"]
    again = [k for t in final[OPTIONS.passes:] for k, _ in t if k in parts]
    paces = [k.removeprefix(PACE) for t in final for k, _ in t if k.startswith(PACE)]
    paced_before = sum(k.startswith(PACE) for t in partial["timelines"] for k, _ in t)
    assert sorted(k for k in measured if k in parts) == sorted(
        [k for k in parts for _ in range(OPTIONS.passes) if (k not in first or _ > 0)]
        + again + paces[paced_before:])
    # the parts timed before the interruption are kept as they were, not timed again
    kept = partial["timelines"][0]
    assert [list(e) for e in final[0][:len(kept)]] == [list(e) for e in kept]
    assert set(table.entries) == set(table.required())


def test_parts_whose_passes_disagree_are_timed_again_and_their_median_kept(tmp_path,
                                                                           monkeypatch):
    """A burst of other work between two of the reference's times leaves one pass of a part
    far from the other: the part is timed once more after the networks, its median kept;
    parts whose passes agree keep the least, as before."""
    from collections import Counter

    parts = [p.key for p in lut_module.probes(TINY, OPTIONS)]
    noisy = next(k for k in parts if "/" not in k)
    other = next(k for k in parts if k.startswith("down"))  # not the pacer (a block)
    seen: Counter = Counter()

    def machine(self, probe):
        seen[probe.key] += 1
        if probe.key.startswith("network/"):  # steady networks, the reference at 10 ms
            return 10.0 if probe.key == "network/reference" else 20.0 + len(probe.key)
        if probe.key == noisy:
            return {1: 1.0, 2: 2.0, 3: 1.8}[seen[probe.key]]
        return 1.0 + 0.05 * (seen[probe.key] % 2 == 0)  # two passes 5% apart

    monkeypatch.setattr(lut_module.Clock, "time", machine)
    path = tmp_path / "lut.json"
    build_lut(TINY, path, OPTIONS, progress=False)
    data = json.loads(path.read_text())
    assert len(data["timelines"]) == OPTIONS.passes + 1
    assert [k for k, _ in data["timelines"][-1] if k in parts] == [noisy]
    assert data["entries"][noisy] == pytest.approx(1.8)
    assert data["entries"][other] == pytest.approx(1.0)
    assert seen[noisy] == 3 and seen[other] == 2


def test_a_build_times_its_pacer_every_few_parts_and_after_the_last(tmp_path, monkeypatch):
    from ssr_deploy.latency import calibrate

    monkeypatch.setattr(lut_module.Clock, "time", lambda self, probe: 1.0)
    path = tmp_path / "lut.json"
    build_lut(TINY, path, OPTIONS, progress=False)
    for timeline in json.loads(path.read_text())["timelines"][:OPTIONS.passes]:
        keys = [k for k, _ in timeline if not k.startswith("network/")]
        paces = [i for i, k in enumerate(keys) if k.startswith(calibrate.PACE)]
        assert paces[0] == 0 and paces[-1] == len(keys) - 1
        gaps = np.diff(paces)
        assert gaps.max() == calibrate.PACE_EVERY + 1
    # two networks: the reference is never timed between two, and keeps its least
    few = LutOptions(**{**OPTIONS.__dict__, "calibrate": 2})
    build_lut(TINY, tmp_path / "few.json", few, progress=False)
    assert LatencyTable.load(tmp_path / "few.json").meta["calibration"]["networks"]


def test_int8_tables_calibrate_on_more_networks_by_default():
    """int8 parts alone are furthest from a network, so the calibration carries more."""
    assert LutOptions().resolved().calibrate == 12
    assert LutOptions(precision="int8").resolved().calibrate == 20
    assert LutOptions(precision="int8", calibrate=5).resolved().calibrate == 5
    assert LutOptions(calibrate=0).resolved().calibrate == 0


def test_a_table_is_continued_only_under_the_same_settings(tiny_lut, tmp_path):
    copy = tmp_path / "lut.json"
    data = json.loads(tiny_lut.read_text())
    copy.write_text(json.dumps({**data, "complete": False}))
    with pytest.raises(SsrDeployError, match="another size"):
        build_lut(TINY, copy, LutOptions(**{**OPTIONS.__dict__, "size": (64, 128)}),
                  progress=False)
    not_a_table = tmp_path / "other.json"
    not_a_table.write_text("{}")
    with pytest.raises(SsrDeployError, match="not a latency table"):
        build_lut(TINY, not_a_table, OPTIONS, progress=False)
    with pytest.raises(SsrDeployError, match="not a latency table"):
        LatencyTable.load(not_a_table)


def test_bad_options_are_refused_before_anything_runs():
    for bad, match in (({"backend": "tflite"}, "--backend"),
                       ({"precision": "fp16"}, "fp16"),
                       ({"backend": "tensorrt"}, "--device cuda"),
                       ({"size": (30, 64)}, "multiples of 16"),
                       ({"width_grid": (1, 3, 9)}, "--width-grid"),
                       ({"fp32_layers": ("stem",)}, "--fp32-layers: .* --precision int8"),
                       ({"precision": "int8", "fp32_layers": ("stages.0.layers.3",)},
                        "only head, stages.0.down, stages.1.down, stem; single layers")):
        with pytest.raises(SsrDeployError, match=match):
            LutOptions(**{**OPTIONS.__dict__, **bad}).validate(TINY)
    LutOptions(**{**OPTIONS.__dict__, "precision": "int8",
                  "fp32_layers": ("stem", "stages.1.down")}).validate(TINY)


def test_modules_the_export_keeps_in_float_are_timed_in_float():
    """An int8 table built for what --fallback auto kept (--fp32-layers stem): the stem's
    part is timed as float, the other parts quantized as the export quantizes them."""
    import onnx

    from ssr_deploy.latency.clock import Clock
    from ssr_deploy.latency.options import part_module

    assert [part_module(k) for k in ("stem", "head.24-40", "down1.24", "stage0.d1.r1.8-8-8")
            ] == ["stem", "head", "stages.1.down", None]
    o = LutOptions(**{**OPTIONS.__dict__, "precision": "int8", "fp32_layers": ("stem",)})
    clock, parts = Clock(o), {p.key: p for p in lut_module.probes(TINY, o)}
    ops = {key: {n.op_type for n in onnx.load_from_string(clock.part(parts[key])).graph.node}
           for key in ("stem", "down1.24")}
    assert "QuantizeLinear" not in ops["stem"] and "QuantizeLinear" in ops["down1.24"]


# ---- the table's arithmetic, on made-up entries --------------------------------------
def synthetic_table(space: SearchSpace, f, grid: int = 2) -> LatencyTable:
    """A complete table whose block entries are f(stage, d, r, in, mid, out)."""
    meta = {"space": space.to_dict(), "width_grid": grid, "num_classes": 19, "size": [64, 128],
            "backend": "onnxruntime", "device": "cpu", "precision": "fp32", "batch": 1}
    table = LatencyTable(meta, {})
    entries = {}
    for key in table.required():
        m = lut_module.options.BLOCK_KEY.fullmatch(key)
        if m:
            s, d, r, i, mid, o = (float(v) for v in m.groups())
            entries[key] = f(int(s), int(d), r, i, mid, o)
        elif key.startswith("head"):
            first, last = (int(v) for v in key.split(".")[1].split("-"))
            entries[key] = 3 + 0.01 * first + 0.02 * last
        elif key.startswith("down"):
            entries[key] = 1 + 0.01 * int(key.split(".")[1])
        else:
            entries[key] = 2.0
    return LatencyTable(meta, entries)


def synthetic_file(path, space: SearchSpace = TINY) -> LatencyTable:
    """A synthetic table written as `lut build` writes one (deterministic: for the search's
    logic, where a measured table of microsecond parts would be noise)."""
    from ssr_deploy.latency.table import FORMAT, KIND

    table = synthetic_table(space, multilinear)
    path.write_text(json.dumps({"kind": KIND, "format": FORMAT, "complete": True,
                                **table.meta, "fingerprint": {"cpu": "made up"},
                                "entries": table.entries}))
    return LatencyTable.load(path)


def multilinear(s, d, r, i, m, o):
    return (1 + s) * (0.5 + 0.01 * i * m / 40 + 0.02 * m * o / 40 + 0.003 * o) * (
        1 + 0.1 * math.log2(d)) * (0.6 if r == 0.5 else 1.0)


def test_interpolation_is_exact_for_what_is_linear_in_each_width():
    table = synthetic_table(TINY, multilinear)
    for s, widths in ((0, (24, 20, 16)), (1, (40, 36, 32))):
        for i in widths:
            for m in widths:
                for o in widths:
                    onehot = [one_hot(list(widths), w) for w in (m, o)]
                    got = float(table.block_ms(s, 1, 1.0, float(i), *onehot))
                    assert got == pytest.approx(multilinear(s, 1, 1.0, i, m, o), rel=1e-9)
                    # a dilation measured at the widest widths scales the base surface
                    got = float(table.block_ms(s, 2, 0.5, float(i), *onehot))
                    assert got == pytest.approx(multilinear(s, 2, 0.5, i, m, o), rel=1e-9)


def one_hot_supernet(space: SearchSpace, genotype) -> SuperNet:
    """The supernet whose only options left are ``genotype``'s."""
    net = SuperNet(space, 19)
    with torch.no_grad():
        li = 0
        for s, stage in enumerate(genotype.stages):
            for layer in stage.layers:
                op = ("skip",) if layer.is_skip else (layer.dilation, layer.resolution)
                i = net.op_list.index(op)
                net.op_valid[li] = False
                net.op_valid[li, i] = True
                if not layer.is_skip:
                    widths = space.widths(s)
                    net.mid_valid[li, i] = torch.tensor([w == layer.mid_channels for w in widths])
                    net.out_valid[li, i] = torch.tensor([w == layer.out_channels for w in widths])
                li += 1
    return net


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_one_hot_supernet_costs_what_its_genotype_is_predicted_to(seed):
    space = SearchSpace()
    table = synthetic_table(space, multilinear, grid=3)
    genotype = space.sample(random.Random(seed))
    with torch.no_grad():
        expected = float(table.expected_ms(one_hot_supernet(space, genotype)))
    predicted = table.predict(genotype)
    assert expected == pytest.approx(predicted["latency_ms"], rel=1e-9)
    assert predicted["latency_ms"] == pytest.approx(sum(predicted["parts"].values()))
    assert set(predicted["parts"]) == {"overhead", "stem", "stages.0.down", "stages.1.down",
                                       "head"} | {
        f"stages.{s}.layers.{j}" for s, st in enumerate(genotype.stages)
        for j, layer in enumerate(st.layers) if not layer.is_skip}


def test_expected_latency_is_differentiable_and_moves_with_the_weights():
    space = SearchSpace()
    table = synthetic_table(space, multilinear, grid=3)
    net = SuperNet(space, 19)
    expected = table.expected_ms(net)
    expected.backward()
    grads = [p.grad for p in net.arch_parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    smallest, full = smallest_ms(table, net), float(table.expected_ms(net, full=True))
    assert smallest < float(expected.detach()) < full
    with torch.no_grad():
        net.op_alpha.fill_(-20.0)
        net.op_alpha[:, 0] = 20.0  # skip everywhere
    assert float(table.expected_ms(net).detach()) == pytest.approx(smallest, rel=0.01)


def test_a_genotype_of_another_space_or_class_count_is_refused(tiny_lut):
    table = LatencyTable.load(tiny_lut)
    with pytest.raises(SsrDeployError, match="not a network of this table's space"):
        table.predict(SearchSpace().sample(random.Random(0)))
    with pytest.raises(SsrDeployError, match="--classes 5"):
        table.predict(TINY.sample(random.Random(0), num_classes=5))


# ---- the search and the CLI --------------------------------------------------------------
def test_a_search_against_a_latency_target_logs_and_records_it(tmp_path):
    from ssr_deploy.data import open_dataset
    from ssr_deploy.search.searcher import SearchConfig, Searcher

    tiny_lut = tmp_path / "lut.json"
    table = synthetic_file(tiny_lut)
    low, high = smallest_ms(table, SuperNet(TINY, 19)), float(
        table.expected_ms(SuperNet(TINY, 19), full=True))
    target = (low + high) / 2
    data = open_dataset("synthetic:8", "train", (32, 64))
    config = SearchConfig(size=(32, 64), epochs=2, batch=4, lut=str(tiny_lut), target_ms=target,
                          data="synthetic:8")
    searcher = Searcher(TINY, data, tmp_path / "run", config)
    searcher.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "search_log.jsonl").read_text()
            .splitlines()]
    # (the bounds of a table of microsecond parts are noise: only that E[ms] is a time)
    assert len(rows) == 2 and all(math.isfinite(r["expected_ms"]) and r["expected_ms"] > 0
                                  for r in rows)
    settings = json.loads((tmp_path / "run" / "config.json").read_text())
    assert settings["target_ms"] == pytest.approx(target)
    assert settings["lut_sha256"] == table.sha256 and "onnxruntime" in settings["lut_device"]
    # the supernet ends one-hot (converged, or kept to the network picked in the band)
    found = table.predict(Genotype.load(tmp_path / "run" / "genotype.json"))["latency_ms"]
    with torch.no_grad():
        assert float(table.expected_ms(searcher.net)) == pytest.approx(found)
    assert abs(found / target - 1) <= config.cost_band
    for bad, match in (({"target_ms": high * 2}, "outside what this space can reach"),
                       ({"target_ms": low / 2}, rf"\({low:.2f} to {high:.2f} ms"),
                       ({"lut": ""}, "needs --lut")):
        with pytest.raises(SsrDeployError, match=match):
            Searcher(TINY, data, tmp_path / "bad", SearchConfig(**{**config.__dict__, **bad}))
    with pytest.raises(SsrDeployError, match="another search space"):
        Searcher(SearchSpace(), data, tmp_path / "bad2", config)


def test_a_build_says_its_calibration_was_timed_on_a_busy_machine(tiny_lut, tmp_path,
                                                                    monkeypatch):
    """Each calibration network records how many of its measurements were steady; where
    over a third had fewer than the passes, ``lut build`` warns that the table may be off."""
    data = json.loads(tiny_lut.read_text())["calibration"]
    assert all(0 <= n["steady"] <= OPTIONS.passes * 3 for n in data["networks"])
    assert data["unsteady"] == sum(n["steady"] < OPTIONS.passes for n in data["networks"][1:])
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TINY.to_dict()))
    out = tmp_path / "lut.json"
    synthetic_file(out)
    calibration = {"networks": [{}] * 12, "unsteady": 0, "fit": {
        "mean_rel_error": 0.05, "leave_one_out_mean_rel_error": 0.08}}
    monkeypatch.setattr(lut_module, "build_lut", lambda *a, **k: {
        "entries": {}, "seconds": 1.0, "calibration": calibration})
    args = ["lut", "build", "-o", str(out), "--size", "32x64", "--space", str(space)]
    for unsteady, warned in ((3, False), (4, True)):
        calibration["unsteady"] = unsteady
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        assert ("warning: the machine changed speed while 4 of the 11" in r.output) == warned


def test_the_cli_builds_predicts_and_refuses(tiny_lut, tmp_path):
    runner = CliRunner()
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TINY.to_dict()))
    genotype = tmp_path / "g.json"
    TINY.sample(random.Random(3)).save(genotype)
    r = runner.invoke(main, ["info", str(genotype), "--size", "32x64", "--lut", str(tiny_lut),
                             "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    predicted = LatencyTable.load(tiny_lut).predict(TINY.sample(random.Random(3)))
    assert summary["latency_ms"] == pytest.approx(predicted["latency_ms"])
    text = runner.invoke(main, ["info", str(genotype), "--size", "32x64", "--lut",
                                str(tiny_lut)]).output
    assert "ms predicted" in text
    # an already complete table is reported, not measured again
    r = runner.invoke(main, ["lut", "build", "-o", str(tiny_lut), "--size", "32x64", "--space",
                             str(space), "--width-grid", "2,2,2", "--repeats", "1", "--check",
                             "2", "--calibrate", "3"])
    assert r.exit_code == 0 and "is complete" in r.output, r.output
    built = tmp_path / "cli.json"
    r = runner.invoke(main, ["lut", "build", "-o", str(built), "--size", "32x64", "--space",
                             str(space), "--width-grid", "2,2,2", "--repeats", "1", "--passes",
                             "1", "--check", "0", "--calibrate", "0"])
    assert r.exit_code == 0 and f"wrote {built}" in r.output, r.output
    table = LatencyTable.load(built)
    assert table.meta["passes"] == 1 and set(table.entries) == set(table.required())
    fixed_path = tmp_path / "fixed.json"
    fixed = synthetic_file(fixed_path)
    target = (smallest_ms(fixed, SuperNet(TINY, 19)) + float(fixed.expected_ms(
        SuperNet(TINY, 19), full=True))) / 2
    r = runner.invoke(main, ["search", "--data", "synthetic:8", "--size", "32x64", "--space",
                             str(space), "--epochs", "1", "--batch", "4", "--out",
                             str(tmp_path / "run"), "--lut", str(fixed_path), "--target-ms",
                             f"{target:.4f}"])
    assert r.exit_code == 0 and "ms predicted on onnxruntime cpu" in r.output, r.output
    for args, match in ((["search", "--data", "synthetic:8", "--out", str(tmp_path / "s"),
                          "--target-ms", "5"], "--target-ms needs --lut"),
                        (["lut", "build", "-o", str(tmp_path / "t.json"), "--precision", "fp16"],
                         "fp16"),
                        (["info", str(genotype), "--lut", str(space)], "not a latency table")):
        r = runner.invoke(main, args)
        assert r.exit_code != 0 and match in r.output, r.output


def test_the_torch_backend_times_the_same_parts(tmp_path):
    path = tmp_path / "torch.json"
    options = LutOptions(**{**OPTIONS.__dict__, "backend": "torch", "check_points": 0,
                            "passes": 1})
    build_lut(TINY, path, options, progress=False)
    table = LatencyTable.load(path)
    assert table.meta["backend"] == "torch" and set(table.entries) == set(table.required())
    assert table.meta["fingerprint"]["torch"] == torch.__version__


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_tensorrt_tables_build_from_strongly_typed_fp16_parts(tmp_path):
    pytest.importorskip("tensorrt")
    path = tmp_path / "trt.json"
    options = LutOptions(**{**OPTIONS.__dict__, "backend": "tensorrt", "device": "cuda",
                            "precision": "fp16", "size": (64, 128)})
    build_lut(TINY, path, options, progress=False)
    table = LatencyTable.load(path)
    assert set(table.entries) == set(table.required())
    assert all(v > 0 for v in table.entries.values())
    assert table.meta["fingerprint"]["tensorrt"] and table.meta["fingerprint"]["gpu"]
