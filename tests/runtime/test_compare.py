"""The one comparator: runners and one ConfusionMatrix pass, per frame source."""

from __future__ import annotations

import numpy as np
import pytest

from ssr_deploy.runtime.compare import Runner, compare_runners


def _logits_runner(shift_rows: int = 0, batch: int | None = None, size=None) -> Runner:
    """Class = (x + y) % 3 as one-hot logits; ``shift_rows`` rows of the top say class 0."""
    calls = []

    def run(x: np.ndarray) -> list[np.ndarray]:
        calls.append(x.shape)
        n, h, w = x.shape[:3]
        labels = (np.add.outer(np.arange(h), np.arange(w)) % 3)[None].repeat(n, 0)
        labels[:, :shift_rows] = 0
        return [np.eye(3, dtype=np.float32)[labels].transpose(0, 3, 1, 2)]

    runner = Runner(lambda f: f, run, "logits", 3, size, batch)
    runner.calls = calls
    return runner


def test_identical_runners_agree_everywhere_and_differences_are_counted_exactly():
    frames = np.zeros((2, 8, 12, 3), np.uint8)
    same = compare_runners(_logits_runner(), _logits_runner(), [("a", frames)], ["x", "y", "z"])
    assert same["label_agreement"] == 1.0 and same["miou_vs_reference"] == 1.0
    assert same["max_abs_diff"] == 0.0 and same["frames"] == 2
    off = compare_runners(_logits_runner(shift_rows=2), _logits_runner(),
                          [("a", frames), ("b", frames[:1])], ["x", "y", "z"])
    top = np.add.outer(np.arange(2), np.arange(12)) % 3
    wrong = int((top != 0).sum())  # pixels of the two top rows not already class 0
    assert off["sources"]["a"]["label_agreement"] == pytest.approx(1 - wrong / (8 * 12))
    assert off["sources"]["b"]["frames"] == 1 and off["max_abs_diff"] == 1.0
    assert set(off["sources"]) == {"a", "b"}


def test_a_fixed_batch_runner_runs_each_frame_repeated_and_a_fixed_size_resizes():
    frames = np.zeros((3, 16, 24, 3), np.uint8)
    fixed = _logits_runner(batch=4, size=(8, 12))
    r = compare_runners(fixed, _logits_runner(size=(8, 12)), [("a", frames)], ["x", "y", "z"])
    assert fixed.calls == [(4, 8, 12, 3)] * 3 and r["label_agreement"] == 1.0
