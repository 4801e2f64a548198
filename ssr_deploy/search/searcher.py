"""The bi-level SSR search, readable top to bottom: a weight step on one batch, an arch step
on a held-out batch (first order), shrinking after each epoch or every N steps, a
checkpoint after every epoch, and outputs a later ``train`` can start from.

Arch objective (defaults from the authors' code):
    100 CE + 30 SSR(op) + 15 SSR(out width) + 15 SSR(mid width) + 1 cost,
    cost = (E[MACs] / full - target / full)^2, target = 0.6 x full unless given.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ssr_deploy.data import transforms as T
from ssr_deploy.data.augmented import AugmentedDataset
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.genotype import InputSpec
from ssr_deploy.io import epoch_log, figure_writer, jsonable, publish_files
from ssr_deploy.model.checkpoint import save_checkpoint
from ssr_deploy.search.cost import expected_macs
from ssr_deploy.search.extract import extract_discrete
from ssr_deploy.search.losses import cost_loss, ssr_loss
from ssr_deploy.search.shrink import is_discrete, shrink_mask
from ssr_deploy.search.space import SearchSpace
from ssr_deploy.search.supernet import SuperNet


@dataclass
class SearchConfig:
    size: tuple[int, int] = (512, 1024)
    epochs: int = 200
    warmup_epochs: int = 0
    batch: int = 6
    weight_lr: float = 3e-4
    weight_decay: float = 1e-4
    arch_lr: float = 2e-3
    arch_decay: float = 1e-3
    grad_clip: float = 5.0
    tau: float = 0.1
    shrink_every: int = 0  # steps; 0 = after each epoch
    w_ce: float = 100.0
    w_ssr_op: float = 30.0
    w_ssr_out: float = 15.0
    w_ssr_mid: float = 15.0
    w_cost: float = 1.0
    target_ratio: float = 0.6
    target_gmacs: float | None = None
    normalisation: str = "sigmoid"
    workers: int = 0
    seed: int = 0
    device: str = "cpu"
    data: str = ""  # the --data source, recorded so --resume can hold to it


def saved_config(out: str | Path) -> dict[str, Any]:
    """The settings a search in ``out`` ran with (from its search.pt)."""
    state = _load_state(Path(out) / "search.pt", "cpu")
    return state.get("config", {})


def _load_state(path: Path, device) -> dict[str, Any]:
    if not path.is_file():
        raise SsrDeployError(f"--resume: {path} does not exist; run without --resume first")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise SsrDeployError(f"cannot read {path}: {str(e).splitlines()[0][:120]} (a damaged "
                             "search state; start again with a new --out)") from None


class Searcher:
    def __init__(self, space: SearchSpace, dataset, out: str | Path, config: SearchConfig
                 ) -> None:
        self.space, self.config, self.out = space, config, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)
        self.classes, self.palette = tuple(dataset.classes), tuple(dataset.palette)
        self.net = SuperNet(space, len(self.classes), config.normalisation).to(self.device)
        with torch.no_grad():
            self.full = float(expected_macs(self.net, config.size, full=True))
        self.target = (config.target_gmacs * 1e9 if config.target_gmacs
                       else config.target_ratio * self.full)
        self._check_target()
        data = AugmentedDataset(dataset, T.preset("paper", config.size), InputSpec(), config.seed)
        half = len(data) // 2  # weights learn on one half, the architecture on the other
        if half < config.batch:
            raise SsrDeployError(f"{len(data)} images give no two batches of {config.batch}; "
                                 "add data or lower --batch")
        self.data = data
        self.weight_set, self.arch_set = Subset(data, range(half)), Subset(data, range(half,
                                                                                      len(data)))
        self.arch_opt = torch.optim.Adam(self.net.arch_parameters(), lr=config.arch_lr,
                                         betas=(0.9, 0.999), weight_decay=config.arch_decay)
        self.weight_opt = self._weight_optimizer()
        self.epoch, self.step = 0, 0

    def _check_target(self) -> None:
        low = SuperNet(self.space, len(self.classes))
        low.op_alpha.data[:, 0] = 50.0 if self.space.skip else 0.0
        low.mid_alpha.data[..., -1] = 50.0
        low.out_alpha.data[..., -1] = 50.0
        with torch.no_grad():
            smallest = float(expected_macs(low, self.config.size))
        if not smallest * 0.9 <= self.target <= self.full:
            raise SsrDeployError(f"target {self.target / 1e9:.2f} GMACs is outside what this "
                                 f"space can reach ({smallest / 1e9:.2f} to "
                                 f"{self.full / 1e9:.2f} GMACs at {self.config.size[0]}x"
                                 f"{self.config.size[1]})")

    def _weight_optimizer(self, old: torch.optim.Optimizer | None = None) -> torch.optim.Adam:
        """Adam over the surviving weights; kept parameters keep their moments."""
        opt = torch.optim.Adam(self.net.weight_parameters(), lr=self.config.weight_lr,
                               weight_decay=self.config.weight_decay)
        if old is not None:
            for p in self.net.weight_parameters():
                if p in old.state:
                    opt.state[p] = old.state[p]
            opt.param_groups[0]["lr"] = old.param_groups[0]["lr"]
        return opt

    # ---- one epoch ------------------------------------------------------------------
    def search_one_epoch(self) -> dict[str, float]:
        c = self.config
        self.data.epoch = self.epoch
        gen = torch.Generator().manual_seed(c.seed + self.epoch)
        loaders = [DataLoader(s, c.batch, shuffle=True, drop_last=True, generator=gen,
                              num_workers=c.workers) for s in (self.weight_set, self.arch_set)]
        for group in self.weight_opt.param_groups:  # poly 0.9 over the search
            group["lr"] = c.weight_lr * (1 - self.epoch / c.epochs) ** 0.9
        sums: dict[str, list[float]] = {"ce": [], "arch": [], "ssr_op": [], "cost": []}
        self.net.train()
        for (x, y), (xa, ya) in tqdm(zip(*loaders, strict=False), total=len(loaders[0]),
                                     desc=f"search {self.epoch + 1}/{c.epochs}", leave=False,
                                     disable=None):
            x, y, xa, ya = (t.to(self.device) for t in (x, y, xa, ya))
            with self._autocast():
                ce = F.cross_entropy(self.net(x).float(), y, ignore_index=255)
            self.weight_opt.zero_grad(set_to_none=True)
            ce.backward()
            torch.nn.utils.clip_grad_norm_(self.net.weight_parameters(), c.grad_clip)
            self.weight_opt.step()
            sums["ce"].append(ce.item())
            if self.epoch >= c.warmup_epochs:
                parts = self.arch_step(xa, ya)
                for k in ("arch", "ssr_op", "cost"):
                    sums[k].append(parts[k])
            self.step += 1
            if c.shrink_every and self.step % c.shrink_every == 0 and \
                    self.epoch >= c.warmup_epochs:
                self.shrink()
        if not c.shrink_every and self.epoch >= c.warmup_epochs:
            self.shrink()
        return {k: float(np.mean(v)) if v else float("nan") for k, v in sums.items()}

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        c = self.config
        weights = self.net.weight_parameters()
        for p in weights:  # the arch step needs no weight gradients
            p.requires_grad_(False)
        try:
            op_p, mid_p, out_p = self.net.probs()
            with self._autocast():
                ce = F.cross_entropy(self.net(x).float(), y, ignore_index=255)
            ssr_op = ssr_loss(*_rows(op_p, self.net.op_valid))
            ssr_mid = ssr_loss(*_rows(mid_p, self.net.mid_valid))
            ssr_out = ssr_loss(*_rows(out_p, self.net.out_valid))
            cost = cost_loss(expected_macs(self.net, c.size), self.target, self.full)
            loss = (c.w_ce * ce + c.w_ssr_op * ssr_op + c.w_ssr_out * ssr_out
                    + c.w_ssr_mid * ssr_mid + c.w_cost * cost)
            self.arch_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.arch_parameters(), c.grad_clip)
            self.arch_opt.step()
        finally:
            for p in weights:
                p.requires_grad_(True)
        return {"arch": loss.item(), "ssr_op": ssr_op.item(), "cost": cost.item()}

    def _autocast(self):
        """bfloat16 autocast on CUDA (no loss scaling needed); a no-op on CPU."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    @torch.no_grad()
    def shrink(self) -> None:
        """Op level first (a removed op takes its widths along), then the widths."""
        net, tau = self.net, self.config.tau
        op_p, _, _ = net.probs()
        net.op_valid.copy_(shrink_mask(op_p, net.op_valid, tau))
        alive = net.op_valid[..., None]
        net.mid_valid &= alive
        net.out_valid &= alive
        _, mid_p, out_p = net.probs()
        for valid, probs in ((net.mid_valid, mid_p), (net.out_valid, out_p)):
            rows = valid.any(-1, keepdim=True)
            valid.copy_(shrink_mask(probs, valid, tau) & rows)
        if net.drop_pruned_ops():
            self.weight_opt = self._weight_optimizer(self.weight_opt)

    def options_left(self) -> dict[str, int]:
        return {"op": int(self.net.op_valid.sum()), "mid": int(self.net.mid_valid.sum()),
                "out": int(self.net.out_valid.sum())}

    def discrete(self) -> bool:
        n = self.net
        return is_discrete(n.op_valid) and all(
            is_discrete(v[v.any(-1)]) for v in (n.mid_valid, n.out_valid))

    # ---- the loop -------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Search until converged or out of epochs (or, with ``stop_after``, until that
        epoch: the state is saved as after an interruption)."""
        last = min(self.config.epochs, stop_after or self.config.epochs)
        while self.epoch < last and not self.discrete():
            start = time.perf_counter()
            losses = self.search_one_epoch()
            self.epoch += 1
            with torch.no_grad():
                op_p, _, _ = self.net.probs()
                gmacs = float(expected_macs(self.net, self.config.size)) / 1e9
            row = {"epoch": self.epoch, **losses, "expected_gmacs": gmacs,
                   "options_left": self.options_left(),
                   "mean_max_prob": float(op_p.max(-1).values.mean()),
                   "seconds": time.perf_counter() - start}
            self.save(row)
        return self.finish()

    @torch.no_grad()
    def finish(self) -> dict[str, Any]:
        """Discretise (argmax where the epochs ran out), write genotype.json + discrete.pt."""
        op_p, mid_p, out_p = self.net.probs()
        gap = {"op": _mass_discarded(op_p, self.net.op_valid),
               "mid": _mass_discarded(mid_p, self.net.mid_valid),
               "out": _mass_discarded(out_p, self.net.out_valid)}
        genotype, state = extract_discrete(self.net.cpu().eval(), "searched", self.classes,
                                           self.palette)
        genotype.save(self.out / "genotype.json")
        from ssr_deploy.model.net import build_model

        discrete = build_model(genotype, len(self.classes))
        discrete.load_state_dict(state)
        save_checkpoint(self.out / "discrete.pt", discrete, genotype, source="ssr-deploy search")
        self.net.to(self.device)
        return {"genotype": genotype, "converged": self.discrete(), "epochs": self.epoch,
                "discarded_mass": gap}

    def save(self, row: dict[str, Any]) -> None:
        """search.pt, search_log.jsonl and search.png of this epoch, all or none."""
        state = {"epoch": self.epoch, "step": self.step, "net": self.net.state_dict(),
                 "weight_opt": self.weight_opt.state_dict(),
                 "arch_opt": self.arch_opt.state_dict(), "rng": torch.get_rng_state(),
                 "space": self.space.to_dict(), "config": jsonable(asdict(self.config))}
        rows, text = epoch_log(self.out / "search_log.jsonl", row)
        fig = search_figure(rows, self.target / 1e9)
        publish_files({self.out / "search.pt": lambda tmp: torch.save(state, tmp),
                       self.out / "search_log.jsonl": lambda tmp: tmp.write_text(text),
                       self.out / "search.png": figure_writer(fig)}, fig)

    def resume(self) -> None:
        path = self.out / "search.pt"
        state = _load_state(path, self.device)
        if state["space"] != self.space.to_dict():
            raise SsrDeployError(f"{path} was searched in another space; use the same --space")
        for name in ("op_valid", "mid_valid", "out_valid"):
            getattr(self.net, name).copy_(state["net"][name])
        self.net.drop_pruned_ops()
        self.net.load_state_dict(state["net"])
        self.weight_opt = self._weight_optimizer()
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        for group in self.arch_opt.param_groups:  # an --override'd rate holds from here on
            group["lr"] = self.config.arch_lr
        torch.set_rng_state(state["rng"])
        self.epoch, self.step = state["epoch"], state["step"]


def _rows(probs: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decisions that still exist (a removed op's width decisions are gone)."""
    keep = valid.any(-1)
    return probs[keep], valid[keep]


def _mass_discarded(probs: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean probability mass an argmax discards per decision (0 once converged)."""
    probs, valid = _rows(probs, valid)
    return float((1 - probs.max(-1).values).mean()) if len(probs) else 0.0


def search_figure(rows: list[dict[str, Any]], target_gmacs: float | None = None):
    """Options left and expected cost per epoch, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for key in ("op", "mid", "out"):
        a.plot(epochs, [r["options_left"][key] for r in rows], marker="o", label=key)
    a.set(xlabel="epoch", ylabel="options left", title="solution space", yscale="log")
    a.legend()
    b.plot(epochs, [r["expected_gmacs"] for r in rows], marker="o", color="C3",
           label="expected")
    if target_gmacs:
        b.axhline(target_gmacs, color="gray", linestyle="--",
                  label=f"target {target_gmacs:.3g}")
    b.set(xlabel="epoch", ylabel="expected GMACs", title="cost")
    b.legend()
    fig.tight_layout()
    return fig
