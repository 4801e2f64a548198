"""Reproducible random valid genotypes, for parametrised and hypothesis tests; a network
with the label margins of a trained one, for precision tests (``tests.nets``)."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from ssr_deploy.genotype import DILATIONS, Genotype, Head, InputSpec, Layer, Stage
from tests.nets import confident_net  # noqa: F401  (where the tests have always found it)


def random_genotype(seed: int, max_stages: int = 3, max_width: int = 40) -> Genotype:
    """A valid genotype with small widths, 1 to ``max_stages`` stages, skips included."""
    rng = random.Random(seed)
    stem = rng.randint(4, 12)
    stages, channels, stride = [], stem, 2
    for _ in range(rng.randint(1, max_stages)):
        stride *= 2
        width = stage_channels = rng.randint(channels + 1, channels + 24)
        layers = []
        for _ in range(rng.randint(0, 4)):
            if rng.random() < 0.25:
                layers.append(Layer("skip"))
                continue
            out = rng.randint(4, max_width)
            layers.append(Layer("fr", rng.choice(DILATIONS), rng.choice((1.0, 0.5)), width,
                                rng.randint(4, max_width), out))
            width = out
        stage = Stage(stride, stage_channels, rng.choice((0.0, 0.03, 0.3)), tuple(layers))
        stages.append(stage)
        channels = stage.out_channels
    n = rng.randint(1, 6)
    return Genotype(
        name=f"random-{seed}", stem_channels=stem, stages=tuple(stages),
        head=Head(tuple(rng.sample(range(1, 10), rng.randint(1, 4))), rng.randint(2, 16),
                  rng.randint(2, 24), rng.randint(2, 24), rng.randint(2, 24),
                  rng.choice((0.0, 0.1))),
        classes=tuple(f"class {i}" for i in range(n)),
        palette=tuple(tuple(rng.randint(0, 255) for _ in range(3)) for _ in range(n)),
        input=InputSpec(rng.choice(("rgb", "bgr")), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        bn_eps=rng.choice((1e-3, 1e-5)), description=rng.choice(("", "a random net")))


genotypes = st.integers(0, 2**32 - 1).map(random_genotype)
