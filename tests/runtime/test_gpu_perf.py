"""The GPU check's rehearsal: ``bash benchmarks/gpu_check.sh --dry-run`` runs every step's
code path on this CPU at a tiny size (the cuda tests collected and the stand-in engine
checked, the torch benchmark, gpu_perf.py's profile, each variant's build, the end-to-end
loop, the label comparison), exits 0 and writes the JSON the GPU run writes, step by step;
so the one prepared GPU run cannot fail on a typo."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "OUT": str(out)})
    return done, out


def test_the_gpu_check_dry_runs_every_step_and_records_each(dry_run):
    done, out = dry_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    steps = json.loads((out / "gpu_check_steps.json").read_text())
    assert steps["dry_run"] and steps["ended"]
    assert [(s["name"], s["rc"], s["limit_s"]) for s in steps["steps"]] == [
        ("cuda-tests", 0, 150), ("torch-bench", 0, 120), ("gpu-perf", 0, 180)]
    assert sum(s["limit_s"] for s in steps["steps"]) <= 8 * 60 - 30  # fits the window
    tests = (out / "gpu_check_tests.txt").read_text()
    assert "test_cuda_runner.py" in tests and "1 passed" in tests
    bench = json.loads((out / "gpu_check.json").read_text())
    assert bench["dry_run"] and bench["results"][0]["fps"] > 0


def test_a_step_killed_at_its_limit_is_recorded_as_it_ends(tmp_path):
    """Each step is written when it ends, killed or not: a step past its limit is there with
    its exit status (124) before the next one starts."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert 'record "$name" "$rc"' in script and 'timeout --kill-after=10 "$budget"' in script
    short = tmp_path / "gpu_check.sh"
    short.write_text(script.replace("step cuda-tests 150 cuda_tests",
                                    "step sleeper 1 'sleep 30'").replace(
        "step torch-bench 120 torch_bench\n", "").replace("step gpu-perf 180 gpu_perf\n", "")
        .replace('cd "$(dirname "$0")/.."', f'cd "{ROOT}"'))
    done = subprocess.run(["bash", str(short), "--dry-run"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OUT": str(tmp_path / "out")})
    assert done.returncode == 1
    steps = json.loads((tmp_path / "out" / "gpu_check_steps.json").read_text())["steps"]
    assert steps == [{"name": "sleeper", "rc": 124, "seconds": steps[0]["seconds"],
                      "limit_s": 1, "timed_out": True}]
    assert steps[0]["seconds"] <= 10


def test_gpu_perf_ran_every_variant_it_can_here(dry_run):
    done, out = dry_run
    result = json.loads((out / "gpu_perf.json").read_text())
    assert result["dry_run"] and result["size"] == [64, 128]
    profile = result["profile"]["batch1"]
    assert profile["top_ops"] and "stages.1.layers.4" in profile["device_ms"]
    variants = result["variants"]
    ran = {k for k, v in variants.items() if "fps" in v}
    assert {"eager-nchw/batch1", "eager-channels-last/batch1",
            "bn-folded-cuda-graphs/batch1", "reduced-argmax-cuda-graphs/batch1",
            "psp-cached-matrices-cuda-graphs/batch1", "psp-native-pool-cuda-graphs/batch1"} <= ran
    assert variants["compile-default/batch1"] == {"skipped": "--no-compile"}  # GPU_COMPILE=1
    assert all(v.get("skipped") in ("needs CUDA", "--no-compile")
               for k, v in variants.items() if k not in ran)
    assert not any("failed" in v for v in variants.values()), variants
    folded = variants["bn-folded-cuda-graphs/batch1"]["label_agreement_vs_fp32"]
    assert folded >= 0.999  # folding BN is exact up to rounding
    for pool in ("cached-matrices", "native-pool"):  # the same pooling, computed otherwise
        assert variants[f"psp-{pool}-cuda-graphs/batch1"]["label_agreement_vs_fp32"] >= 0.999
