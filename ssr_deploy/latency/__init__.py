"""``ssr-deploy lut build``: measure a latency table on this machine, through a backend of the
runtime, in the shapes each part has in a network of the space at one input size.

How it stays minutes, not hours, on a 2-core CPU (the paper's space at 512x1024 has 2 x 10
ops x 9^3 width choices): a block's in and out widths are measured at every option (their
relation decides the residual's form, fused or sliced, and channel counts off the kernels'
blocking are slow: time is not smooth in them), its mid width on a grid of 3 and
interpolated linearly (``width_grid``); dilations other than the first are measured at the widest
widths and scale the first's width surface (``every_dilation`` measures them on the grid
too). ``check`` random off-grid blocks are then measured directly and the table records how
far the interpolation was from them.

Every measured part is published to the output at once (temp file + rename): an interrupted
build loses at most the part it was measuring, and the same command continues it.

``options``: what to measure and how; ``parts``: the parts as modules and their ONNX;
``clock``: each part timed through the backend's own part timer (``ssr_deploy.backends``);
``build``: the resumable build. The searcher reads the tables
through ``ssr_deploy.search.latency``; this package is the only one that measures them.
"""

from ssr_deploy.lut.build import build_lut, interpolation_error
from ssr_deploy.lut.clock import Clock
from ssr_deploy.lut.options import IO_KEY, LutOptions
from ssr_deploy.lut.parts import Probe, export_part, probes

__all__ = ["IO_KEY", "Clock", "LutOptions", "Probe", "build_lut", "export_part",
           "interpolation_error", "probes"]
