"""benchmarks/gpu_perf.py's dry run: every code path of the device run that needs no CUDA
(the profile, each variant's build, the end-to-end loop, the label comparison, the JSON),
at 64x128 on the CPU, so the one prepared GPU run cannot fail on a typo."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_perf_script_dry_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_perf.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_perf.py"),
                           "--dry-run", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["size"] == [64, 128]
    profile = result["profile"]["batch1"]
    assert profile["top_ops"] and "stages.1.layers.4" in profile["device_ms"]
    variants = result["variants"]
    ran = {k for k, v in variants.items() if "fps" in v}
    assert {"eager-nchw/batch1", "eager-channels-last/batch1", "compile-default/batch1",
            "bn-folded-cuda-graphs/batch1", "reduced-argmax-cuda-graphs/batch1",
            "psp-cached-matrices-cuda-graphs/batch1", "psp-native-pool-cuda-graphs/batch1"} <= ran
    assert all(v.get("skipped") == "needs CUDA" for k, v in variants.items() if k not in ran)
    assert not any("failed" in v for v in variants.values()), variants
    folded = variants["bn-folded-cuda-graphs/batch1"]["label_agreement_vs_fp32"]
    assert folded >= 0.999  # folding BN is exact up to rounding
    for pool in ("cached-matrices", "native-pool"):  # the same pooling, computed otherwise
        assert variants[f"psp-{pool}-cuda-graphs/batch1"]["label_agreement_vs_fp32"] >= 0.999
