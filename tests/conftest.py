import random

import numpy as np
import pytest
import torch
from hypothesis import settings

from ssr_deploy.genotype import Genotype

# Tests assert what holds on any machine of the project's kind, however slow: no example
# may fail for taking long (hypothesis' default 200 ms deadline would on a slow machine).
settings.register_profile("any-machine", deadline=None, derandomize=True)
settings.load_profile("any-machine")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, whatever ran before it."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def zoo_genotype() -> Genotype:
    return Genotype.load("ssr-cityscapes")
