"""Export: ONNX (here), TensorRT engines and Triton repositories (to come)."""
