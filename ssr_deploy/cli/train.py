"""`ssr-deploy train | eval`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import ModelSize, model_size, quiet_option
from ssr_deploy.cli.resume import check_run_folder, describe_settings, resume_settings
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.settings import DATA_HELP, config_from, given, options, parameters
from ssr_deploy.train.config import TrainConfig

RESUMED = ("data", "size", "epochs", "batch", "lr", "preset", "class_weights", "seed")


@main.command()
@click.option("--genotype", help="Zoo name or genotype JSON (or take --init-from-search's).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, best.pt, log.jsonl, curves.png.")
@options(TrainConfig)
@click.option("--weights", help="Start from this checkpoint's weights (same genotype). "
              "[default: from scratch, as the authors]")
@click.option("--init-from", "init_from", type=click.Path(dir_okay=False),
              help="Start from this checkpoint: its genotype, classes and weights.")
@click.option("--qat", is_flag=True, help="Quantization-aware fine-tuning of --init-from's "
              "network for int8 (TensorRT form, NVIDIA ModelOpt): `export onnx --precision "
              "int8` of its best.pt then uses the learned ranges. Fine-tune at the size you "
              "export. [default then: --epochs 2, --lr 1e-5]")
@click.option("--init-from-search", "search_dir", type=click.Path(file_okay=False),
              help="Start from a search's genotype.json and its surviving weights (the "
              "authors retrain from scratch: --genotype DIR/genotype.json).")
@click.option("--resume", is_flag=True, help="Continue OUT/last.pt exactly, with its settings.")
@click.option("--override", is_flag=True, help="With --resume: use the settings given here "
              "where they differ from the run's (a longer --epochs re-spreads the schedule).")
@click.pass_context
@quiet_option
def train(ctx, genotype, out, weights, init_from, qat, search_dir, resume, override,
          **settings) -> None:
    """Retrain a genotype, the paper's recipe by default.

    Multi-GPU: torchrun --nproc_per_node 8 -m ssr_deploy train ... (DDP).

    \b
    Examples:
      ssr-deploy train --genotype ssr-cityscapes --data cityscapes:/data/cityscapes \\
          --out runs/ssr --device cuda
      ssr-deploy train --genotype ssr-cityscapes --data synthetic:200 --out runs/synth \\
          --size 128x256 --epochs 5 --batch 4
      ssr-deploy train --qat --init-from runs/ssr/best.pt --data cityscapes:/data/cityscapes \\
          --out runs/qat          # then: export onnx runs/qat/best.pt --precision int8
    """
    from ssr_deploy.data import open_dataset
    from ssr_deploy.train.trainer import (
        QatTrainer,
        Trainer,
        check_training_memory,
        model_for_training,
    )

    if qat and not init_from and not resume:
        raise click.UsageError("--qat fine-tunes a trained network: give --init-from CKPT "
                               "(e.g. runs/train/best.pt)")
    if init_from and (genotype or weights or search_dir):
        raise click.UsageError("--init-from takes the genotype and weights from its "
                               "checkpoint: drop --genotype, --weights and --init-from-search")
    fine_tune = {name: value for name, value in (("epochs", 2), ("lr", 1e-5))
                 if qat and not given(ctx, name)}  # a few epochs at a small rate
    if settings["device"].startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SsrDeployError("--device cuda: no CUDA GPU is visible here; use --device cpu")
    last = Path(out) / "last.pt"
    check_run_folder(out, resume, "last.pt")
    config = config_from(TrainConfig, ctx, **fine_tune,
                         init_from=init_from or weights or search_dir or "")
    changes = []
    if resume:
        from ssr_deploy.model.checkpoint import read_checkpoint

        raw = read_checkpoint(last)
        saved, qat = raw.get("config", {}), qat or "qat" in raw  # a QAT run goes on as one
        config, changes = resume_settings(ctx, config, saved, parameters(TrainConfig),
                                          override)
        config = dataclasses.replace(config, init_from=saved.get("init_from", ""))
    train_set = open_dataset(config.data, "train", config.size)
    val_set = open_dataset(config.data, "val", config.size)
    if init_from or (resume and qat):
        net = checkpoint_for_training(config.init_from, train_set)
    else:
        net = model_for_training(genotype, weights, search_dir, train_set)
    net.genotype.check_input_size(*config.size)
    check_training_memory(net.genotype.stem_channels, net, config.batch, config.size,
                          config.device)
    trainer = (QatTrainer if qat else Trainer)(net, train_set, val_set, out, config)
    if resume:
        trainer.resume(last)
        click.echo(f"resuming {out} after epoch {trainer.epoch}/{config.epochs}: "
                   + describe_settings(config, RESUMED) + (
                       f"; changed: {'; '.join(changes)}" if changes else ""), err=True)
    final = trainer.fit()
    if final:
        click.echo(f"epoch {final['epoch']}: loss {final['loss']:.4f}, val mIoU "
                   f"{100 * final['val_miou']:.2f}%, best {100 * trainer.best:.2f}%; wrote "
                   f"{out}/last.pt, best.pt, log.jsonl, curves.png")
    else:
        click.echo(f"{out} had already finished its {config.epochs} epochs; nothing to do "
                   "(add --epochs N --override to train on)")


def checkpoint_for_training(path: str, dataset):
    """--init-from: the checkpoint's network, which must predict the data's classes."""
    from ssr_deploy.model.checkpoint import load_model

    net = load_model(path)
    if tuple(dataset.classes) != tuple(net.genotype.classes):
        raise SsrDeployError(f"{path} predicts {net.num_classes} classes "
                             f"({', '.join(net.genotype.classes[:3])}, ...), the data has "
                             f"{len(dataset.classes)} ({', '.join(dataset.classes[:3])}, ...); "
                             "fine-tune on data of its classes")
    return net.train()


@main.command("eval")
@click.option("--weights", required=True, help="A checkpoint (.pt).")
@click.option("--data", "source", required=True, help=DATA_HELP)
@click.option("--split", default="val", show_default=True)
@options(ModelSize)
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--save-preds", type=click.Path(file_okay=False),
              help="Write labelId PNGs for the official Cityscapes evaluation.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --save-preds folder "
              "(once the new predictions are complete).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@quiet_option
def eval_cmd(weights, source, split, size, flip, save_preds, overwrite, device,
             as_json) -> None:
    """Per-class IoU, mIoU and pixel accuracy of a checkpoint on a dataset.

    \b
    Example:
      ssr-deploy eval --weights runs/train/best.pt --data cityscapes:/data/cityscapes --flip
    """
    from ssr_deploy.data import open_dataset
    from ssr_deploy.io import check_outputs_spare_inputs
    from ssr_deploy.model.checkpoint import load_model
    from ssr_deploy.train.evaluate import evaluate, format_result

    scheme, _, data_dir = source.partition(":")
    check_outputs_spare_inputs([("--save-preds", save_preds)],
                               [weights, data_dir if scheme in ("cityscapes", "folder") else None])
    net = load_model(weights)
    size = model_size(weights, size)
    net.genotype.check_input_size(*size)
    dataset = open_dataset(source, split, size)
    if len(dataset.classes) != net.num_classes:
        raise SsrDeployError(f"{weights} predicts {net.num_classes} classes, the data has "
                             f"{len(dataset.classes)}")
    result = evaluate(net, dataset, size, flip, save_preds, device, progress=not as_json,
                      overwrite=overwrite)
    click.echo(json.dumps(result, indent=2) if as_json else format_result(result))
