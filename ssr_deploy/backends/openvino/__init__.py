"""OpenVINO, the fast CPU path: bf16 and int8 kernels, the precision always named and
verified. ``library``: the library, this CPU's bf16, compiled models; ``runner``: the
backend; ``timer``: latency-table parts. IRs are written by ``ssr-deploy export openvino``
(``ssr_deploy.export.openvino``)."""

from ssr_deploy.backends.openvino.runner import OpenVinoBackend, OpenVinoOptions
from ssr_deploy.backends.openvino.timer import OpenVinoTimer

__all__ = ["OpenVinoBackend", "OpenVinoOptions", "OpenVinoTimer"]
