"""Latency in one package: ``ssr-deploy lut build`` measures a table on this machine,
through a backend of the runtime, in the shapes each part has in a network of the space at
one input size; ``table`` reads it back and predicts a network's latency, exact for a
genotype and differentiable for the supernet (what ``search --lut`` optimises).

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

``options``: what to measure and how; ``parts``: the parts, made as the network makes
them, and their ONNX through the one exporter; ``clock``: each part timed through the
backend's own part timer (``ssr_deploy.backends``); ``build``: the resumable build;
``table``: the table, its keys and the predictor. Names are imported on use: reading a
table needs neither the exporter nor a backend.
"""

import importlib

_HOMES = {"build_lut": "build", "interpolation_error": "build", "Clock": "clock",
          "IO_KEY": "options", "LutOptions": "options", "Probe": "parts",
          "export_part": "parts", "probes": "parts", "LatencyTable": "table"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"ssr_deploy.latency.{_HOMES[name]}"), name)
    if name in ("build", "clock", "options", "parts", "table"):
        return importlib.import_module(f"ssr_deploy.latency.{name}")
    raise AttributeError(f"module 'ssr_deploy.latency' has no attribute {name!r}")
