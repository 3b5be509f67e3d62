"""make bench: snnrun vs a dense PyTorch simulation, snnTorch, spikingjelly and PAIBox, measured
side by side in one process; plus a Monte Carlo mismatch sweep (tick vs layer engine).

    python -m benchmarks [--quick] [--only digits,mlp,vgg9,mc] [--json FILE]

Every baseline runs the same integer network as the chip image and is checked to produce the
same output counts before it is timed. Throughput is samples per second at T=8; 'ratio' is
snnrun / baseline (> 1: snnrun is faster). Dense torch rows time each engine; snnTorch and
spikingjelly rows time snnrun's default engine (``auto``; the column says which one ran).
``--quick`` runs 10 Monte Carlo instances instead of 100 (the table scales to 100).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from compiler.chip import PICORE64
from compiler.cliutil import jsonable, table
from frontends import compile_model
from runtime.engines.tick import run_payloads
from runtime.image import load

T = 8


def _time(fn, min_s=1.0, max_rep=50):
    fn()  # warm-up (JIT, caches)
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        el = time.perf_counter() - t0
        if el >= min_s or reps >= max_rep:
            return el / reps


def _image(prog):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "chip.bin")
    prog.write(path)
    return load(path), path


def peer_nets(unmapped, op_graph=None):
    """[(label, net or None, why)] for snnTorch and spikingjelly on the image's integer network."""
    from benchmarks import peers
    out = []
    for peer, mod in (("snntorch", "snntorch"), ("spikingjelly", "spikingjelly")):
        try:
            from importlib.metadata import version
            __import__(mod)
            label = f"{peer} {version(mod)}"
        except Exception as e:  # noqa: BLE001 - the peers are optional
            out.append((peer, None, f"not installed ({type(e).__name__}: {e})"))
            continue
        try:
            out.append((label, peers.build(peer, unmapped, op_graph), ""))
        except Exception as e:  # noqa: BLE001 - report, do not stop the benchmark
            out.append((label, None, f"cannot build: {type(e).__name__}: {e}"))
    return out


def measure(name, img, payloads, dense, rows, notes, sops_rows, peer_list=()):
    """snnrun vs dense torch (both engines) and vs the snnTorch/spikingjelly peers (snnrun's
    default engine) at batch 1 and 64, after an output-equality check of every baseline."""
    res = run_payloads(img, payloads[:, :64])
    dc, dv = dense.run(payloads[:, :64])
    same = np.array_equal(res.out_counts, dc) and np.array_equal(res.v_out, dv)
    if not same:
        notes.append(f"{name}: dense baseline output differs from snnrun (check the baseline)")
    lay = run_payloads(img, payloads[:, :64], engine="layer", record=True)
    tik = run_payloads(img, payloads[:, :64], engine="tick", record=True)
    if not (np.array_equal(lay.counts_all, tik.counts_all)
            and np.array_equal(lay.v_all, tik.v_all)):
        notes.append(f"{name}: layer engine differs from the tick engine (a bug)")
    checked = []
    for label, net, why in peer_list:
        if net is None:
            rows.append([name, "-", "-", "-", label, why, "-", "-", "-"])
            notes.append(f"{name}: {label} {why}")
            continue
        pc, pv = net.run(payloads[:, :64])
        ok = np.array_equal(pc, res.out_counts)
        okv = np.array_equal(pv, res.v_out)
        if not ok:
            notes.append(f"{name}: {label} output counts differ from snnrun: not timed")
            rows.append([name, "-", "-", "-", label, "-", "-", "-", "counts differ"])
            continue
        checked.append((label, net, True if okv else "counts only (membranes differ)"))
    for b in (1, 64):
        p = payloads[:, :b]
        t_d = _time(lambda p=p: dense.run(p))
        for engine in ("tick", "layer"):
            workers = 1 if (b == 1 and engine == "tick") else None
            t_s = _time(lambda p=p, w=workers, e=engine: run_payloads(img, p, workers=w,
                                                                        engine=e))
            r = run_payloads(img, p, workers=workers, engine=engine)
            gsops = float(r.sops.sum()) / t_s / 1e9
            rows.append([name, engine, b, f"{b / t_s:.1f}", "dense torch", f"{b / t_d:.1f}",
                         f"{t_d / t_s:.2f}x", f"{gsops:.3f}", same])
            sops_rows.append(gsops)
        if checked:
            t_a = _time(lambda p=p: run_payloads(img, p))
            eng = "auto->" + run_payloads(img, p).engine
            for label, net, ok in checked:
                t_p = _time(lambda p=p, net=net: net.run(p))
                rows.append([name, eng, b, f"{b / t_a:.1f}", label, f"{b / t_p:.1f}",
                             f"{t_p / t_a:.2f}x", "-", ok])
    return res


