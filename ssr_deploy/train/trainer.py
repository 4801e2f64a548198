"""Retraining a genotype, the paper's recipe by default (from scratch; Adam 5e-4, wd 1e-4,
poly 0.9 per epoch, batch 6, 300 epochs, cross entropy with the authors' class weights on
Cityscapes, the same formula computed on other data; 255 ignored).

Every epoch writes ``last.pt`` (and ``best.pt`` by val mIoU) atomically, one JSON line to
``log.jsonl`` and ``curves.png``. ``resume`` continues exactly: weights, optimiser,
scheduler, AMP scaler, RNG and best score are in the checkpoint, and each item's
augmentation is seeded by (seed, epoch, index). Under ``torchrun`` it runs DDP
(DistributedSampler; rank 0 alone evaluates and writes).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from ssr_deploy import distributed
from ssr_deploy.data import transforms as T
from ssr_deploy.data import weights as class_weights
from ssr_deploy.data.augmented import AugmentedDataset, quiet_worker
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.genotype import Genotype
from ssr_deploy.io import atomic_write_text, jsonable
from ssr_deploy.media import figure_writer
from ssr_deploy.model.checkpoint import checkpoint_writer, load_weights, read_weights_for
from ssr_deploy.model.net import SSRNet, build_model
from ssr_deploy.progress import Progress, progress
from ssr_deploy.runs import epoch_log, publish_files, run_config_text, run_lock
from ssr_deploy.settings import MAX_EPOCHS, check_counter
from ssr_deploy.train.config import TrainConfig
from ssr_deploy.train.evaluate import evaluate


def model_for_training(genotype: str | None, weights: str | None, search_dir: str | None,
                       dataset) -> SSRNet:
    """The network a run starts from: ``genotype`` (a zoo name or JSON) from scratch, or with
    ``weights``; ``search_dir`` (a finished ``ssr-deploy search``) gives both, its
    genotype.json and discrete.pt. The classes and colours are the dataset's (a folder:
    dataset's classes.json names travel into the checkpoint, its exports and their labels).
    The one place ``train`` and the demo prepare this."""
    if search_dir:
        if weights:
            raise UsageError("give --weights or --init-from-search, not both")
        folder = Path(search_dir)
        for name in ("genotype.json", "discrete.pt"):
            if not (folder / name).is_file():
                raise UsageError(f"--init-from-search {folder}: no {name} there; point it at "
                                 "the --out folder of a finished `ssr-deploy search`")
        weights = str(folder / "discrete.pt")
        genotype = genotype or str(folder / "genotype.json")
    if not genotype:
        raise UsageError("give --genotype (a zoo name or JSON) or --init-from-search DIR")
    g = Genotype.load(genotype)
    state = read_weights_for(g, weights)["state_dict"] if weights else None
    if tuple(dataset.classes) != g.classes:
        g = dataclasses.replace(g, classes=tuple(dataset.classes),
                                palette=tuple(tuple(c) for c in dataset.palette))
    net = build_model(g)
    if state is not None:
        load_weights(net, state, weights)
    return net


def check_training_memory(channels: int, net: torch.nn.Module | None, batch: int,
                          size: tuple[int, int], device: str, maps: int = 40) -> None:
    """Refuse a batch and size that cannot fit in host memory, before the first step
    allocates them. A rough upper estimate: ``maps`` float32 maps of ``channels`` at half
    the input's height and width kept per image for backward, plus weights and Adam state."""
    from ssr_deploy.io import check_memory

    if device.startswith("cuda"):
        return  # the GPU's memory is torch's to report
    h, w = size
    per_image = maps * 4 * channels * (h // 2) * (w // 2)
    params = sum(p.numel() for p in net.parameters()) if net is not None else 0
    check_memory(batch * per_image + 16 * params,
                 f"training at batch {batch}, {h}x{w}", "lower --batch or --size")


class Trainer:
    def __init__(self, net: SSRNet, train_set, val_set, out: str | Path, config: TrainConfig,
                 extra: dict[str, Any] | None = None) -> None:
        self.rank, self.world = distributed.start(config.device)
        name, weights = class_weights.resolve(config.class_weights, config.data, train_set)
        config = dataclasses.replace(config, class_weights=name)
        self.out, self.config, self.extra = Path(out), config, extra or {}
        self.bar = None  # the run's progress, while fit() runs
        self.device = torch.device(distributed.rank_device(config.device))  # torchrun: its GPU
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        self.net = net.to(self.device)
        self.genotype = net.genotype
        self.train_data = AugmentedDataset(train_set, T.preset(config.preset, config.size),
                                           net.genotype.input, config.seed)
        self.val_set = val_set
        self.weights = weights.to(self.device)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.999),
                                          weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda e: max(0.0, 1 - e / config.epochs) ** config.poly_power)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.model = net
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.epoch, self.best = 0, -1.0

    def settings(self) -> str:
        """OUT/config.json's text: every resolved setting of this run."""
        return run_config_text("train", self.config, class_weights=self.weights.cpu().tolist(),
                               class_weights_from=self.config.class_weights,
                               genotype=self.genotype.name, genotype_hash=self.genotype.hash,
                               classes=list(self.genotype.classes))

    # ---- one epoch ------------------------------------------------------------------
    def train_one_epoch(self) -> dict[str, float]:
        self.model.train()
        self.train_data.epoch = self.epoch
        sampler = (DistributedSampler(self.train_data, self.world, self.rank, shuffle=True,
                                      seed=self.config.seed) if self.world > 1 else None)
        if sampler:
            sampler.set_epoch(self.epoch)
        generator = torch.Generator().manual_seed(self.config.seed + self.epoch)
        loader = DataLoader(self.train_data, self.config.batch, shuffle=sampler is None,
                            sampler=sampler, generator=generator, drop_last=True,
                            num_workers=self.config.workers, pin_memory=self.use_amp,
                            worker_init_fn=quiet_worker)
        if len(loader) == 0:
            raise SsrDeployError(f"{len(self.train_data)} training images make no batch of "
                                 f"{self.config.batch}; lower --batch")
        losses = []
        bar = self.bar or Progress("train", enabled=False)
        bar.set_total(bar.n + len(loader) * (self.config.epochs - self.epoch))
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                logits = self.model(images)
                loss = self.loss(images, logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(loss.item())
            bar.update(1, epoch=f"{self.epoch + 1}/{self.config.epochs}",
                       loss=f"{loss.item():.3f}")
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return {"loss": float(np.mean(losses)), "lr": lr}

    # ---- the loop -------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until ``config.epochs``; one run at a time per output folder."""
        if self.rank != 0:  # rank 0 alone writes, and holds the folder
            return self._fit()
        with run_lock(self.out, "train"):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        if self.rank == 0 and self.epoch == 0:  # a new run says how it runs from the start
            atomic_write_text(self.out / "config.json", self.settings())
        with progress("train", unit="step", enabled=self.rank == 0) as self.bar:
            return self._epochs()

    def _epochs(self) -> dict[str, Any]:
        last = None
        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            stats = self.train_one_epoch()
            if not math.isfinite(stats["loss"]):
                raise SsrDeployError(f"training diverged in epoch {self.epoch + 1} (loss is not "
                                     "finite); lower --lr, or resume from last.pt")
            self.epoch += 1
            if self.rank == 0:
                result = evaluate(self.net, self.val_set, self.config.size,
                                  device=str(self.device))
                last = {"epoch": self.epoch, **stats, "val_miou": result["miou"],
                        "val_pixel_acc": result["pixel_acc"],
                        "seconds": time.perf_counter() - start}
                improved = result["miou"] > self.best
                self.best = max(self.best, result["miou"])
                self._publish(last, improved)
                self.bar.say(f"epoch {self.epoch}/{self.config.epochs}: loss "
                             f"{stats['loss']:.4f}, val mIoU {100 * result['miou']:.2f}"
                             f"{' (best)' if improved else ''}, {last['seconds']:.0f}s")
            if self.world > 1:
                dist.barrier()
        return last or {}

    def _publish(self, row: dict[str, Any], improved: bool) -> None:
        """last.pt (+ best.pt), log.jsonl, curves.png and config.json of this epoch, all or
        none (a resumed run's changed settings land with its first new epoch)."""
        write = checkpoint_writer(
            self.net, self.genotype, epoch=self.epoch, best_miou=self.best,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), class_weights=self.weights.cpu(),
            rng=torch.get_rng_state(), config=jsonable(asdict(self.config)),
            **self.checkpoint_extra())
        rows, text = epoch_log(self.out / "log.jsonl", row)
        fig = curves_figure(rows)
        files = {self.out / "last.pt": write, **({self.out / "best.pt": write} if improved else {}),
                 self.out / "log.jsonl": lambda tmp: tmp.write_text(text),
                 self.out / "config.json": lambda tmp: tmp.write_text(self.settings()),
                 self.out / "curves.png": figure_writer(fig)}
        publish_files(files, fig)

    def loss(self, images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
             ) -> torch.Tensor:
        """The class-weighted cross-entropy against the labels (the authors')."""
        return F.cross_entropy(logits, labels, self.weights, ignore_index=255)

    def checkpoint_extra(self) -> dict[str, Any]:
        """What the checkpoints hold besides the run's state (a QAT run: its weights as the
        plain network names them, and its ranges)."""
        return self.extra

    def load_net_state(self, state: dict[str, Any], path: str | Path) -> None:
        load_weights(self.net, state["state_dict"], str(path))

    def resume(self, path: str | Path) -> None:
        """Continue from a ``last.pt``: same weights, optimiser, schedule, RNG, best score."""
        state = read_weights_for(self.genotype, path, self.device)
        if "optimizer" not in state:
            raise SsrDeployError(f"{path} has no optimiser state: resume from a last.pt "
                                 "written by `ssr-deploy train`")
        self.load_net_state(state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        # the learning rate of the epoch to come, from this run's schedule (the optimiser's
        # saved rate is the last epoch's: 0 for a finished run being extended)
        self.scheduler.base_lrs = [self.config.lr] * len(self.optimizer.param_groups)
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["initial_lr"], group["lr"] = self.config.lr, self.config.lr * factor
            group["weight_decay"] = self.config.weight_decay
        self.weights = state["class_weights"].to(self.device)
        torch.set_rng_state(state["rng"])
        self.epoch = check_counter(state["epoch"], "epoch", MAX_EPOCHS, "the run's state")
        self.best = state["best_miou"]


def curves_figure(rows: list[dict[str, Any]]):
    """Train loss and val mIoU per epoch, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    a.plot(epochs, [r["loss"] for r in rows], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="loss")
    b.plot(epochs, [100 * r["val_miou"] for r in rows], marker="o", color="C1")
    b.set(xlabel="epoch", ylabel="val mIoU (%)", title="mIoU")
    best = max(rows, key=lambda r: r["val_miou"])
    b.axhline(100 * best["val_miou"], color="gray", linestyle=":")
    fig.tight_layout()
    return fig


class QatTrainer(Trainer):
    """Quantization-aware fine-tuning of a trained network (``train --qat``): ModelOpt's
    int8 fake quantization calibrated on the first training batches, then the run as any
    other (validated through the fake quantization), distilling from the network it starts
    from: the loss is the KL divergence of the quantized network's class distribution from
    the fp32 network's, pixel by pixel, so it learns to give the fp32 network's labels in
    int8 rather than to become another network. Checkpoints load as plain networks and
    carry the learned ranges (``train/qat.py``)."""

    def __init__(self, net: SSRNet, train_set, val_set, out: str | Path, config: TrainConfig
                 ) -> None:
        import copy

        from ssr_deploy.train import qat

        qat.import_modelopt()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("--qat runs in one process; start it without torchrun")
        if not config.init_from:
            raise UsageError("--qat fine-tunes a trained network: give --init-from CKPT")
        self.teacher = copy.deepcopy(net).eval().requires_grad_(False)
        super().__init__(net, train_set, val_set, out, config)
        self.teacher.to(self.device)
        loader = DataLoader(self.train_data, config.batch, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(config.seed),
                            num_workers=0)
        batches = (images.to(self.device) for _, (images, _) in
                   zip(range(qat.CALIBRATION_BATCHES), loader, strict=False))
        self.net = self.model = qat.quantize_for_training(self.net, batches)
        self.source = qat.qat_source(config.init_from)

    def loss(self, images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
             ) -> torch.Tensor:
        """KL(fp32 network || quantized network) per pixel, averaged."""
        with torch.no_grad():
            target = F.log_softmax(self.teacher(images).float(), dim=1)
        return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="none",
                        log_target=True).sum(1).mean()

    def checkpoint_extra(self) -> dict[str, Any]:
        from ssr_deploy.train import qat

        return {**self.extra, "state_dict": qat.plain_state(self.net),
                "qat": qat.qat_record(self.net, self.source, self.epoch)}

    def load_net_state(self, state: dict[str, Any], path: str | Path) -> None:
        """A QAT last.pt: the plain weights, then its ranges into the quantizers."""
        from ssr_deploy.train import qat

        record = qat.check_record(state.get("qat"), str(path))
        missing, unexpected = self.net.load_state_dict(state["state_dict"], strict=False)
        if unexpected or any("_quantizer." not in k for k in missing):
            load_weights(self.net, state["state_dict"], str(path))  # names what differs
        modules = dict(self.net.named_modules())
        for name, amax in record["input_amax"].items():
            modules[name].input_quantizer.amax = torch.tensor(amax, device=self.device)
