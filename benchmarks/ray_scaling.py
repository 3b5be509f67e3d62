"""Scale-out measurements for docs/scale-out.md: the local run vs Ray with N CPUs.

    python -m benchmarks.ray_scaling CHIP.bin N     # N = 0: local (no Ray); N >= 1: Ray, N CPUs

Prints one JSON line: seconds for a 2-level x 20-instance mismatch sweep and a PGD-5 attack
(chunks of 60 samples) on the digits test set at T=8, and their results (identical for every N).
"""

from __future__ import annotations

import json
import sys
import time

from compiler.encoding import encode
from frontends.datasets import load_dataset
from runtime.image import load
from runtime.lab.attacks import SweepConfig, attack_sweep
from runtime.lab.sweep import sweep

LEVELS = (0.3, 0.5)
INSTANCES = 20


def main(path: str, ncpu: int) -> dict:
    img = load(path)
    ds = load_dataset("digits", "test")
    p = encode("direct", ds.x.reshape(len(ds.x), -1), 8)
    cfg = SweepConfig("pgd", (8 / 255,), "direct", 8, steps=5, seed=0, batch=60)
    out: dict = {"cpus": ncpu}
    cluster = None
    if ncpu:
        from runtime.lab.cluster import Cluster
        t = time.perf_counter()
        cluster = Cluster("local", num_cpus=ncpu)
        out["init_s"] = time.perf_counter() - t
        # warm the workers (imports, Numba cache) before timing
        sweep(img, p[:, :8], ds.y[:8], "mismatch", [0.3], 2 * ncpu, 0, cluster=cluster)
    t = time.perf_counter()
    rows = sweep(img, p, ds.y, "mismatch", LEVELS, INSTANCES, 0, cluster=cluster)
    out["sweep_s"] = time.perf_counter() - t
    t = time.perf_counter()
    adv = attack_sweep(img, ds.x, ds.y, cfg, cluster=cluster)
    out["pgd_s"] = time.perf_counter() - t
    out["sweep_means"] = [r["mean"] for r in rows]
    out["pgd_adv_accuracy"] = adv["results"][0]["adv_accuracy"]
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
