import pytest
import torch

from ssr_deploy.search.losses import cost_loss, normalise, ssr_loss
from ssr_deploy.search.shrink import is_discrete, shrink_mask


def test_ssr_is_zero_at_uniform_and_negative_elsewhere():
    valid = torch.ones(3, 5, dtype=torch.bool)
    uniform = torch.full((3, 5), 0.2)
    assert ssr_loss(uniform, valid).item() == pytest.approx(0.0, abs=1e-7)
    skewed = torch.tensor([[0.6, 0.1, 0.1, 0.1, 0.1]] * 3)
    assert ssr_loss(skewed, valid).item() < 0
    sharper = torch.tensor([[0.96, 0.01, 0.01, 0.01, 0.01]] * 3)
    assert ssr_loss(sharper, valid) < ssr_loss(skewed, valid)  # unbounded below towards one-hot


def test_ssr_ignores_invalid_options():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    two = torch.tensor([[True, True, False, False]])
    assert ssr_loss(probs, two).item() == pytest.approx(0.0, abs=1e-7)
    # exactly the formula: (1/n) sum log(n p) over the valid options
    probs = torch.tensor([[0.7, 0.3, 0.0]])
    valid = torch.tensor([[True, True, False]])
    expected = (torch.log(torch.tensor(1.4)) + torch.log(torch.tensor(0.6))) / 2
    assert ssr_loss(probs, valid).item() == pytest.approx(expected.item(), rel=1e-6)


def test_ssr_gradient_raises_the_largest_weight():
    alpha = torch.tensor([[0.5, 0.2, -0.1, 0.0]], requires_grad=True)
    valid = torch.ones(1, 4, dtype=torch.bool)
    ssr_loss(normalise(alpha, valid), valid).backward()
    assert alpha.grad[0, 0] < 0  # descent raises alpha_0 (the largest)
    assert alpha.grad[0, 2] > 0  # and lowers the smallest


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
def test_normalise_sums_to_one_over_valid(mode):
    alpha = torch.randn(4, 6)
    valid = torch.rand(4, 6) > 0.3
    valid[:, 0] = True
    p = normalise(alpha, valid, mode)
    torch.testing.assert_close(p.sum(-1), torch.ones(4))
    assert (p[~valid] == 0).all()


def test_shrink_removes_exactly_the_options_under_tau():
    # binary-exact values: 0.125 is exactly tau * max (removed: "<= tau x max"), 0.126 is not
    probs = torch.tensor([[0.5, 0.125, 0.126, 0.249], [0.875, 0.0625, 0.0625, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    new = shrink_mask(probs, valid, tau=0.25)
    assert new.tolist() == [[True, False, True, True], [True, False, False, False]]
    assert not is_discrete(new) and is_discrete(new[1:])


def test_shrink_never_empties_a_decision():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1e-9, 1e-9, 0.0, 0.0]])
    valid = torch.tensor([[True] * 4, [True, True, False, False]])
    new = shrink_mask(probs, valid, tau=2.0)  # a tau that would remove everything
    assert (new.sum(-1) >= 1).all() and (new <= valid).all()


def test_cost_loss():
    assert cost_loss(torch.tensor(6.0), 6.0, 10.0).item() == 0.0
    assert cost_loss(torch.tensor(9.0), 6.0, 10.0).item() == pytest.approx(0.09)
    assert cost_loss(torch.tensor(9.0), 6.0, 10.0) > cost_loss(torch.tensor(7.0), 6.0, 10.0) > 0
