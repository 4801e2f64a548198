"""A search's run folder: config.json from the start, after each epoch search.pt (the state
``--resume`` continues), search_log.jsonl and search.png, all or none; at the end
genotype.json and discrete.pt. One run per folder (a lock)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import atomic_write_text
from ssr_deploy.media import figure_writer
from ssr_deploy.model.checkpoint import save_checkpoint
from ssr_deploy.runs import epoch_log, publish_files, run_lock

#: what a search.pt written before these settings existed ran with
LEGACY = {"arch_data": "split", "weight_clip": 5.0, "class_weights": "none",
          "ssr_width_mean": "surviving", "cost": "network", "cost_constraint": "off",
          "settle": 0.0, "save_every": 0.0}
STATE = "search.pt"


class SearchFolder:
    def __init__(self, out: str | Path) -> None:
        self.path = Path(out)
        self.path.mkdir(parents=True, exist_ok=True)

    def lock(self):
        """Held while the search runs: a second search into the folder is refused."""
        return run_lock(self.path, "search")

    def start(self, settings: str) -> None:
        """config.json of a new search: how it runs, from the start."""
        atomic_write_text(self.path / "config.json", settings)

    def save(self, state: dict[str, Any], new_rows: list[dict[str, Any]], settings: str,
             target: float, unit: str, measure: str) -> None:
        """The last finished epoch's search.pt, the log rows of the epochs since the last
        save (search_log.jsonl), search.png and config.json, all or none."""
        rows, text = epoch_log(self.path / "search_log.jsonl", *new_rows)

        fig = search_figure(rows, target, unit, measure)
        publish_files({self.path / STATE: lambda tmp: torch.save(state, tmp),
                       self.path / "search_log.jsonl": lambda tmp: tmp.write_text(text),
                       self.path / "config.json": lambda tmp: tmp.write_text(settings),
                       self.path / "search.png": figure_writer(fig)}, fig)

    def load(self, device) -> dict[str, Any]:
        """The state the last finished epoch saved."""
        return load_state(self.path / STATE, device)

    def finish(self, discrete, genotype) -> None:
        """genotype.json and discrete.pt, what `train --init-from-search` starts from."""
        genotype.save(self.path / "genotype.json")
        save_checkpoint(self.path / "discrete.pt", discrete, genotype,
                        source="ssr-deploy search")


def saved_config(out: str | Path) -> dict[str, Any]:
    """The settings a search in ``out`` ran with (from its search.pt)."""
    state = load_state(Path(out) / STATE, "cpu")
    return {**LEGACY, **state.get("config", {})} if "config" in state else {}


def load_state(path: Path, device) -> dict[str, Any]:
    if not path.is_file():
        raise SsrDeployError(f"--resume: {path} does not exist; run without --resume first")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise SsrDeployError(f"cannot read {path}: {str(e).splitlines()[0][:120]} (a damaged "
                             "search state; start again with a new --out)") from None


def search_figure(rows: list[dict[str, Any]], target: float | None = None,
                  unit: str = "GMACs", measure: str | None = None):
    """Options left, the expected cost and the cost of the network the search would end on,
    per epoch, one figure; the costs and their target in one measure (``measure``: e.g.
    "backbone GMACs", "ms on onnxruntime cpu")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for key in ("op", "mid", "out"):
        a.plot(epochs, [r["options_left"][key] for r in rows], marker="o", label=key)
    a.set(xlabel="epoch", ylabel="options left", title="solution space", yscale="log")
    a.legend()
    b.plot(epochs, [r[f"expected_{unit.lower()}"] for r in rows], marker="o", color="C3",
           label="expected")
    if all(f"network_{unit.lower()}" in r for r in rows):  # logs from before lack it
        b.plot(epochs, [r[f"network_{unit.lower()}"] for r in rows], color="C2",
               drawstyle="steps-post", label="the network it would end on")
    if target:
        b.axhline(target, color="gray", linestyle="--", label=f"target {target:.3g}")
    b.set(xlabel="epoch", ylabel=measure or unit, title="cost vs target")
    b.legend()
    fig.tight_layout()
    return fig
