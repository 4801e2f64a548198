import pytest

from ssr_deploy.genotype import Genotype


@pytest.fixture
def zoo_genotype() -> Genotype:
    return Genotype.load("ssr-cityscapes")
