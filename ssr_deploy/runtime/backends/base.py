"""The small interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ssr_deploy.spec import ModelSpec


class Backend(ABC):
    """A loaded model: ``spec`` is what it is (its sidecar, typed); ``infer`` maps the model's
    input array (layout and dtype as ``spec.input`` says) to its output array on the host."""

    name: str
    spec: ModelSpec
    device_name: str = "cpu"
    #: after each ``infer`` on a GPU: {"compute_ms", "copy_ms"} from CUDA events, else None
    last_timing: dict[str, float] | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """The sidecar as written (read-only use; ``spec`` is the typed view)."""
        return self.spec.to_dict()

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def infer_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs for a stream of batches, in order. GPU backends overlap the copies of one
        batch with the compute of the previous; the default runs them one by one."""
        for batch in batches:
            yield self.infer(batch)

    def close(self) -> None:  # noqa: B027 - backends without resources need nothing here
        """Free what the backend holds (GPU memory, sessions)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
