"""SSRNet: blocks, head, the network built from a genotype, its cost, its checkpoints."""

from ssr_deploy.model.checkpoint import load_model, save_checkpoint
from ssr_deploy.model.net import SSRNet, build_model

__all__ = ["SSRNet", "build_model", "load_model", "save_checkpoint"]
