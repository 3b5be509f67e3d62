"""Scale-out measurements for docs/scale-out.md: local vs Ray with N CPUs.

    python -m benchmarks.ray_scaling CHIP.bin N      # N = 0: local (no Ray); N >= 1: --ray with N CPUs

Prints one JSON line: seconds for a 2-level x 20-instance mismatch sweep and a PGD-5 attack
(chunks of 60 samples) on the digits test set at T=8, and the results (identical for every N).
"""
import json
import sys
import time

import runtime
from compiler.encoding import encode
from frontends.datasets import load_dataset
from runtime.lab.attacks import SweepConfig, attack_sweep
from runtime.lab.cluster import Cluster
from runtime.lab.sweep import sweep

img = runtime.load(sys.argv[1]); ncpu = int(sys.argv[2])
ds = load_dataset("digits", "test")
p = encode("direct", ds.x.reshape(len(ds.x), -1), 8)
cfg = SweepConfig("pgd", (8/255,), "direct", 8, steps=5, seed=0, batch=60)
out = {}
if ncpu == 0:
    t = time.perf_counter(); a = sweep(img, p, ds.y, "mismatch", [0.3, 0.5], 20, 0); out["sweep_s"] = time.perf_counter() - t
    t = time.perf_counter(); b = attack_sweep(img, ds.x, ds.y, cfg); out["pgd_s"] = time.perf_counter() - t
else:
    t = time.perf_counter(); c = Cluster("local", num_cpus=ncpu); out["init_s"] = time.perf_counter() - t
    sweep(img, p[:, :8], ds.y[:8], "mismatch", [0.3], ncpu * 2, 0, cluster=c)  # warm the workers (imports, Numba cache)
    t = time.perf_counter(); a = sweep(img, p, ds.y, "mismatch", [0.3, 0.5], 20, 0, cluster=c); out["sweep_s"] = time.perf_counter() - t
    t = time.perf_counter(); b = attack_sweep(img, ds.x, ds.y, cfg, cluster=c); out["pgd_s"] = time.perf_counter() - t
out["sweep_means"] = [r["mean"] for r in a]; out["pgd_adv"] = b["results"][0]["adv_accuracy"]
print(json.dumps(out))
