"""The Triton python-backend model ``ssr-deploy serve`` runs: the ``Segmenter`` on batched
uint8 BGR frames. Copied into the server's repository as ``1/model.py`` beside
``serve.json`` (the model path, backend, device, and where Python finds ssr_deploy).

Input ``images``: (batch, H, W, 3) uint8 BGR, any H and W. Output ``labels``: (batch, H, W)
class ids at the frames' own size, uint8 (int32 past 256 classes). A request Triton lets
through but the Segmenter refuses (an empty frame, say) gets an error response; the server
serves on.
"""

import json
import site
from pathlib import Path

_SETTINGS = json.loads((Path(__file__).parent / "serve.json").read_text())
for _folder in _SETTINGS["site_dirs"]:  # the stub's Python sees only its stdlib
    site.addsitedir(_folder)

import sys  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _quiet_capsule_deleter(unraisable, default=sys.unraisablehook):
    """The python backend's from_dlpack takes numpy 2's capsule and renames it in a way
    numpy's capsule deleter does not expect: the deleter's harmless ValueError went into the
    server's log as a traceback on every request. That one is dropped; any other is kept."""
    error = unraisable.exc_value
    if isinstance(error, ValueError) and "PyCapsule_GetPointer" in str(error):
        return
    default(unraisable)


sys.unraisablehook = _quiet_capsule_deleter


class TritonPythonModel:
    def initialize(self, args):
        from ssr_deploy.runtime.segmenter import Segmenter

        s = _SETTINGS
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in s["options"].items()}
        self.segmenter = Segmenter.load(s["model"], s["backend"], s["device"],
                                        letterbox=s["letterbox"], **options)
        self.dtype = np.dtype(s["labels_dtype"])

    def execute(self, requests):
        frames, owners, responses = [], [], [None] * len(requests)
        for i, request in enumerate(requests):
            # DLPack both ways: pb_utils' numpy conversions are built for numpy 1's ABI and
            # misread numpy 2 arrays (sizes of 0, wrong bytes)
            batch = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "images"))
            if batch.ndim != 4 or batch.shape[-1] != 3 or 0 in batch.shape:
                responses[i] = _error(f"images of shape {list(batch.shape)}: send a (batch, H, "
                                      "W, 3) uint8 BGR array with batch, H and W above 0")
                continue
            frames += list(batch)
            owners += [i] * len(batch)
        if frames:
            try:
                labels = self.segmenter.predict_batch(frames)
            except Exception as e:  # noqa: BLE001 - every failure becomes an error response
                for i in set(owners):
                    responses[i] = _error(f"{type(e).__name__}: {e}")
                return responses
            for i in sorted(set(owners)):
                mine = np.stack([lab for lab, o in zip(labels, owners, strict=True) if o == i])
                responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(
                    "labels", np.ascontiguousarray(mine, self.dtype))])
        return responses

    def finalize(self):
        self.segmenter.close()


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))

