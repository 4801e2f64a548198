"""The bi-level SSR search, readable top to bottom: a weight step on one batch, an arch step
on another (first order), shrinking after each epoch or every N steps, the state saved after
every epoch (``run_folder``), and a discrete network a later ``train`` starts from. Defaults
are the authors' (Search and Retrain/main_search3.py): both batches from the whole set, the
class-weighted CE in both steps, the arch objective 100 CE + 30 SSR(op) + 15 SSR(out) + 15
SSR(mid) + 1 cost with cost = (E[cost] - target)^2 / full^2 in MACs (or, with a latency
table, expected ms on its device); ``cost_constraint="off"`` is their recipe exactly. By
default the target is held as a constraint, SSR's terms untouched: a multiplier on E[cost] /
target moves by dual ascent after every arch step (restarting when the violation changes
sign), shrinking never removes an option of the anchor (the most probable network within
``cost_band`` of the target, ``search.budget``), and over the last ``settle`` of the epochs
the shrinking threshold rises from ``tau`` to 1 so the search ends on the anchor (what that
removed beyond ``tau`` is counted as ``forced``); where epochs run out first, the anchor is
the network. README's "How the search holds its target" has the measurements.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Subset

from ssr_deploy import distributed
from ssr_deploy.data import transforms as T
from ssr_deploy.data import weights as class_weights
from ssr_deploy.data.augmented import AugmentedDataset, quiet_worker
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.genotype import InputSpec
from ssr_deploy.io import atomic_write_text, jsonable
from ssr_deploy.progress import Progress, progress
from ssr_deploy.runs import run_config_text
from ssr_deploy.search.budget import Budget, Pick, argmax, bounds, same_ops
from ssr_deploy.search.config import SearchConfig, check_config
from ssr_deploy.search.extract import extract_discrete
from ssr_deploy.search.landing import FILE as LANDING_FILE
from ssr_deploy.search.landing import LANDED_BAND, ROUNDS, WIDTHS, landing_for
from ssr_deploy.search.losses import cost_loss, ssr_loss
from ssr_deploy.search.measure import cost_measure, target_of
from ssr_deploy.search.run_folder import STATE, SearchFolder
from ssr_deploy.search.shrink import forced_removals, is_discrete, proposal
from ssr_deploy.search.supernet import SuperNet
from ssr_deploy.settings import MAX_EPOCHS, check_counter
from ssr_deploy.space import SearchSpace

__all__ = ["SearchConfig", "Searcher"]


class Searcher:
    def __init__(self, space: SearchSpace, dataset, out: str | Path, config: SearchConfig
                 ) -> None:
        config = check_config(config, space)
        self.rank, self.world = distributed.start(config.device)  # rank 0 of 1 alone
        self.bar = None  # the search's progress, while run() runs
        # epochs finished but not yet written (--save-every): their log rows, the last state
        self.unsaved_rows: list[dict[str, Any]] = []
        self.unsaved_state: dict[str, Any] | None = None
        self.saved_at = time.monotonic()
        distributed.split_batch(config.batch, self.world)  # each rank's share, or refused
        distributed.warn_if_oversubscribed(config.device)
        name, weights = class_weights.resolve(config.class_weights, config.data, dataset)
        config = dataclasses.replace(config, class_weights=name)
        self.space, self.config, self.folder = space, config, SearchFolder(out)
        self.device = torch.device(distributed.rank_device(config.device))
        self.class_weights = weights.to(self.device)
        self.comm_bytes = 0  # sent by this rank's all-reduces (under torchrun)
        self.notes: list[str] = []
        torch.manual_seed(config.seed)  # every rank builds the same supernet
        self.classes, self.palette = tuple(dataset.classes), tuple(dataset.palette)
        self.net = SuperNet(space, len(self.classes), config.normalisation).to(self.device)
        if self.world > 1:  # BatchNorm and dropout over the job's batch, as in one process
            distributed.as_one_batch(self.net)
        # the width decisions: every (layer, op) row of an op that has widths
        self.width_rows = self.net.mid_valid.any(-1).clone()
        self.measure = cost_measure(config, space, len(self.classes))
        self.tables = self.measure.tables()  # what each choice of a layer costs
        with torch.no_grad():
            self.full = float(self.expected_cost(full=True))
        self.target = target_of(config, self.measure, self.full)
        self._check_target()
        self.cost_scale = self.measure.scale_of_deviation(self.smallest, self.full)
        #: what the cost term, the multiplier and the band hold the network to, in the
        #: measure's terms: the target, until a landing moves it (``search.landing``)
        self.aim = self.target
        self.budget = (Budget(self.tables, self.aim, config.cost_band)
                       if config.cost_constraint == "dual" else None)
        self.landing, note = landing_for(config, self.measure, self.folder.path, self.world,
                                         self.net.op_list)
        self.notes += [note] if note else []
        self.input = InputSpec()  # the normalisation the supernet learns with
        data = AugmentedDataset(dataset, T.preset("paper", config.size), self.input, config.seed)
        self.data = data
        if config.arch_data == "full":  # both batches from the whole set (authors')
            if len(data) < config.batch:
                raise SsrDeployError(f"{len(data)} images make no batch of {config.batch}; "
                                     "add data or lower --batch")
            self.weight_set = self.arch_set = data
        else:  # weights learn on one half, the architecture on the other
            half = len(data) // 2
            if half < config.batch:
                raise SsrDeployError(f"{len(data)} images give no two batches of "
                                     f"{config.batch}; add data or lower --batch")
            self.weight_set = Subset(data, range(half))
            self.arch_set = Subset(data, range(half, len(data)))
        self.arch_opt = torch.optim.Adam(self.net.arch_parameters(), lr=config.arch_lr,
                                         betas=(0.9, 0.999), weight_decay=config.arch_decay)
        self.weight_opt = self._weight_optimizer()
        self.epoch, self.step = 0, 0
        self.multiplier = 0.0  # the cost constraint's lambda (dual ascent)
        self.anchor: Pick | None = None  # the most probable network in the band, last found
        #: what settling removed that tau alone would have kept
        self.forced = {"decisions": 0, "mass": 0.0}
        if self.world > 1:
            distributed.check_agree(
                {"settings": self.settings(), "images": len(dataset), **self._digest(True)},
                "the search they start")

    def _masks(self) -> tuple[np.ndarray, ...]:
        n = self.net
        return tuple(m.cpu().numpy() for m in (n.op_valid, n.mid_valid, n.out_valid))

    def _set_masks(self, masks) -> None:
        for buffer, mask in zip((self.net.op_valid, self.net.mid_valid, self.net.out_valid),
                                masks, strict=True):
            buffer.copy_(torch.from_numpy(mask))
        if self.net.drop_pruned_ops():
            self.weight_opt = self._weight_optimizer(self.weight_opt)

    def found_cost(self, genotype) -> float:
        """A discrete network's cost in the target's own measure: predicted ms on the
        table's device, or MACs (backbone or network, as the search counts them)."""
        return self.measure.found(genotype)

    def expected_cost(self, full: bool = False) -> torch.Tensor:
        """The cost term's E[cost]: ms on the table's device, or MACs."""
        return self.measure.expected(self.net, full)

    def settings(self) -> str:
        """OUT/config.json's text: every resolved setting of this search."""
        return run_config_text("search", self.config,
                               class_weights=self.class_weights.cpu().tolist(),
                               class_weights_from=self.config.class_weights,
                               **self.measure.settings(self.target, self.full),
                               data_split=self.config.arch_data, classes=list(self.classes))

    def _check_target(self) -> None:
        """The target must lie between the space's cheapest and dearest network (exact, from
        the cost tables), both named when it does not."""
        self.smallest, self.largest = bounds(self.tables, self._masks())
        if not self.smallest <= self.target <= self.largest:
            raise SsrDeployError(self.measure.outside(self.target, self.smallest,
                                                      self.largest))

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
        loaders = [self._loader(s, c.seed + self.epoch + 100_003 * k)
                   for k, s in enumerate((self.weight_set, self.arch_set))]
        for group in self.weight_opt.param_groups:  # poly 0.9 over the search
            group["lr"] = c.weight_lr * (1 - self.epoch / c.epochs) ** 0.9
        sums: dict[str, list[float]] = {"ce": [], "arch": [], "ssr_op": [], "cost": []}
        self.net.train()
        steps = len(loaders[0])
        bar = self.bar or Progress("search", enabled=False)
        bar.set_total(bar.n + steps * (c.epochs - self.epoch))
        for i, ((x, y), (xa, ya)) in enumerate(zip(*loaders, strict=False)):
            x, y, xa, ya = (t.to(self.device) for t in (x, y, xa, ya))
            ce = self._ce(x, y)
            self.weight_opt.zero_grad(set_to_none=True)
            ce.backward()
            ce_value = self._sum_over_ranks(self.net.weight_parameters(), ce)
            if c.weight_clip:
                torch.nn.utils.clip_grad_norm_(self.net.weight_parameters(), c.weight_clip)
            self.weight_opt.step()
            sums["ce"].append(ce_value)
            if self.epoch >= c.warmup_epochs:
                parts = self.arch_step(xa, ya)
                for k in ("arch", "ssr_op", "cost"):
                    sums[k].append(parts[k])
            self.step += 1
            bar.update(1, epoch=f"{self.epoch + 1}/{c.epochs}", ce=f"{ce_value:.3f}")
            if c.shrink_every and self.step % c.shrink_every == 0 and \
                    self.epoch >= c.warmup_epochs:
                self.shrink(self.epoch + (i + 1) / steps)
            if self.world > 1:  # a rank that would diverge stops the run here
                distributed.check_agree(self._digest(), f"the architecture after step "
                                                        f"{self.step}")
        settles_now = c.settle and self.epoch + 1 == c.epochs  # tau reaches 1 at the end
        if self.epoch >= c.warmup_epochs and (
                not c.shrink_every or settles_now and self.step % c.shrink_every):
            self.shrink(self.epoch + 1)
        if self.world > 1:
            distributed.check_agree(self._digest(True), f"the supernet after epoch "
                                                        f"{self.epoch + 1}")
        return {k: float(np.mean(v)) if v else float("nan") for k, v in sums.items()}

    # ---- many processes (torchrun): one search -------------------------------------
    def _loader(self, subset, seed: int) -> DataLoader:
        """This rank's share of each global batch: every rank draws the batches one process
        would (the same shuffle, the same seed) and takes its slice."""
        generator = torch.Generator().manual_seed(seed)  # the loader's, as shuffle=True has it
        batches = BatchSampler(RandomSampler(subset, generator=generator), self.config.batch,
                               drop_last=True)
        return DataLoader(subset, batch_sampler=distributed.RankBatches(batches, self.rank,
                                                                        self.world),
                          generator=generator, num_workers=self.config.workers,
                          worker_init_fn=quiet_worker)

    def _sum_over_ranks(self, params: list[torch.Tensor], loss: torch.Tensor) -> float:
        """Sum the gradients of ``params`` and the loss's value over the ranks (each rank's
        loss is its share of the global batch's), in one message; the global loss."""
        if self.world == 1:
            return loss.item()
        grads = [p.grad for p in params if p.grad is not None]
        value = loss.detach().reshape(1).float()
        self.comm_bytes += distributed.all_sum([*grads, value])
        return value.item()

    def _digest(self, weights: bool = False) -> dict[str, Any]:
        """What every rank must hold alike: the step, the architecture weights, the option
        masks and the multiplier (and, with ``weights``, every tensor of the supernet)."""
        def digest(tensors) -> str:
            h = hashlib.sha256()
            for t in tensors:
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            return h.hexdigest()[:16]

        n = self.net
        out = {"step": self.step, "multiplier": self.multiplier,
               "architecture": digest(n.arch_parameters()),
               "options": digest((n.op_valid, n.mid_valid, n.out_valid))}
        if weights:
            out["weights"] = digest(n.state_dict().values())
        return out

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        c = self.config
        weights = self.net.weight_parameters()
        for p in weights:  # the arch step needs no weight gradients
            p.requires_grad_(False)
        try:
            op_p, mid_p, out_p = self.net.probs()
            ce = self._ce(x, y)
            ssr_op = ssr_loss(op_p, self.net.op_valid)
            ssr_mid = ssr_loss(*self._width_rows(mid_p, self.net.mid_valid))
            ssr_out = ssr_loss(*self._width_rows(out_p, self.net.out_valid))
            expected = self.expected_cost()
            cost = cost_loss(expected, self.aim, self.cost_scale)
            shared = (c.w_ssr_op * ssr_op + c.w_ssr_out * ssr_out + c.w_ssr_mid * ssr_mid
                      + c.w_cost * cost)  # the same on every rank: each adds its 1/world
            if c.cost_constraint == "dual":  # the Lagrangian term of E[cost] = target
                shared = shared + self.multiplier * expected / self.aim
            loss = c.w_ce * ce + (shared / self.world if self.world > 1 else shared)
            self.arch_opt.zero_grad(set_to_none=True)
            loss.backward()
            loss_value = self._sum_over_ranks(self.net.arch_parameters(), loss)
            torch.nn.utils.clip_grad_norm_(self.net.arch_parameters(), c.arch_clip)
            self.arch_opt.step()
        finally:
            for p in weights:
                p.requires_grad_(True)
        if c.cost_constraint == "dual":  # dual ascent on the relative violation
            step = c.dual_lr * (expected.item() - self.aim) / self.aim
            # anti-windup: a multiplier still pushing the other way restarts from this step
            self.multiplier = step if self.multiplier * step < 0 else self.multiplier + step
        return {"arch": loss_value, "ssr_op": ssr_op.item(), "cost": cost.item()}

    def _ce(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The class-weighted CE of the batch. Under torchrun, this rank's share of the
        global batch's: its weighted sum over the weight of every rank's pixels, so the sum
        over the ranks is the one-process mean exactly."""
        with self._autocast():
            logits = self.net(x)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32
        if self.world == 1:
            return F.cross_entropy(logits, y, self.class_weights, ignore_index=255)
        total = F.cross_entropy(logits, y, self.class_weights, ignore_index=255,
                                reduction="sum")
        weight = self.class_weights[y[y != 255]].sum().reshape(1)
        self.comm_bytes += distributed.all_sum([weight])
        return total / weight[0]

    def _width_rows(self, probs: torch.Tensor, valid: torch.Tensor):
        """The width decisions the SSR width term averages over: every (layer, op) row
        (a removed op's rows count 0, the authors' mean) or only the surviving ones."""
        if self.config.ssr_width_mean == "all":
            return probs[self.width_rows], valid[self.width_rows]
        return _rows(probs, valid)

    def _autocast(self):
        """bfloat16 autocast on CUDA (no loss scaling needed); a no-op on CPU."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def tau_at(self, epochs_done: float) -> float:
        """The shrinking threshold after ``epochs_done`` (fractional) epochs: ``tau``, rising
        linearly to 1 over the last ``settle`` of the epochs (1 keeps one option each)."""
        c = self.config
        start = c.epochs * (1 - c.settle)
        if not c.settle or epochs_done <= start:
            return c.tau
        done = (epochs_done - start) / (c.epochs - start)
        return 1.0 if done >= 1 else c.tau + (1 - c.tau) * done

    @torch.no_grad()
    def shrink(self, epochs_done: float | None = None) -> None:
        """Op level first (a removed op takes its widths along), then the widths, at the
        threshold of this point of the search (``tau_at``). With the cost held (``dual``)
        the anchor's options stay, and where tau has reached 1 the anchor alone is left."""
        net = self.net
        tau = self.config.tau if epochs_done is None else self.tau_at(epochs_done)
        probs = net.probs()
        valids = (net.op_valid, net.mid_valid, net.out_valid)
        before = self._masks()
        if self.budget:
            if self.landing and not self.landing.settled and (
                    tau > self.config.tau or not self.landing.rounds):
                # the first shrinking step, then where settling begins: where it heads, timed
                self._land(before, _log(probs), settling=tau > self.config.tau)
            self.anchor = self.budget.pick(before, _log(probs), self.anchor)
            keep = self.budget.masks_of(self.anchor, before)
            proposed = keep if tau >= 1 else proposal(probs, valids, tau, keep)
        else:
            proposed = proposal(probs, valids, tau)
        if tau > self.config.tau:  # what the rise removed that tau alone would have kept
            kept = proposal(probs, valids, self.config.tau)
            decisions, mass = forced_removals(before, proposed, kept, probs)
            n = self.forced["decisions"] + decisions
            self.forced = {"decisions": n, "mass": (self.forced["mass"] * self.forced[
                "decisions"] + mass * decisions) / n if n else 0.0}
        self._set_masks(proposed)

    @torch.no_grad()
    def network_cost(self) -> float:
        """The cost of the network the search would end on, in the target's measure: the
        anchor of the last shrinking step (with the cost held), else the argmax now."""
        if self.budget and self.anchor is not None:
            return self.anchor.cost
        masks, logp = self._masks(), _log(self.net.probs())
        if self.budget:
            return self.budget.pick(masks, logp).cost
        return argmax(self.tables, masks, logp).cost

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
        epoch: the state is saved as after an interruption); one run per output folder."""
        if self.rank != 0:  # rank 0 alone writes, and holds the folder
            return self._run(stop_after)
        with self.folder.lock():
            return self._run(stop_after)

    def _run(self, stop_after: int | None) -> dict[str, Any]:
        last = min(self.config.epochs, stop_after or self.config.epochs)
        if self.epoch == 0 and self.rank == 0:  # a new search says how it runs from the start
            self.folder.start(self.settings())
        with progress("search", unit="step", enabled=self.rank == 0) as self.bar:
            try:
                return self._epochs(last)
            except KeyboardInterrupt:
                self.flush()
                raise

    def _epochs(self, last: int) -> dict[str, Any]:
        while self.epoch < last and not self.discrete():
            start, sent, steps_before = time.perf_counter(), self.comm_bytes, self.step
            losses = self.search_one_epoch()
            self.epoch += 1
            unit, scale = self.measure.unit, self.measure.scale
            with torch.no_grad():
                expected = float(self.expected_cost()) / scale
                mean_max_prob = self.mean_max_prob()
            row = {"epoch": self.epoch, **losses, f"expected_{unit.lower()}": expected,
                   f"network_{unit.lower()}": self.network_cost() / scale,
                   **({"aim_ms": self.aim} if self.landing else {}),
                   "multiplier": self.multiplier, "tau": self.tau_at(self.epoch),
                   "forced": dict(self.forced),
                   "options_left": self.options_left(), "mean_max_prob": mean_max_prob,
                   "seconds": time.perf_counter() - start}
            if self.world > 1:  # what each rank sent per step, for the cost of spreading it
                row.update(processes=self.world, allreduce_bytes_per_step=round(
                    (self.comm_bytes - sent) / max(self.step - steps_before, 1)))
            self.save(row, now=self.epoch == last or self.discrete())
            left = self.options_left()
            self.bar.say(f"epoch {self.epoch}/{self.config.epochs}: ce {losses['ce']:.3f}, "
                         f"expected {expected:.3g} {unit}, options left {left['op']} ops "
                         f"{left['mid'] + left['out']} widths, {row['seconds']:.0f}s")
        return self.finish()

    @torch.no_grad()
    def finish(self) -> dict[str, Any]:
        """Discretise where the epochs ran out (the argmax; with the cost held, the anchor,
        which the supernet's masks then keep alone), write genotype.json + discrete.pt.
        ``ended``: converged (SSR and tau alone), settled (settling removed options tau
        would have kept), argmax, in band (the anchor, where the argmax was not in it), or
        measured (a network the landing measured nearer the target than that one);
        ``mean_max_prob``: as the search left it, before."""
        probs = self.net.probs()
        gap = {k: _mass_discarded(p, v) for k, p, v in zip(
            ("op", "mid", "out"), probs, (self.net.op_valid, self.net.mid_valid,
                                          self.net.out_valid), strict=True)}
        converged, mean_max = self.discrete(), self.mean_max_prob()
        ended = "settled" if self.forced["decisions"] else "converged"
        if not converged:
            ended = "argmax"
            if self.budget:
                masks, logp = self._masks(), _log(probs)
                if self.landing and not self.landing.settled:
                    self._land(masks, logp, settling=True)
                self.anchor = self.budget.pick(masks, logp, self.anchor)
                if self.anchor.choices != argmax(self.tables, masks, logp).choices:
                    ended = "in band"
                self._set_masks(self.budget.masks_of(self.anchor, masks))
        if self.budget and self.landing:
            masks, logp = self._masks(), _log(probs)
            here = argmax(self.tables, masks, logp)  # one network left: the one to end on
            chosen = self._nearest_measured(here)
            if chosen.choices != here.choices:
                self.anchor, ended = chosen, "measured"
                self._set_masks(self.budget.masks_of(chosen, masks))
        discrete = self.discrete_model()
        genotype = discrete.genotype
        measured = self._time_found(genotype) if self.rank == 0 and self.landing else None
        if self.rank == 0:
            self.folder.finish(discrete, genotype)
        return {"genotype": genotype, "converged": converged, "epochs": self.epoch,
                "discarded_mass": gap, "ended": ended, "mean_max_prob": mean_max,
                "forced": dict(self.forced), "measured": measured}

    # ---- landing on the target as measured (search.landing) ---------------------------
    def _land(self, masks, logp, settling: bool) -> None:
        """Time the anchor on the table's path and aim where the table, corrected by what
        was measured, puts the target (aim = target / ``Landing.ratio``), in a band a third
        as wide. At the first shrinking step one network (the search then has its epochs to
        move); where settling begins, until an anchor is measured within the band of the
        target, at most ROUNDS networks, or the space left holds no other (its anchor was
        timed already)."""
        band = self.config.cost_band
        self.landing.settled = settling
        for _ in range(ROUNDS if settling else 1):
            self.anchor = self.budget.pick(masks, logp, self.anchor)
            genotype = self.landing.genotype(self.anchor.choices)
            if self.landing.timed(genotype):
                break
            row = self.landing.record(self.aim, self.anchor.cost, genotype, settling,
                                      self.anchor.choices)
            off = row["ms"] / self.target - 1
            aim = float(np.clip(self.target / self.landing.ratio(), self.smallest,
                                self.largest))
            self._say(f"landing: the network it heads for is predicted {row['predicted_ms']:.2f}"
                      f" ms and measured {row['ms']:.2f} ms ({off:+.1%} from the target "
                      f"{self.target:.2f}); aiming at {aim:.2f} ms predicted")
            self._aim_at(aim)
            if settling and abs(off) <= band:
                break

    def _nearest_measured(self, here: Pick) -> Pick:
        """The network to end on, as measured: ``here`` (timed now if the landing has not)
        where it runs within --cost-band of the target; else, after ``here``'s ops at other
        widths are timed (``_other_widths``), of the networks the landing timed whose ops the
        shrinking has not removed, the one that runs nearest the target, where nearer than
        ``here``. The table errs by network, not by one factor: on OpenVINO int8 three
        networks one search headed for ran 0.93x, 1.07x and 1.10x their predictions."""
        genotype = self.landing.genotype(here.choices)
        mine = self.landing.timed(genotype) or self.landing.record(
            self.aim, here.cost, genotype, settling=True, choices=here.choices)
        if abs(mine["ms"] / self.target - 1) <= self.config.cost_band:
            return here
        self._other_widths(here, mine)

        def off(row: dict[str, Any]) -> float:
            return abs(float(np.log(row["ms"] / self.target)))

        def kept(choices: list) -> bool:  # its ops' weights are still in the supernet
            return all(c is None or str(c[0]) in self.net.layers[li]
                       for li, c in enumerate(choices))

        best = min((r for r in self.landing.rounds if r.get("choices") and
                    kept(r["choices"])), key=off, default=mine)
        if off(best) >= off(mine):
            return here
        choices = [None if c is None else tuple(c) for c in best["choices"]]
        self._say(f"landing: ending on a network it measured at {best['ms']:.2f} ms, nearer "
                  f"the target {self.target:.2f} than the last ({mine['ms']:.2f} ms)")
        return Pick(choices, self.tables.cost(choices), 0.0)

    def _other_widths(self, here: Pick, row: dict[str, Any]) -> None:
        """Time ``here``'s layers and ops at other widths, up to WIDTHS networks, until one
        runs within --cost-band of the target: each the network nearest ``here``'s widths
        that the table puts on the target corrected by what the last one timed ran at
        (measured / predicted), in a band a third as wide."""
        valid, near = same_ops(self.tables, here, self._masks())
        for _ in range(WIDTHS):
            aim = self.target * row["predicted_ms"] / row["ms"]
            pick = Budget(self.tables, aim, self.config.cost_band / LANDED_BAND).pick(valid,
                                                                                     near)
            genotype = self.landing.genotype(pick.choices)
            if self.landing.timed(genotype):
                break  # no other width moves it nearer the aim
            row = self.landing.record(aim, pick.cost, genotype, settling=True,
                                      choices=pick.choices)
            off = row["ms"] / self.target - 1
            self._say(f"landing: the same layers at other widths, predicted "
                      f"{row['predicted_ms']:.2f} ms, measured {row['ms']:.2f} ms ({off:+.1%}"
                      f" from the target {self.target:.2f})")
            if abs(off) <= self.config.cost_band:
                break

    def _aim_at(self, aim: float) -> None:
        """Hold the network to ``aim`` (the measure's terms), in a band a third as wide as
        --cost-band: the aim comes from a measurement, the band is what is left to it."""
        self.aim = aim
        self.budget = Budget(self.tables, aim, self.config.cost_band / LANDED_BAND)

    def _time_found(self, genotype) -> dict[str, Any]:
        """The found network timed on the table's path (landing.json), its exports gone."""
        timed = self.landing.time(genotype)
        predicted = self.found_cost(genotype)
        found = {"predicted_ms": predicted, **timed, "target_ms": self.target,
                 "error": timed["ms"] / self.target - 1, "aim_ms": self.aim,
                 "rounds": self.landing.rounds,
                 "how": "exported and run on the table's path on this machine as `bench` "
                        "runs it, in passes with the table's reference network timed before "
                        "and after each; ms: the median over steady passes (the two "
                        "reference times within 5%, the machine within 5% of its fastest "
                        "among them) of each time over the machine's speed then (at the "
                        "table's speed); raw_ms: the least time as run; spread: "
                        "the standard error of those passes' log times; passes, steady: how "
                        "many were taken and were steady"}
        atomic_write_text(self.folder.path / LANDING_FILE, json.dumps(found, indent=1) + "\n")
        self.landing.close()
        return found

    def _say(self, line: str) -> None:
        if self.rank == 0:
            (self.bar or Progress("search", enabled=False)).say(line)

    @torch.no_grad()
    def discrete_model(self):
        """The argmax network with the supernet's weights sliced out (on the CPU)."""
        from ssr_deploy.model.net import build_model

        genotype, state = extract_discrete(self.net.cpu().eval(), "searched", self.classes,
                                           self.palette)
        self.net.to(self.device)
        discrete = build_model(genotype, len(self.classes))
        discrete.load_state_dict(state)
        return discrete

    def discretisation_gap(self, val_set) -> dict[str, float]:
        """What the paper's SSR loss is for: the supernet's val mIoU under its soft
        architecture, the extracted network's with the inherited weights (no retraining),
        and the gap between them (0 once every decision has one option left)."""
        from ssr_deploy.train.evaluate import evaluate

        size, device = self.config.size, str(self.device)
        soft = evaluate(self.net, val_set, size, device=device, spec=self.input)["miou"]
        hard = evaluate(self.discrete_model(), val_set, size, device=device)["miou"]
        return {"supernet_miou": soft, "discrete_miou": hard, "gap": soft - hard}

    @torch.no_grad()
    def mean_max_prob(self) -> float:
        """Mean over every live decision (ops of each layer, widths of each surviving op)
        of its largest probability: 1 when one-hot."""
        op_p, mid_p, out_p = self.net.probs()
        rows = [op_p] + [p[v.any(-1)] for p, v in ((mid_p, self.net.mid_valid),
                                                  (out_p, self.net.out_valid))]
        return float(torch.cat([r.max(-1).values for r in rows]).mean())

    # ---- the state, saved after each epoch --------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the next epoch depends on: weights, masks, optimisers, the RNG, the
        multiplier, the anchor, the space and the settings."""
        return {"epoch": self.epoch, "step": self.step, "net": self.net.state_dict(),
                "weight_opt": self.weight_opt.state_dict(),
                "arch_opt": self.arch_opt.state_dict(), "rng": torch.get_rng_state(),
                "processes": self.world,
                "multiplier": self.multiplier, "forced": self.forced,
                "anchor": None if self.anchor is None else self.anchor.choices,
                "aim": self.aim, "landing": self.landing.state() if self.landing else None,
                "space": self.space.to_dict(), "config": jsonable(asdict(self.config))}

    def save(self, row: dict[str, Any], now: bool = False) -> None:
        """This epoch's state, written by rank 0 (every rank holds the same) when
        ``--save-every`` seconds have passed since the last write (or ``now``); else kept in
        memory with its log row, for ``flush`` (an interruption) or the next write."""
        if self.rank != 0:
            return
        self.unsaved_rows.append(row)
        if now or time.monotonic() - self.saved_at >= self.config.save_every:
            self._write(self.state_dict())
        else:
            self.unsaved_state = copy.deepcopy(self.state_dict())

    def flush(self) -> None:
        """Write the last finished epoch's state if it is not on disk yet (an interruption:
        --resume then continues from it, exactly)."""
        if self.rank == 0 and self.unsaved_state is not None:
            self._write(self.unsaved_state)

    def _write(self, state: dict[str, Any]) -> None:
        m = self.measure
        self.folder.save(state, self.unsaved_rows, self.settings(), self.target / m.scale,
                         m.unit, m.describe())
        self.unsaved_rows, self.unsaved_state = [], None
        self.saved_at = time.monotonic()

    def resume(self) -> None:
        """Continue the search its folder's search.pt saved, exactly."""
        self.load_state_dict(self.folder.load(self.device))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["space"] != self.space.to_dict():
            raise SsrDeployError(f"{self.folder.path / STATE} was searched in another space; "
                                 "use the same --space")
        for name in ("op_valid", "mid_valid", "out_valid"):
            getattr(self.net, name).copy_(state["net"][name])
        self.net.drop_pruned_ops()
        self.net.load_state_dict(state["net"])
        self.weight_opt = self._weight_optimizer()
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        for group in self.arch_opt.param_groups:  # an --override'd rate holds from here on
            group["lr"] = self.config.arch_lr
        torch.set_rng_state(state["rng"].cpu())  # every rank's: they draw alike
        saved = state.get("processes", 1)
        if saved != self.world:
            self.notes.append(f"{STATE} was saved by {saved} process{'es' * (saved > 1)}; it "
                              f"goes on with {self.world}: the same search (the global batch "
                              f"of {self.config.batch} is split, not changed)")
        where = str(self.folder.path / STATE)
        self.epoch = check_counter(state["epoch"], "epoch", MAX_EPOCHS, where)
        self.step = check_counter(state["step"], "step", 1 << 62, where)
        self.multiplier = float(state.get("multiplier", 0.0))
        self.forced = dict(state.get("forced", {"decisions": 0, "mass": 0.0}))
        if self.budget and float(state.get("aim", self.target)) != self.target:
            self._aim_at(float(state["aim"]))
        if self.landing and state.get("landing"):
            self.landing.load(state["landing"])
        if state.get("anchor") is not None:  # the cost is the tables', the score the pick's
            choices = [None if c is None else tuple(c) for c in state["anchor"]]
            self.anchor = Pick(choices, self.tables.cost(choices), 0.0)
        if self.world > 1:
            distributed.check_agree(self._digest(True), "the state they resume")


def _log(probs) -> tuple[np.ndarray, ...]:
    """Log probabilities as the budget's exact solver takes them (float64, numpy)."""
    return tuple(p.clamp_min(1e-30).log().double().cpu().numpy() for p in probs)


def _rows(probs: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decisions that still exist (a removed op's width decisions are gone)."""
    keep = valid.any(-1)
    return probs[keep], valid[keep]


def _mass_discarded(probs: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean probability mass an argmax discards per decision (0 once converged)."""
    probs, valid = _rows(probs, valid)
    return float((1 - probs.max(-1).values).mean()) if len(probs) else 0.0
