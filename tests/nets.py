"""Networks and figures the tests and benchmarks share, with no test framework imported
(benchmarks run where pytest and hypothesis are not installed)."""

from __future__ import annotations


def confident_net():
    """An untrained SSRNet (the paper's, seed 0, eval mode) whose classifier is scaled up:
    its label maps have the margins of a trained network's, so rounding (fp16, int8) flips
    few of them, as it would there. For precision and engine checks without training."""
    import torch

    from ssr_deploy import build_model

    torch.manual_seed(0)
    net = build_model("ssr-cityscapes").eval()
    with torch.no_grad():
        net.head.classifier.weight.mul_(40.0)
        net.head.classifier.bias.mul_(40.0)
    return net


def smallest_ms(table, net) -> float:
    """The fastest network left in ``net``'s (masked) space by ``table``, exactly."""
    from ssr_deploy.search.budget import bounds, latency_tables

    masks = tuple(m.cpu().numpy() for m in (net.op_valid, net.mid_valid, net.out_valid))
    return bounds(latency_tables(table), masks)[0]
