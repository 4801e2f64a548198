import copy
import json

import pytest
from hypothesis import given, settings

from ssr_deploy.errors import GenotypeError
from ssr_deploy.genotype import Genotype, zoo_names
from tests.helpers import genotypes

PAPER_LAYERS = [  # (stage, dilation, resolution, in, mid, out) from PAPER.md
    (0, 1, 1, 64, 64, 64), (0, 1, 1, 64, 60, 52), (0, 1, 1, 52, 64, 44), (0, 1, 1, 44, 60, 48),
    (1, 4, .5, 128, 112, 124), (1, 2, 1, 124, 128, 120), (1, 1, 1, 120, 108, 116),
    (1, 4, 1, 116, 124, 124), (1, 8, 1, 124, 120, 120), (1, 2, 1, 120, 124, 128),
    (1, 8, 1, 128, 120, 124), (1, 16, 1, 124, 100, 124), (1, 2, .5, 124, 96, 124)]


def test_zoo_is_the_paper_network(zoo_genotype):
    g = zoo_genotype
    assert "ssr-cityscapes" in zoo_names()
    layers = [(i, lay.dilation, lay.resolution, lay.in_channels, lay.mid_channels,
               lay.out_channels) for i, s in enumerate(g.stages) for lay in s.layers]
    assert layers == PAPER_LAYERS
    assert g.stem_channels == 16 and [s.channels for s in g.stages] == [64, 128]
    assert [s.stride for s in g.stages] == [4, 8]
    assert [s.dropout for s in g.stages] == [0.03, 0.3] and g.bn_eps == 1e-3
    h = g.head
    assert (h.psp_bins, h.psp_width, h.psp_out, h.low_width, h.fusion_width, h.dropout) == (
        (1, 2, 3, 6, 9), 40, 128, 64, 128, 0.1)
    assert g.num_classes == 19 and g.classes[0] == "road" and g.classes[-1] == "bicycle"
    assert g.input.mean == (0, 0, 0) and g.input.std == (1, 1, 1)


def test_load_by_name_and_path_agree(zoo_genotype, tmp_path):
    path = zoo_genotype.save(tmp_path / "g.json")
    assert Genotype.load(path) == zoo_genotype == Genotype.load(str(path))


@settings(max_examples=60, deadline=None)
@given(genotypes)
def test_round_trip_keeps_genotype_and_hash(tmp_path_factory, g):
    path = g.save(tmp_path_factory.mktemp("g") / "g.json")
    loaded = Genotype.load(path)
    assert loaded == g
    assert loaded.hash == g.hash
    assert Genotype.from_dict(json.loads(g.to_json())).hash == g.hash


def test_hash_ignores_name_and_description_not_architecture(zoo_genotype):
    d = zoo_genotype.to_dict()
    renamed = copy.deepcopy(d)
    renamed["name"], renamed["description"] = "mine", "same net"
    assert Genotype.from_dict(renamed).hash == zoo_genotype.hash
    wider = copy.deepcopy(d)
    wider["stages"][1]["layers"][8]["mid"] = 100
    assert Genotype.from_dict(wider).hash != zoo_genotype.hash
    assert len(zoo_genotype.hash) == 64


def _mutated(zoo_genotype, edit):
    d = zoo_genotype.to_dict()
    edit(d)
    return d


def _set(path, value):
    def edit(d):
        *parents, last = path
        for key in parents:
            d = d[key]
        d[last] = value
    return edit


def _delete(path):
    def edit(d):
        *parents, last = path
        for key in parents:
            d = d[key]
        del d[last]
    return edit


