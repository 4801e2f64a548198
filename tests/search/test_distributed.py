"""The search on many processes (torchrun): two CPU processes on gloo run one search. Every
step the ranks hold the same architecture, masks and multiplier (exactly: the search
checks it, and stops a rank that disagrees); against one process with the same global
batch and seed the mathematics is the same (BatchNorm over the job's batch, the job's
dropout draws, the global CE), so the architecture weights agree to float rounding, which
Adam's first steps can turn into differences of up to 2 x lr on gradients that are rounding
noise themselves; the genotype is equal (here, and in the authors' recipe generally; see
README for where settling on a near-tie can break it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from ssr_deploy import Genotype, SsrDeployError
from ssr_deploy.data import open_dataset
from ssr_deploy.data.augmented import AugmentedDataset
from ssr_deploy.search.searcher import SearchConfig, Searcher
from ssr_deploy.space import SearchSpace, StageSpace

SMALL = SearchSpace(stem_channels=8, stages=(StageSpace(4, 24, 2, 0.0),
                                             StageSpace(8, 40, 3, 0.0)),
                    width_step=4, width_choices=4)
SIZE = (64, 128)


def _config(**kw) -> SearchConfig:
    return SearchConfig(**{"size": SIZE, "epochs": 3, "batch": 4, "arch_lr": 0.3,
                           "shrink_every": 2, "seed": 0, "target_ratio": 0.8,
                           "cost_constraint": "off", **kw})


def _searcher(out, **kw) -> Searcher:
    """In float64: float32 rounding (PyTorch's CPU BatchNorm backward is off by up to 6x on
    a channel whose terms cancel; measured against float64) is what Adam's sign-like first
    steps would turn into full steps, and what one process gets wrong is not the question."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    s = Searcher(SMALL, open_dataset("synthetic:16", "train", SIZE), out, _config(**kw))
    s.class_weights = s.class_weights.double()
    s.net.double()  # its float32 buffers (the width masks) too
    s.data.__class__ = _Float64Images
    return s


class _Float64Images(AugmentedDataset):
    def __getitem__(self, i: int):
        image, label = super().__getitem__(i)
        return image.double(), label


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args, world: int = 2) -> None:
    """``fn(rank, *args)`` in ``world`` processes joined as torchrun would join them."""
    mp.spawn(_as_rank, args=(world, _port(), fn, args), nprocs=world)


def _as_rank(rank, world, port, fn, args) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        fn(rank, *args)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _traced(searcher: Searcher) -> list:
    """The architecture weights and masks after every step."""
    trace, step = [], searcher.arch_step

    def arch_step(x, y):
        out = step(x, y)
        n = searcher.net
        trace.append([t.detach().clone() for t in (*n.arch_parameters(), n.op_valid,
                                                   n.mid_valid, n.out_valid)])
        return out

    searcher.arch_step = arch_step
    return trace


def _search_and_trace(rank, out, stop_after=None, resume=False, **kw) -> None:
    s = _searcher(out, **kw)
    if resume:
        s.resume()
    trace = _traced(s)
    s.run(stop_after)
    torch.save({"trace": trace, "state": s.net.state_dict(), "comm": s.comm_bytes},
               f"{out}/rank{rank}.pt")


@pytest.fixture
def float64():
    yield
    torch.set_default_dtype(torch.float32)


def test_two_processes_run_one_search_as_one_process_does(tmp_path, float64):
    one = _searcher(tmp_path / "one")
    trace = _traced(one)
    one.run()
    _spawn(_search_and_trace, str(tmp_path / "two"))
    r0, r1 = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    assert len(r0["trace"]) == len(trace) > 0
    for a, b in zip(r0["trace"], r1["trace"], strict=True):  # every step, bit for bit
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    for x, y in zip(r0["state"].values(), r1["state"].values(), strict=True):
        assert torch.equal(x, y)
    for a, b in zip(trace, r0["trace"], strict=True):  # against one process
        for x, y in zip(a[:3], b[:3], strict=True):
            assert (x - y).abs().max() < 1e-9
    assert Genotype.load(tmp_path / "one" / "genotype.json").hash == \
        Genotype.load(tmp_path / "two" / "genotype.json").hash
    rows = [json.loads(r) for r in (tmp_path / "two" / "search_log.jsonl").read_text()
            .splitlines()]
    assert rows[-1]["processes"] == 2 and rows[-1]["allreduce_bytes_per_step"] > 0
    assert not list((tmp_path / "two").glob("rank1*.json"))  # rank 0 alone writes


def _disagreeing(rank, out, errors) -> None:
    s = _searcher(out, epochs=1)
    if rank == 1:  # as a rank on other data or another state would
        with torch.no_grad():
            s.net.op_alpha[0, 0] += 1
    try:
        s.run()
    except SsrDeployError as e:
        (errors / f"rank{rank}.txt").write_text(str(e))