def ceiling(workers=None) -> float:
    """Measured event-driven accumulate ceiling (GSOP/s): the runtime's inner loop alone (dense
    int8 rows of 128 weights added into int32 accumulators, random rows of a cache-resident
    4 MiB crossbar), on all threads, without any event or neuron bookkeeping."""
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def acc_rows(acc, wrow, offs, bases, n, nthreads):
        for w in prange(nthreads):
            a_ = acc[w]
            for i in range(w, offs.size, nthreads):
                dst = a_[bases[i]:bases[i] + n]
                row = wrow[offs[i]:offs[i] + n]
                for j in range(n):
                    dst[j] += np.int32(3) * np.int32(row[j])

    import numba
    nt = workers or numba.get_num_threads()
    rng = np.random.default_rng(0)
    wrow = rng.integers(-7, 8, 4 << 20).astype(np.int8)
    acc = np.zeros((nt, 32_768), np.int32)
    n, E = 128, 2_000_000
    offs = rng.integers(0, wrow.size - n, E)
    bases = rng.integers(0, acc.shape[1] - n, E)
    t = _time(lambda: acc_rows(acc, wrow, offs, bases, n, nt), min_s=0.5)
    return E * n / t / 1e9


def bench_digits(rows, notes, sops_rows):
    from benchmarks.dense_torch import DenseMatrices
    from compiler import encoding
    from frontends.datasets import load_dataset
    path = "examples/digits/model.onnx"
    if not os.path.exists(path):
        notes.append("digits: examples/digits/model.onnx missing, skipped")
        return
    prog = compile_model(path, PICORE64, bits=8)
    img, _ = _image(prog)
    ds = load_dataset("digits", "test")
    p = encoding.encode("direct", ds.x.reshape(len(ds.x), -1), T)
    p = np.concatenate([p] * 2, axis=1)[:, :128]
    un = img.unmap()
    measure("digits example", img, p, DenseMatrices(un), rows, notes, sops_rows, peer_nets(un))


def bench_mlp(rows, notes, sops_rows, compile_rows, quick):
    from benchmarks import paibox_peer
    from benchmarks.dense_torch import DenseMatrices
    from benchmarks.networks import mlp
    rng = np.random.default_rng(0)
    g = mlp()
    t0 = time.perf_counter()
    prog = compile_model(g, PICORE64, bits=8)
    t_c = time.perf_counter() - t0
    img, _ = _image(prog)
    payloads = (255 * (rng.random((T, 64, 784)) < 0.1)).astype(np.uint8)
    un = img.unmap()
    res = measure("MLP 784-512-512-10", img, payloads, DenseMatrices(un), rows, notes,
                  sops_rows, peer_nets(un))
    compile_rows.append(["snnc (picore64, 8-bit)", f"{t_c:.2f}", prog.summary()["cores_used"]])
    try:
        un = img.unmap()
        Ws = [un.node(n).inputs[0][1].toarray().astype(np.int8) for n in un.layers]
        ths = [int(un.node(n).regs.th_pos[0]) for n in un.layers]
        # PAIBox takes binary spikes: our payload-255 events on layer 1 equal spike x 255,
        # so its layer-1 threshold is ours / 255 (exact: ours is 255 x the float threshold)
        ths_pb = [max(1, round(ths[0] / 255))] + ths[1:]
        net = paibox_peer.build_mlp(Ws[0], Ws[1], Ws[2], ths_pb)
        spikes = (payloads > 0).astype(np.uint8)
        n_pb = 4 if quick else 16
        t0 = time.perf_counter()
        agree = 0
        for i in range(n_pb):
            c = np.asarray(paibox_peer.simulate(net, spikes[:, i]))
            agree += int(np.argmax(c) == res.predictions[i])
        t_pb = (time.perf_counter() - t0) / n_pb
        t_s = _time(lambda: run_payloads(img, payloads[:, :1], workers=1, engine="tick"))
        rows.append(["MLP vs PAIBox Simulator", "tick", 1, f"{1 / t_s:.1f}", "PAIBox",
                     f"{1 / t_pb:.1f}", f"{t_pb / t_s:.2f}x", "-",
                     f"{agree}/{n_pb} same class"])
        t0 = time.perf_counter()
        m = paibox_peer.map_network(net)
        t_pbc = m.get("compile_s", time.perf_counter() - t0)
        compile_rows.append(["PAIBox Mapper (PAICORE)", f"{t_pbc:.2f}", m.get("cores_used")])
    except Exception as e:  # noqa: BLE001 - the peer is optional
        notes.append(f"PAIBox peer unavailable: {type(e).__name__}: {e}")