BAD = [  # (edit, words the one-line error must contain)
    (_set(("stages", 1, "layers", 4, "op"), "conv5x5"), ["stages[1].layers[4].op", "'conv5x5'",
                                                         "fr, skip"]),
    (_set(("stages", 1, "layers", 4, "dilation"), 3), ["stages[1].layers[4].dilation", "3",
                                                       "1, 2, 4, 8, 16"]),
    (_set(("stages", 0, "layers", 1, "resolution"), 0.25), ["resolution", "0.25", "1, 0.5"]),
    (_set(("stages", 0, "layers", 2, "in"), 60), ["stages[0].layers[2].in", "60", "52",
                                                  "chain"]),
    (_set(("stages", 1, "layers", 0, "in"), 64), ["stages[1].layers[0].in", "128"]),
    (_set(("stages", 0, "layers", 0, "mid"), 0), ["stages[0].layers[0].mid", "0", "1 to 4096"]),
    (_set(("stages", 0, "layers", 0, "mid"), 10**7), ["stages[0].layers[0].mid", "1 to 4096"]),
    (_set(("head", "psp_width"), 10**6), ["head.psp_width", "1 to 4096"]),
    (_set(("stages", 0, "layers", 0, "out"), -4), ["stages[0].layers[0].out", "-4"]),
    (_set(("stages", 0, "layers", 0, "mid"), "64"), ["stages[0].layers[0].mid", "an integer"]),
    (_set(("stages", 0, "layers", 0, "mid"), 64.5), ["mid", "an integer"]),
    (_set(("stages", 0, "layers", 0, "mid"), True), ["mid", "an integer"]),
    (_delete(("stages", 0, "layers", 0, "mid")), ["stages[0].layers[0].mid is missing"]),
    (_set(("stem", "channels"), 3), ["stem.channels", "3", "4 to 4096"]),
    (_delete(("head",)), ["head is missing"]),
    (_delete(("head", "psp_bins")), ["head.psp_bins is missing"]),
    (_set(("head", "psp_bins"), [1, 2, 2]), ["head.psp_bins", "distinct"]),
    (_set(("head", "dropout"), 1.0), ["head.dropout", "[0, 1)"]),
    (_set(("stages", 1, "stride"), 16), ["stages[1].stride", "16", "8"]),
    (_set(("stages", 1, "channels"), 40), ["stages[1].channels", "40", "more than the 48"]),
    (_set(("stages",), []), ["stages", "at least 1"]),
    (_set(("stages",), {"a": 1}), ["stages", "a JSON list"]),
    (_set(("stages", 0, "layers", 0, "kernel"), 5), ["stages[0].layers[0].kernel",
                                                    "no such field"]),
    (_set(("stages", 0, "layers", 0), {"op": "skip", "mid": 3}), ["stages[0].layers[0].mid",
                                                                  "skip"]),
    (_set(("classes",), ["road", "road"]), ["classes", "road", "unique"]),
    (_set(("palette",), [[0, 0, 0]]), ["palette", "one [r, g, b] per class (19)"]),
    (_set(("palette", 3, 1), 300), ["palette[3][1]", "300", "0 to 255"]),
    (_set(("input", "color"), "yuv"), ["input.color", "'yuv'", "rgb, bgr"]),
    (_set(("input", "std"), [1, 0, 1]), ["input.std[1]", "(0, inf]"]),
    (_set(("bn_eps",), 0), ["bn_eps", "(0, 1)"]),
    (_set(("format",), 2), ["format 2", "format 1", "upgrade"]),
    (_set(("name",), ""), ["name", "non-empty string"]),
]


@pytest.mark.parametrize("edit, words", BAD)
def test_invalid_genotype_names_field_value_and_rule(zoo_genotype, edit, words):
    with pytest.raises(GenotypeError) as err:
        Genotype.from_dict(_mutated(zoo_genotype, edit), source="g.json")
    message = str(err.value)
    assert "\n" not in message and message.startswith("g.json")
    for word in words:
        assert word in message, (word, message)


def test_not_json_and_missing_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1,, }')
    with pytest.raises(GenotypeError, match=r"bad.json is not JSON \(line 1, column 14"):
        Genotype.load(bad)
    with pytest.raises(GenotypeError, match="no genotype 'nope'.*ssr-cityscapes"):
        Genotype.load("nope")
    with pytest.raises(GenotypeError, match="top level is .*a JSON object"):
        Genotype.from_dict([1, 2])


def test_skip_layers_pass_width_through(zoo_genotype):
    d = zoo_genotype.to_dict()
    d["stages"][0]["layers"].insert(2, {"op": "skip"})
    g = Genotype.from_dict(d)
    assert g.stages[0].depth == 4 and len(g.stages[0].layers) == 5
    assert g.stages[0].out_channels == 48


def test_size_rule(zoo_genotype):
    assert zoo_genotype.size_rule() == (8, 16)
    zoo_genotype.check_input_size(512, 1024)
    zoo_genotype.check_input_size(200, 336)
    with pytest.raises(GenotypeError, match="multiples of 8 .* try 496x1000"):
        zoo_genotype.check_input_size(500, 1000)
    with pytest.raises(GenotypeError, match="at least 16"):
        zoo_genotype.check_input_size(8, 64)
