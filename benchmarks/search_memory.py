"""What a search costs in memory and on disk: the peak resident memory of ``ssr-deploy
search`` (the new-user case: 40 synthetic images at 128x256), the size of search.pt and how
many times it was written.

    python benchmarks/search_memory.py [--epochs 3] [--out benchmarks/results/search_memory.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssr_deploy.io import atomic_write_text  # noqa: E402


def search(out: Path, epochs: int, save_every: str | None) -> dict:
    """One search in a child process; its peak RSS (VmHWM, read while it runs)."""
    command = [sys.executable, "-m", "ssr_deploy", "search", "--data", "synthetic:40",
               "--size", "128x256", "--epochs", str(epochs), "--batch", "4", "--out",
               str(out), "--quiet", *(["--save-every", save_every] if save_every else [])]
    start = time.perf_counter()
    # watch search.pt's writes: each is a rename onto it (a new inode)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    inodes, sizes, peak_kb = set(), [], 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
        except (FileNotFoundError, IndexError, ProcessLookupError):
            pass
        try:
            stat = (out / "search.pt").stat()
            if stat.st_ino not in inodes:
                inodes.add(stat.st_ino)
                sizes.append(stat.st_size)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"search failed ({proc.returncode}): {' '.join(command)}")
    epoch_rows = (out / "search_log.jsonl").read_text().splitlines()
    return {"command": " ".join(command[1:]), "seconds": round(time.perf_counter() - start, 1),
            "epochs": len(epoch_rows),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "search_pt_mb_first": round(sizes[0] / 2**20, 1) if sizes else None,
            "search_pt_mb_last": round((out / "search.pt").stat().st_size / 2**20, 1),
            "search_pt_writes_seen": len(sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "search_memory.json"))
    args = parser.parse_args()
    import platform

    doc = {"benchmark": "search_memory", "cpu": platform.processor() or platform.machine(),
           "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        # every epoch written (as before --save-every), then the default
        for name, every in (("every_epoch", "0"), ("default", None)):
            doc["runs"][name] = search(Path(tmp) / name, args.epochs, every)
            print(name, doc["runs"][name], flush=True)
    atomic_write_text(Path(args.out), json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
