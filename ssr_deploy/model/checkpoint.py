"""Checkpoints that carry their architecture: weights + genotype JSON + its hash.

Loaded with ``torch.load(weights_only=True)``: a checkpoint from the internet cannot run code.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ssr_deploy
from ssr_deploy.errors import GenotypeError, SsrDeployError
from ssr_deploy.genotype import Genotype
from ssr_deploy.io import atomic_write, check_input_file
from ssr_deploy.model.net import SSRNet, build_model

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, model: nn.Module, genotype: Genotype, **extra: Any) -> Path:
    """Write ``model``'s weights with ``genotype`` atomically; ``extra`` (epoch, optimizer
    state, metrics...) must be tensors, numbers, strings or containers of them."""
    return atomic_write(path, checkpoint_writer(model, genotype, **extra))


def checkpoint_writer(model: nn.Module, genotype: Genotype, **extra: Any
                      ) -> Callable[[Path], None]:
    """``write(path)`` saving the checkpoint as it is now (for io.atomic_write_many)."""
    model = getattr(model, "module", model)  # unwrap DDP / DataParallel
    state = {
        "format": CHECKPOINT_FORMAT,
        "ssr_deploy_version": ssr_deploy.__version__,
        "genotype": genotype.to_dict(),
        "genotype_hash": genotype.hash,
        "num_classes": getattr(model, "num_classes", genotype.num_classes),
        "state_dict": model.state_dict(),
        **extra,
    }
    return lambda tmp: torch.save(state, tmp)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict, loaded safely; clear errors for missing or foreign files."""
    path = check_input_file(path, "checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip, or a legacy pickle
        raise SsrDeployError(f"{path} is not a PyTorch checkpoint ({_looks_like(path, head)}); "
                             "give a .pt written by `ssr-deploy train` or `search`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():  # torch's advice to drop the guard is not ours
            raise SsrDeployError(f"refused checkpoint {path}: it holds Python objects beyond "
                                 "tensors and plain data, which could run code when loaded; "
                                 "ssr-deploy loads weights only: use a checkpoint written by "
                                 "`ssr-deploy train` or `search`") from None
        raise _unreadable(path, e) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise _unreadable(path, e) from None
    if not isinstance(state, dict) or "genotype" not in state or "state_dict" not in state:
        raise SsrDeployError(f"{path} is not an ssr-deploy checkpoint: it has no genotype and "
                             "state_dict (train with `ssr-deploy train` or use save_checkpoint)")
    return state


def _unreadable(path: Path, e: BaseException) -> SsrDeployError:
    """A checkpoint torch cannot read: most often one cut short (a copy or a write that did
    not finish)."""
    first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
    return SsrDeployError(f"cannot read checkpoint {path}: it is truncated or damaged "
                          f"({first}); use a complete copy, or last.pt/best.pt of the run")


def _looks_like(path: Path, head: bytes) -> str:
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":
        return "it looks like an ONNX model: run it with bench/video/profile, or export from "\
               "its checkpoint"
    if head[:1] in (b"{", b"["):
        return "it is JSON: a genotype goes to --genotype, a sidecar stays beside its model"
    if not head:
        return "it is empty"
    return "it is not the zip archive torch.save writes"


def check_finite(state_dict: dict, source: str) -> None:
    """Refuse weights holding NaN or inf: a diverged run would otherwise evaluate and export
    as if it were a network."""
    bad = [k for k, v in state_dict.items()
           if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise SsrDeployError(f"{source} holds NaN or inf in {len(bad)} weight tensors (e.g. "
                             f"{bad[0]}): the run that wrote it diverged; use an earlier "
                             "checkpoint or retrain with a lower --lr")


def read_weights_for(genotype: Genotype, path: str | Path,
                     map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, refused unless it holds weights of ``genotype`` (by the
    architecture's hash: a name can be reused, a hash cannot). The one place this is
    decided, for export, train --weights / --init-from-search and --resume."""
    state = read_checkpoint(path, map_location)
    recorded = state.get("genotype_hash") or Genotype.from_dict(
        state["genotype"], source=f"{path} (genotype)").hash
    if recorded != genotype.hash:
        name = state["genotype"].get("name") if isinstance(state["genotype"], dict) else "?"
        raise SsrDeployError(f"{path} holds weights of genotype {name} ({recorded[:12]}), not "
                             f"{genotype.name} ({genotype.hash[:12]}); pass the matching "
                             "genotype, or the checkpoint alone")
    return state


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> SSRNet:
    """Rebuild the network a checkpoint holds, load its weights, and return it in eval mode."""
    state = read_checkpoint(path, map_location)
    genotype = Genotype.from_dict(state["genotype"], source=f"{path} (genotype)")
    recorded = state.get("genotype_hash")
    if recorded is not None and recorded != genotype.hash:
        raise GenotypeError(f"{path}: the genotype inside does not match its recorded hash "
                            f"({recorded[:12]} vs {genotype.hash[:12]}); the file was edited or "
                            "is corrupt")
    model = build_model(genotype, state.get("num_classes"))
    load_weights(model, state["state_dict"], str(path))
    return model.eval()


def load_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """``load_state_dict`` with an error that lists the keys and shapes that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state_dict and state_dict[k].shape != v.shape]
    problems = [(f"missing {', '.join(missing[:4])}", missing),
                (f"unexpected {', '.join(unexpected[:4])}", unexpected),
                (f"wrong shape {', '.join(wrong[:4])}", wrong)]
    found = [f"{text}{' ...' if len(keys) > 4 else ''}" for text, keys in problems if keys]
    if found:
        raise SsrDeployError(f"weights in {source} do not fit the genotype: {'; '.join(found)} "
                             "(the weights were trained for another architecture)")
    check_finite(state_dict, source)
    model.load_state_dict(state_dict)
