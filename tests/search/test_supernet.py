import pytest
import torch

from ssr_deploy import build_model
from ssr_deploy.search.extract import extract_discrete
from ssr_deploy.search.supernet import SuperNet
from ssr_deploy.space import SearchSpace, StageSpace

SMALL = SearchSpace(stem_channels=8, stages=(StageSpace(4, 24, 3, 0.0),
                                             StageSpace(8, 40, 3, 0.0)),
                    width_step=4, width_choices=4)


def _randomise(net, seed):
    gen = torch.Generator().manual_seed(seed)
    for name, t in net.state_dict().items():
        if t.is_floating_point() and "alpha" not in name and "masks" not in name:
            t.copy_(torch.rand(t.shape, generator=gen) + 0.5 if "running_var" in name
                    else torch.randn(t.shape, generator=gen) * 0.2)


def _collapse(net, seed):
    """Leave one random option per decision, as a finished search does."""
    gen = torch.Generator().manual_seed(seed)
    for valid in (net.op_valid, net.mid_valid, net.out_valid):
        keep = torch.rand(valid.shape, generator=gen).masked_fill(~valid, -1).argmax(-1,
                                                                                      keepdim=True)
        rows = valid.any(-1, keepdim=True)
        valid.copy_(torch.zeros_like(valid).scatter(-1, keep, True) & rows)


@pytest.mark.parametrize("seed", range(6))
def test_no_discretisation_gap(seed):
    """Also where the arch weights have drifted far below 0 (a search's Adam steps can take
    them there, and the cost constraint can end on an option whose sigmoid underflows):
    a lone option still has probability 1."""
    net = SuperNet(SMALL, num_classes=5)
    _randomise(net, seed)
    _collapse(net, seed)
    if seed % 2:
        gen = torch.Generator().manual_seed(seed)
        for alpha in net.arch_parameters():
            alpha.data.copy_(torch.randn(alpha.shape, generator=gen) * 5 - 60)
    net.drop_pruned_ops()
    net.eval()
    genotype, state = extract_discrete(net)
    discrete = build_model(genotype, 5)
    discrete.load_state_dict(state)
    discrete.eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        diff = (net(x) - discrete(x)).abs().max().item()
    assert diff <= 1e-5, (diff, [layer.describe() for s in genotype.stages for layer in s.layers])


def test_pruned_ops_leave_memory_and_compute():
    net = SuperNet(SMALL, num_classes=3)
    before = sum(p.numel() for p in net.weight_parameters())
    net.op_valid[:, 1:6] = False
    assert net.drop_pruned_ops() == 6 * 5
    assert sum(p.numel() for p in net.weight_parameters()) < before * 0.6
    net(torch.rand(2, 3, 32, 64))  # still runs


def test_paper_space_contains_the_published_network():
    space = SearchSpace()
    assert [st.max_layers for st in space.stages] == [5, 9]
    assert space.widths(0)[0] == 64 and space.widths(1)[-1] == 96 and len(space.ops()) == 11


@pytest.mark.parametrize("seed", range(5))
def test_cost_model_equals_counted_macs_when_one_hot(seed):
    from ssr_deploy.model.complexity import count_macs
    from ssr_deploy.search.cost import expected_macs
    from ssr_deploy.search.supernet import decode

    net = SuperNet(SMALL, num_classes=7)
    _collapse(net, seed)
    size = (64, 128)
    counted = count_macs(decode(net), size, 7)[0]
    assert expected_macs(net, size).item() == pytest.approx(counted, rel=0.01)


@pytest.mark.parametrize("seed", range(3))
def test_backbone_cost_of_a_one_hot_supernet_is_its_network_less_the_head(seed):
    from ssr_deploy.search.cost import expected_macs, genotype_cost
    from ssr_deploy.search.supernet import decode

    net = SuperNet(SMALL, num_classes=7)
    _collapse(net, seed)
    size = (64, 128)
    backbone = genotype_cost(decode(net), size, "backbone")
    assert expected_macs(net, size, measure="backbone").item() == pytest.approx(backbone,
                                                                                rel=0.01)
    assert backbone < genotype_cost(decode(net), size, "network")


def test_the_authors_cost_of_the_full_space_and_the_published_network():
    """Their F_full is 11.16 G for a 5 + 8 layer space; ours has one more 1/8 layer."""
    from ssr_deploy import Genotype
    from ssr_deploy.search.cost import expected_macs, genotype_cost

    full = expected_macs(SuperNet(SearchSpace(), 19), (512, 1024), True, "backbone").item()
    one_layer = 2 * 3 * (64 * 128) * 128 * 128  # a full-width 1/8 layer: two 3-tap convs
    assert (full - one_layer) / 1e9 == pytest.approx(11.16, rel=0.01)
    published = genotype_cost(Genotype.load("ssr-cityscapes"), (512, 1024), "backbone")
    assert 0.6 * full / 1e9 < published / 1e9 < 0.8 * full / 1e9


def test_cost_model_is_differentiable_and_full_is_largest():
    from ssr_deploy.search.cost import expected_macs

    net = SuperNet(SearchSpace(), num_classes=19)
    e = expected_macs(net, (512, 1024))
    e.backward()
    assert net.op_alpha.grad.abs().sum() > 0 and net.mid_alpha.grad.abs().sum() > 0
    full = expected_macs(net, (512, 1024), full=True).item()
    assert full > e.item() > 0
