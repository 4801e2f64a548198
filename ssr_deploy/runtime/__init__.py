"""Runtime: pre/post-processing once, backends that only move tensors."""
