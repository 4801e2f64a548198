"""Export: ONNX (onnx.py), fp16/int8 graphs (precision.py), TensorRT and TensorRT-RTX
engines (tensorrt.py) and Triton model repositories (triton.py)."""
