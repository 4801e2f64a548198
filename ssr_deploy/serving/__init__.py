"""Serving through a real Triton Inference Server: ``TritonServer`` starts ``tritonserver``
with a python-backend model that runs the ``Segmenter``; ``SegmentationClient`` talks to it
over HTTP or gRPC (the KServe v2 protocol)."""