def bench_vgg9(rows, notes, sops_rows, quick):
    from benchmarks.dense_torch import DenseConv
    from benchmarks.networks import calibrate_thresholds, vgg9
    from compiler import encoding
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (80, 3, 32, 32))
    g = calibrate_thresholds(vgg9(), x[:8], target=0.13)
    t0 = time.perf_counter()
    prog = compile_model(g, PICORE64, bits=4, chips=12)
    t_c = time.perf_counter() - t0
    img, path = _image(prog)
    p = encoding.encode("direct", x[16:].reshape(64, -1), T)
    from compiler.passes import fold_bn
    un, og = img.unmap(), fold_bn(g)
    res = measure("VGG9 CIFAR-10 (12 chips)", img, p, DenseConv(og, un), rows, notes, sops_rows,
                  peer_nets(un, og))
    rates = res.layer_rates()
    notes.append(f"VGG9: {prog.summary()['cores_used']} cores on 12 chips, compile "
                 f"{t_c:.1f} s, mean hidden firing rate "
                 f"{np.mean([v for k, v in rates.items() if k != 'out']):.3f} spikes/neuron/step")
    # VmHWM of the child's own address space: ru_maxrss would carry the forked parent's peak
    # across exec and report the benchmark process instead
    code = ("import sys,numpy as np;from runtime.image import load;"
            "from runtime.engines.tick import run_payloads;img=load(sys.argv[1]);"
            "p=np.load(sys.argv[2]);run_payloads(img,p);"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    pf = os.path.join(os.path.dirname(path), "p.npy")
    np.save(pf, p)
    out = subprocess.run([sys.executable, "-c", code, path, pf], capture_output=True, text=True)
    if out.returncode == 0:
        notes.append(f"VGG9 runtime peak memory (load + 64 samples, separate process): "
                     f"{int(out.stdout.strip().splitlines()[-1]) / 1024 ** 2:.2f} GiB")
    else:
        notes.append(f"VGG9 memory probe failed: {out.stderr[-300:]}")


def bench_montecarlo(mc_rows, notes, quick):
    """Digital mismatch sweep: instances x digits test set (360) x T=8, tick vs layer engine
    (the accuracies of the two must be identical: digital instances are bit-exact)."""
    from compiler import encoding
    from frontends.datasets import load_dataset
    from runtime.lab.sweep import sweep
    path = "examples/digits/model.onnx"
    if not os.path.exists(path):
        notes.append("Monte Carlo: examples/digits/model.onnx missing, skipped")
        return
    img, _ = _image(compile_model(path, PICORE64, bits=8))
    ds = load_dataset("digits", "test")
    p = encoding.encode("direct", ds.x.reshape(len(ds.x), -1), T)
    n = 10 if quick else 100
    for engine in ("tick", "layer"):  # JIT and oneDNN warm-up of both engines' instance paths
        sweep(img, p[:, :8], ds.y[:8], "mismatch", [0.2], samples=1, engine=engine)
    accs = {}
    for engine in ("tick", "layer"):
        t0 = time.perf_counter()
        r = sweep(img, p, ds.y, "mismatch", [0.2], samples=n, seed=0, engine=engine)
        el = time.perf_counter() - t0
        accs[engine] = r[0]["accuracies"]
        mc_rows.append([engine, n, p.shape[1], T, f"{el:.2f}", f"{el * 100 / n:.2f}",
                        f"{r[0]['mean']:.4f}"])
    if not np.array_equal(np.asarray(accs["tick"]), np.asarray(accs["layer"])):
        notes.append("Monte Carlo: tick and layer engine accuracies differ (a bug)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="digits,mlp,vgg9,mc")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    rows, notes, sops_rows, compile_rows, mc_rows = [], [], [], [], []
    only = a.only.split(",")
    if "digits" in only:
        bench_digits(rows, notes, sops_rows)
    if "mlp" in only:
        bench_mlp(rows, notes, sops_rows, compile_rows, a.quick)
    if "vgg9" in only:
        bench_vgg9(rows, notes, sops_rows, a.quick)
    if "mc" in only:
        bench_montecarlo(mc_rows, notes, a.quick)
    ceil = ceiling()
    print(f"\nsnnrun vs baselines, T={T}, {os.cpu_count()} cores "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)\n")
    if rows:
        print(table(rows, ["network", "engine", "batch", "snnrun samples/s", "baseline",
                           "baseline samples/s", "ratio", "GSOP/s", "same output"]))
    if sops_rows:
        print(f"\naccumulate ceiling (measured): {ceil:.2f} GSOP/s; best snnrun "
              f"{max(sops_rows):.3f} GSOP/s = {100 * max(sops_rows) / ceil:.1f} % of ceiling")
    if mc_rows:
        print("\nMonte Carlo: digital mismatch 0.2, digits test set, T=8 (target <= 4 s / 100):")
        print(table(mc_rows, ["engine", "instances", "samples", "T", "seconds",
                              "s per 100 instances", "mean accuracy"]))
    if compile_rows:
        print("\nCompile, MLP 784-512-512-10:")
        print(table(compile_rows, ["mapper", "seconds", "cores"]))
    for n in notes:
        print(f"- {n}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(jsonable({"rows": rows, "compile": compile_rows, "montecarlo": mc_rows,
                                "ceiling_gsops": ceil, "notes": notes}), f, indent=2)
    print(f"\npeak RSS of the benchmark process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