def test_a_rank_that_disagrees_stops_every_rank_in_one_line(tmp_path, float64):
    errors = tmp_path / "errors"
    errors.mkdir()
    _spawn(_disagreeing, str(tmp_path / "run"), errors)
    lines = [(errors / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert lines[0] == lines[1] and "\n" not in lines[0]
    assert "disagree on the architecture after step 1" in lines[0]
    assert "rank 0:" in lines[0] and "rank 1:" in lines[0]
    assert not (tmp_path / "run" / "search.pt").exists()  # stopped before an epoch ended


def _stopped_after_one(rank, out) -> None:  # as if interrupted after epoch 1 of 2
    _search_and_trace(rank, out, 1, epochs=2)


def _resumed(rank, out) -> None:
    s = _searcher(out, epochs=2)
    s.resume()
    s.run()
    torch.save({"state": s.net.state_dict(), "notes": s.notes}, f"{out}/rank{rank}.pt")


def test_resume_under_torchrun_and_with_another_number_of_processes(tmp_path, float64):
    straight = _searcher(tmp_path / "one", epochs=2)
    straight.run()
    _spawn(_stopped_after_one, str(tmp_path / "two"))
    shutil.copytree(tmp_path / "two", tmp_path / "two-on-one")
    _spawn(_resumed, str(tmp_path / "two"))  # on two processes again
    on_one = _searcher(tmp_path / "two-on-one", epochs=2)  # and on one
    on_one.resume()
    assert "saved by 2 processes; it goes on with 1: the same search" in on_one.notes[0]
    on_one.run()
    resumed = torch.load(tmp_path / "two" / "rank0.pt")["state"]
    for name, x in straight.net.state_dict().items():
        for other in (resumed[name], on_one.net.state_dict()[name]):
            if x.is_floating_point():
                assert (x - other).abs().max() < 1e-9, name
            else:
                assert torch.equal(x, other), name
    hashes = {Genotype.load(tmp_path / d / "genotype.json").hash
              for d in ("one", "two", "two-on-one")}
    assert len(hashes) == 1


def _torchrun(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           "2", "-m", "ssr_deploy", "search", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_torchrun_runs_the_latency_constrained_search_and_refuses_what_does_not_split(
        tmp_path):
    from ssr_deploy.latency.table import FORMAT, KIND
    from ssr_deploy.search.supernet import SuperNet
    from tests.latency.test_latency import multilinear, synthetic_table
    from tests.nets import smallest_ms

    table = synthetic_table(SMALL, multilinear)
    lut = tmp_path / "lut.json"
    lut.write_text(json.dumps({**table.meta, "kind": KIND, "format": FORMAT, "complete": True,
                               "fingerprint": {}, "entries": table.entries}))
    net = SuperNet(SMALL, 19)
    low, high = smallest_ms(table, net), float(table.expected_ms(net, full=True))
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SMALL.to_dict()))
    common = ["--data", "synthetic:16", "--size", "64x128", "--space", str(space),
              "--epochs", "2", "--arch-lr", "0.3", "--shrink-every", "2"]
    done = _torchrun(*common, "--batch", "4", "--lut", str(lut), "--target-ms",
                     f"{(low + high) / 2:.3f}", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 speaks for the job
    assert "ms" in done.stdout and "depth" in done.stdout
    rows = [json.loads(r) for r in (tmp_path / "run" / "search_log.jsonl").read_text()
            .splitlines()]
    assert [r["processes"] for r in rows] == [2, 2]
    assert Genotype.load(tmp_path / "run" / "genotype.json")
    refused = _torchrun(*common, "--batch", "5", "--out", str(tmp_path / "odd"), timeout=120)
    assert refused.returncode != 0
    assert "error: --batch 5 is the global batch and does not split over 2 processes; use " \
           "--batch 4 or 6" in refused.stderr
    assert not (tmp_path / "odd").exists()


def test_a_batch_that_does_not_split_names_the_nearest_that_do():
    from ssr_deploy.distributed import split_batch

    assert split_batch(8, 4) == 2 and split_batch(6, 1) == 6
    with pytest.raises(SsrDeployError, match=r"--batch 6 .* over 4 processes; use --batch 4 or 8"):
        split_batch(6, 4)
    with pytest.raises(SsrDeployError, match=r"use --batch 3$"):
        split_batch(2, 3)


def test_more_processes_than_cores_on_the_cpu_is_warned_about(monkeypatch):
    from ssr_deploy.distributed import warn_if_oversubscribed

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4096")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.warns(UserWarning, match=r"4096 processes on \d+ CPU cores.*--nproc_per_node"):
        warn_if_oversubscribed("cpu")
    warn_if_oversubscribed("cuda")  # GPUs: a process per GPU, nothing to say
