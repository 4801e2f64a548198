"""What a runtime-only install costs: a wheel built from this clone, installed with ``[cpu]``
(or ``--extras``) into a fresh virtual environment; its site-packages size, its package
count and the time of ``from ssr_deploy import Segmenter`` (the median of 5 cold processes).

    python benchmarks/install_size.py [--extras cpu] [--out benchmarks/results/install_size.json]
    python benchmarks/install_size.py --ref 1191cc4   # the same for an older commit, beside

Goals (issue 44): under 200 MB and 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssr_deploy.io import atomic_write_text  # noqa: E402

GOALS = {"site_packages_mb": 200, "import_s": 0.5}


def measure(source: Path, extras: str, tmp: Path) -> dict:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(tmp / "dist"), str(source)], check=True)
    wheel = next((tmp / "dist").glob("ssr_deploy-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", f"{wheel}[{extras}]"],
                   check=True)
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    listed = json.loads(subprocess.run([python, "-m", "pip", "list", "--format", "json"],
                                       capture_output=True, text=True, check=True).stdout)
    packages = sorted(p["name"] for p in listed if p["name"].lower() not in ("pip",
                                                                               "setuptools"))
    times = []
    for _ in range(5):
        run = subprocess.run([python, "-X", "importtime", "-c",
                              "from ssr_deploy import Segmenter"], capture_output=True,
                             text=True, check=True)
        # the cumulative microseconds of the top-level import, as Python itself counts them
        times.append(max(int(line.split("|")[1]) for line in run.stderr.splitlines()
                         if line.startswith("import time:") and "cumulative" not in line
                         ) / 1e6)
    return {"extras": extras, "site_packages_mb": round(size / 2**20, 1),
            "packages": len(packages), "package_names": packages,
            "import_s": round(statistics.median(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="cpu")
    parser.add_argument("--ref", help="also measure this older commit (git worktree)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "install_size.json"))
    args = parser.parse_args()
    doc = {"benchmark": "install_size", "goals": GOALS,
           "command": "python benchmarks/install_size.py" + (f" --ref {args.ref}"
                                                            if args.ref else "")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.ref:
            old = tmp / "ref"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                            str(old), args.ref], check=True)
            try:
                (tmp / "a").mkdir()
                doc["before"] = {"commit": args.ref, **measure(old, args.extras, tmp / "a")}
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(old)], check=True)
        (tmp / "b").mkdir()
        doc["now"] = measure(ROOT, args.extras, tmp / "b")
    doc["met"] = (doc["now"]["site_packages_mb"] < GOALS["site_packages_mb"]
                  and doc["now"]["import_s"] < GOALS["import_s"])
    for key in ("before", "now"):
        if key in doc:
            d = doc[key]
            print(f"{key}: {d['site_packages_mb']} MB, {d['packages']} packages, import "
                  f"{d['import_s']} s")
    atomic_write_text(Path(args.out), json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
