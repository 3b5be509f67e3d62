"""PAIBox 1.3.0 peer for benchmarks: an integer IF MLP 784-512-512-10, simulated and mapped.

Findings and semantics: benchmarks/PAIBOX_NOTES.md. PAIBox is imported lazily inside the functions,
so this module imports (and ``numpy_reference`` runs) without paibox installed.

Usage (from the repository root)::

    .venv/bin/python benchmarks/paibox_peer.py         # check + timings + mapper, prints JSON
    .venv/bin/python benchmarks/paibox_peer.py --T 8 --samples 20 --repeats 3

Timing convention (verified by ``check_equivalence``): PAIBox layer k (1-based) is given
``tick_wait_start = k``; a spike of layer k at global tick t reaches layer k+1 at tick t+1. The
input pattern step s (0-based) is presented at global tick s+1, and the network is run for
``T + n_layers - 1`` ticks (zeros after T), which makes the output spike counts equal to those of
the layer-synchronous model in ``numpy_reference`` run for T steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any, Sequence

import numpy as np

N_IN, N_H, N_OUT = 784, 512, 10


# --------------------------------------------------------------------------------------------------
# plain numpy reference (the semantics PAIBox's Simulator implements for this network)
# --------------------------------------------------------------------------------------------------

def numpy_reference(weights: Sequence[np.ndarray], thresholds: Sequence[int], spikes: np.ndarray,
                    reset: str = "soft") -> tuple[np.ndarray, list[np.ndarray]]:
    """Layer-synchronous integer IF network, the semantics of PAIBox ``IF`` (leak 0).

    Per step t and layer k, in layer order: ``v += s_{k-1}[t] @ W_k`` (s_0 = input),
    ``s_k[t] = v >= th_k``, then reset: soft ``v -= th_k`` / hard ``v = 0`` where fired, then
    negative floor ``v = max(v, -(2^29 - 1))`` (PAIBox IF's default ``neg_threshold`` with
    saturation). Membranes are int32 (PAIBox wraps at 30 bits, never reached here).

    Returns:
        (output spike counts [n_out], per-layer spike trains [T, n_k] as uint8).
    """
    neg = -((1 << 29) - 1)
    x = np.asarray(spikes).astype(np.int64)
    T = x.shape[0]
    vs = [np.zeros(W.shape[1], dtype=np.int64) for W in weights]
    trains = [np.zeros((T, W.shape[1]), dtype=np.uint8) for W in weights]
    Ws = [np.asarray(W, dtype=np.int64) for W in weights]
    for t in range(T):
        s = x[t]
        for k, (W, th) in enumerate(zip(Ws, thresholds)):
            v = vs[k] + s @ W
            fired = v >= th
            if reset == "soft":
                v = np.where(fired, v - th, v)
            else:
                v = np.where(fired, 0, v)
            vs[k] = np.maximum(v, neg)
            s = fired.astype(np.int64)
            trains[k][t] = fired
    return trains[-1].sum(axis=0).astype(np.int64), trains


# --------------------------------------------------------------------------------------------------
# PAIBox network
# --------------------------------------------------------------------------------------------------

def build_mlp(W1: np.ndarray, W2: np.ndarray, W3: np.ndarray, thresholds: Sequence[int],
              reset: str = "soft") -> Any:
    """An IF MLP in PAIBox: InputProj(784) -> IF(512) -> IF(512) -> IF(10), all-to-all FullConn.

    Args:
        W1, W2, W3: int8 weights [784, 512], [512, 512], [512, 10] (PAIBox's (in, out) order; it
            rejects any dtype but int8/bool).
        thresholds: three positive integer thresholds, one per layer (PAIBox ``IF`` takes a scalar).
        reset: ``"soft"`` (``v -= th``, PAIBox's default when ``reset_v`` is None) or ``"hard"``
            (``reset_v=0``).

    Returns:
        a ``paibox.Network`` with attributes ``inp, n1, n2, n3, s1, s2, s3, probe_out`` and
        ``n_layers = 3``.
    """
    import paibox as pb

    Ws = [np.ascontiguousarray(W, dtype=np.int8) for W in (W1, W2, W3)]
    if Ws[0].shape[1] != Ws[1].shape[0] or Ws[1].shape[1] != Ws[2].shape[0]:
        raise ValueError(f"weight shapes do not chain: {[W.shape for W in Ws]}")
    th = [int(t) for t in thresholds]
    if len(th) != 3:
        raise ValueError("need one threshold per layer (3)")
    reset_v = None if reset == "soft" else 0

    class MLP(pb.Network):
        def __init__(self) -> None:
            super().__init__()
            n_in = Ws[0].shape[0]
            # numeric input set per tick by `simulate` (InputProj.input setter)
            self.inp = pb.InputProj(input=None, shape_out=(n_in,))
            # tick_wait_start = layer index: layer k reads layer k-1's spikes of the previous tick
            self.n1 = pb.IF(Ws[0].shape[1], threshold=th[0], reset_v=reset_v, tick_wait_start=1)
            self.n2 = pb.IF(Ws[1].shape[1], threshold=th[1], reset_v=reset_v, tick_wait_start=2)
            self.n3 = pb.IF(Ws[2].shape[1], threshold=th[2], reset_v=reset_v, tick_wait_start=3)
            self.s1 = pb.FullConn(self.inp, self.n1, Ws[0], conn_type=pb.SynConnType.All2All)
            self.s2 = pb.FullConn(self.n1, self.n2, Ws[1], conn_type=pb.SynConnType.All2All)
            self.s3 = pb.FullConn(self.n2, self.n3, Ws[2], conn_type=pb.SynConnType.All2All)
            self.probe_out = pb.Probe(self.n3, "spike")
            self.n_layers = 3

    return MLP()


def _simulator(network: Any) -> Any:
    """One Simulator per network, cached on it (building one collects probes)."""
    import paibox as pb

    sim = getattr(network, "_peer_sim", None)
    if sim is None:
        sim = pb.Simulator(network, start_time_zero=False)
        object.__setattr__(network, "_peer_sim", sim)
    return sim


def simulate(network: Any, spikes: np.ndarray, record: bool = False) -> Any:
    """Run one sample: binary input spikes [T, 784] -> output spike counts [10] (int64).

    The simulator is reset first (membranes, delay registers, probes), the pattern is presented at
    global ticks 1..T, then zeros for ``n_layers - 1`` more ticks so every input step reaches the
    output layer. For a batch, call this once per sample (PAIBox simulates batch size 1).

    With ``record=True`` returns ``(counts, out_trace)`` where ``out_trace`` [T + L, 10] is the
    output layer's spikes per global tick.
    """
    sim = _simulator(network)
    sim.reset()
    x = np.ascontiguousarray(spikes, dtype=np.uint8)
    T = x.shape[0]
    L = int(network.n_layers) - 1
    zeros = np.zeros(x.shape[1], dtype=np.uint8)
    for t in range(T + L):
        network.inp.input = x[t] if t < T else zeros
        sim.run(1)
    trace = np.asarray(sim.data[network.probe_out], dtype=np.int64)  # [T + L, 10]
    counts = trace.sum(axis=0)
    return (counts, trace) if record else counts


def time_simulation(network: Any, spikes: np.ndarray, repeats: int = 3) -> dict:
    """Seconds per sample of :func:`simulate` on spikes [N, T, 784] or [T, 784], best of repeats."""
    x = np.asarray(spikes)
    if x.ndim == 2:
        x = x[None]
    simulate(network, x[0])  # warm-up
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for s in x:
            simulate(network, s)
        best = min(best, time.perf_counter() - t0)
    return {"samples": int(len(x)), "T": int(x.shape[1]), "repeats": int(repeats),
            "s_per_sample": best / len(x), "s_total_best": best}


def map_network(network: Any, export_dir: str | None = None, **compile_kw: Any) -> dict:
    """Map with PAIBox's backend: ``Mapper().build(net)`` then ``.compile()`` (optionally export).

    Returns dict(cores_used, cores_required, compile_s, build_s, [export_s], inherent_timestep).
    ``cores_used`` is ``n_core_occupied`` (physical cores placed, including cores wasted by the
    power-of-two routing-group allocation); ``cores_required`` is the neuron-grouping estimate.
    """
    import paibox as pb

    mapper = pb.Mapper()
    t0 = time.perf_counter()
    mapper.build(network)
    t1 = time.perf_counter()
    info = mapper.compile(**compile_kw)
    t2 = time.perf_counter()
    out = {"cores_used": int(info["n_core_occupied"]),
           "cores_required": int(info["n_core_required"]),
           "build_s": t1 - t0, "compile_s": t2 - t0, "compile_only_s": t2 - t1,
           "inherent_timestep": int(info["inherent_timestep"])}
    if export_dir is not None:
        t3 = time.perf_counter()
        mapper.export(write_to_file=True, fp=export_dir, format="bin", use_hw_sim=True)
        out["export_s"] = time.perf_counter() - t3
    # per core block: weight width / LCN / neurons (what the grouping chose)
    cbs = []
    for cb in mapper.core_blocks:
        try:
            cbs.append({"name": cb.name, "n_core": int(cb.n_core_required),
                        "weight_width": str(cb.weight_width.name),
                        "lcn_ex": str(cb.lcn_ex.name)})
        except Exception:  # attribute names differ between versions; informative only
            cbs.append({"name": str(cb)})
    out["core_blocks"] = cbs
    return out


# --------------------------------------------------------------------------------------------------
# checks and the benchmark entry point
# --------------------------------------------------------------------------------------------------

def random_problem(seed: int = 0, T: int = 8, n_samples: int = 1, p_in: float = 0.1,
                   wmax: int = 8, sizes: tuple[int, int, int, int] = (N_IN, N_H, N_H, N_OUT)):
    """Seeded int8 weights in [-wmax, wmax-1], thresholds, and binary inputs at rate p_in."""
    rng = np.random.Generator(np.random.PCG64(seed))
    W = [rng.integers(-wmax, wmax, size=(a, b), dtype=np.int64).astype(np.int8)
         for a, b in zip(sizes[:-1], sizes[1:])]
    # thresholds ~ a few std of the per-step input so layers fire sparsely but not silently
    th = [max(1, int(wmax * np.sqrt(p_in * sizes[0]))), max(1, int(wmax * np.sqrt(0.1 * sizes[1]))),
          max(1, int(wmax * np.sqrt(0.1 * sizes[2])))]
    x = (rng.random((n_samples, T, sizes[0])) < p_in).astype(np.uint8)
    return W, th, x


def check_equivalence(seed: int = 1, T: int = 6, n_samples: int = 3, reset: str = "soft",
                      sizes=(20, 16, 12, 5)) -> dict:
    """PAIBox output counts and per-tick output spikes == numpy_reference on a small network."""
    W, th, x = random_problem(seed, T, n_samples, p_in=0.4, wmax=8, sizes=sizes)
    th = [8, 8, 6]
    net = build_mlp(*W, th, reset=reset)
    L = net.n_layers - 1
    ok, fired = True, 0
    for s in x:
        counts, trace = simulate(net, s, record=True)
        ref_counts, trains = numpy_reference(W, th, s, reset=reset)
        fired += int(ref_counts.sum())
        # output spike of input step t appears at global tick t + 1 + L (trace row t + L)
        ok &= bool(np.array_equal(counts, ref_counts))
        ok &= bool(np.array_equal(trace[L:], trains[-1]))
        ok &= bool(not trace[:L].any())
    return {"equal": ok, "reset": reset, "T": T, "samples": n_samples,
            "output_spikes": fired, "sizes": list(sizes), "thresholds": th}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-in", type=float, default=0.1)
    ap.add_argument("--wmax", type=int, default=128, help="weights in [-wmax, wmax-1] (<= 128)")
    ap.add_argument("--export-dir", default=None)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    res: dict[str, Any] = {"check_soft": check_equivalence(reset="soft"),
                           "check_hard": check_equivalence(reset="hard")}
    W, th, x = random_problem(a.seed, a.T, a.samples, a.p_in, a.wmax)
    net = build_mlp(*W, th)
    c_ref = numpy_reference(W, th, x[0])[0]
    res["mlp_first_sample_equal"] = bool(np.array_equal(simulate(net, x[0]), c_ref))
    res["mlp_first_sample_out_spikes"] = int(c_ref.sum())
    res["input_rate"] = float(x.mean())
    res["timing"] = time_simulation(net, x, a.repeats)
    t0 = time.perf_counter()
    for s in x:
        numpy_reference(W, th, s)
    res["numpy_reference_s_per_sample"] = (time.perf_counter() - t0) / len(x)
    res["mapper"] = map_network(build_mlp(*W, th), a.export_dir)
    res["thresholds"] = th
    res["wmax"] = a.wmax
    print(json.dumps(res, indent=1, default=str))
    return 0 if res["check_soft"]["equal"] and res["check_hard"]["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
