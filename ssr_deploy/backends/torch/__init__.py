"""PyTorch: a checkpoint in eager mode on CPU or CUDA (fp16, channels_last, CUDA graphs,
torch.compile), profiled with torch.profiler; latency-table parts timed as modules."""

from ssr_deploy.backends.torch.runner import TorchBackend, TorchOptions
from ssr_deploy.backends.torch.timer import TorchTimer

__all__ = ["TorchBackend", "TorchOptions", "TorchTimer"]
