import pytest
import torch

from ssr_deploy import GenotypeError, build_model
from ssr_deploy.model.complexity import count_macs, count_params, layer_table
from tests.helpers import random_genotype


def test_paper_parameter_count():
    assert count_params(build_model("ssr-cityscapes")) == 1_022_559
    assert count_params(build_model("ssr-cityscapes", num_classes=20)) == 1_022_688


@pytest.mark.parametrize("size, paper_gmacs", [((512, 1024), 10.90), ((768, 1536), 24.53),
                                               ((1024, 2048), 43.61)])
def test_paper_macs(zoo_genotype, size, paper_gmacs):
    total, per_module = count_macs(zoo_genotype, size)
    assert total / 1e9 == pytest.approx(paper_gmacs, rel=0.005)
    rows = layer_table(zoo_genotype, per_module)
    assert sum(row.macs for row in rows) == total
    assert sum(row.params for row in rows) == 1_022_559


def test_macs_count_every_conv_once_at_a_size_bins_do_not_divide(zoo_genotype):
    # 200x336 -> 25x42 at 1/8: 3, 6, 9 bins do not divide; MACs scale with area (to 1%).
    small = count_macs(zoo_genotype, (200, 336))[0]
    big = count_macs(zoo_genotype, (400, 672))[0]
    assert big / small == pytest.approx(4, rel=0.01)


@pytest.mark.parametrize("size", [(64, 128), (200, 336), (16, 16), (96, 40)])
def test_zoo_output_shape(size):
    net = build_model("ssr-cityscapes").eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, *size))
    assert y.shape == (2, 19, *size) and torch.isfinite(y).all()


@pytest.mark.parametrize("seed", range(8))
def test_random_genotypes_build_and_run(seed):
    g = random_genotype(seed)
    multiple, minimum = g.size_rule()
    size = (max(minimum, 2 * multiple), 3 * multiple)
    net = build_model(g).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 3, *size))
    assert y.shape == (1, g.num_classes, *size)
    total, per_module = count_macs(g, size)
    assert sum(row.macs for row in layer_table(g, per_module)) == total > 0


def test_training_mode_backpropagates():
    net = build_model("ssr-cityscapes").train()
    y = net(torch.rand(2, 3, 32, 64))
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_input_size_names_the_rule():
    net = build_model("ssr-cityscapes").eval()
    with pytest.raises(GenotypeError, match="multiples of 8 and at least 16; try 64x128"):
        net(torch.rand(1, 3, 62, 130))
