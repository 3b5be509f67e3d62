"""run(image, x) -> RunResult: the cycle-level execution of a chip image, batch-parallel.

The wrappers here check dtypes, shapes and contiguity and build the structure-of-arrays tables
the kernels in ``runtime/kernels.py`` need (once per image, cached). T input steps run for T + L
ticks (L = the image's pipeline latency); the output counts and final membranes then equal
``compiler.reference.run_int`` on ``image.unmap()`` bit for bit.

Timing/energy model (chip.md): per tick, a core is busy for events x (2 + ceil(columns/64))
integrate cycles plus ceil(neurons/4) + packets fire cycles; the tick lasts as long as the
busiest core plus the NoC drain. Energy = 2.64 pJ x one-bit SOPs + 5 pJ per neuron update +
3 pJ per on-chip hop + 30 pJ per inter-chip hop. Host input injection and output collection
are assumed free (host links are outside the model).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import numba
import numpy as np

from compiler.errors import SimulationError
from compiler.reference import score
from runtime import kernels
from runtime.engines.inputs import check_payloads
from runtime.engines.result import RunResult
from runtime.image import ChipImage
from runtime.validate import MAX_TIMESTEPS, check_run_budget

REG_NAMES = ("th_pos", "th_neg", "v_reset", "v_init", "bias", "leak", "shift", "reset_mode",
             "neg_mode", "leak_mode")
_MODE_REGS = ("reset_mode", "neg_mode", "leak_mode")


@dataclass
class Tables:
    """Kernel-ready arrays of one image (contiguous int64 unless noted; kernels.py names the
    columns of the ``*_info`` tables)."""

    in_ptr: np.ndarray         # input element -> its entries in in_info
    in_info: np.ndarray        # [E_in, 6] host injection entries
    core_nb: np.ndarray        # neuron prefix per core
    core_ab: np.ndarray        # axon prefix per core
    core_ts: np.ndarray        # tick_start per core
    core_ev_cyc: np.ndarray    # integrate cycles per event
    core_fire_cyc: np.ndarray  # fire cycles per tick (without packets)
    ax_info: np.ndarray        # [A, 4] row offset, nnz, one-bit SOPs per event, core
    wrow: np.ndarray           # int8 dense rows (axon x core neurons), core by core
    regs: tuple                # 10 register arrays over global neurons (NeuronRegs order)
    neu_layer: np.ndarray
    rt_ptr: np.ndarray         # neuron -> its entries in rt_info
    rt_info: np.ndarray        # [R, 6] route entries
    pair_lptr: np.ndarray      # core pair -> its XY links
    pair_links: np.ndarray
    pair_cyc: np.ndarray       # path cycles of each core pair (0 for host)
    n_links: int
    out_glob: np.ndarray
    out_th: np.ndarray
    out_scale: np.ndarray
    neurons_per_core: np.ndarray


def _i64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def dense_rows(image: ChipImage) -> tuple[np.ndarray, np.ndarray]:
    """(row offsets [A], int8 rows): axon a's weights over its core's neurons."""
    ax_off, rows, _, _ = _rows_and_counts(image)
    return ax_off, rows


def _rows_and_counts(image: ChipImage):
    """Dense rows plus, per axon, nonzero weights and set weight bits: built core by core so
    peak memory stays at one decoded core (VGG9: 96 MB of rows, no global nonzero tables)."""
    a = image.a
    nb_ = a["core_neuron_base"].astype(np.int64)
    ab = a["core_axon_base"].astype(np.int64)
    n_per, a_per = np.diff(nb_), np.diff(ab)
    core_off = np.concatenate([[0], np.cumsum(n_per * a_per)])
    rows = np.empty(int(core_off[-1]), np.int8)
    nnz = np.zeros(image.n_axons, np.int64)
    bits = np.zeros(image.n_axons, np.int64)
    for c in range(image.n_cores):
        w = image.weights(c)
        rows[core_off[c]:core_off[c + 1]] = w.reshape(-1)
        wb = int(a["core_w"][c])
        pattern = w if wb == 1 else (w & ((1 << wb) - 1))
        pop = np.zeros_like(pattern)
        for k in range(wb):
            pop += (pattern >> k) & 1
        nnz[ab[c]:ab[c + 1]] = np.count_nonzero(w, axis=1)
        bits[ab[c]:ab[c + 1]] = pop.sum(axis=1)
    core = image.core_of_axon
    ax_off = core_off[core] + (np.arange(image.n_axons) - ab[core]) * n_per[core]
    return ax_off.astype(np.int64), rows, nnz, bits


def tables(image: ChipImage, weights_override=None) -> Tables:
    """Build (or fetch the cached) kernel tables; ``weights_override`` replaces the dense
    weight rows (same layout as :func:`dense_rows`)."""
    cached = getattr(image, "_tables", None)
    if cached is not None:
        if weights_override is None:
            return cached
        return dataclasses.replace(cached, wrow=np.ascontiguousarray(weights_override))
    a, spec = image.a, image.spec
    nb_ = _i64(a["core_neuron_base"])
    n_per = np.diff(nb_)
    w = a["core_w"].astype(np.int64)
    cols = n_per * w
    ev = spec.event_cycles + (cols + spec.cols_per_cycle - 1) // spec.cols_per_cycle
    fire = (n_per + spec.neurons_per_cycle - 1) // spec.neurons_per_cycle
    ax_off, wrow, nnz, bits = _rows_and_counts(image)
    graded = np.zeros(image.n_axons, np.bool_)
    graded[image.in_gaxon] = True
    ax_core = image.core_of_axon.astype(np.int64)
    ax_info = np.stack([ax_off, nnz, np.where(graded, bits * spec.payload_bits, bits), ax_core],
                       axis=1)
    rb = _i64(a["neu_route_base"])
    src_core = np.repeat(image.core_of_neuron, np.diff(rb))
    gax = image.gaxon
    host = gax < 0
    dst_core = src_core.copy()
    dst_core[~host] = ax_core[gax[~host]]
    # core pairs: packets between the same two cores share one XY path
    C = image.n_cores
    uniq, pair = np.unique(src_core * (C + 1) + np.where(host, C, dst_core), return_inverse=True)
    ps, pd = uniq // (C + 1), uniq % (C + 1)
    cw, ch = image.meta["board"]["grid"]
    chip = a["core_chip"].astype(np.int64)
    X = (chip % cw) * spec.mesh_x + a["core_x"].astype(np.int64)
    Y = (chip // cw) * spec.mesh_y + a["core_y"].astype(np.int64)
    phost = pd == C
    pdc = np.where(phost, ps, pd)
    lptr, links, hops, xhops = kernels.xy_links(_i64(X[ps]), _i64(Y[ps]), _i64(X[pdc]),
                                                _i64(Y[pdc]), cw * spec.mesh_x, spec.mesh_x,
                                                spec.mesh_y)
    pair_cyc = hops * spec.hop_cycles + xhops * spec.interchip_hop_cycles
    rt_info = np.stack([gax, _i64(a["rt_delay"]), np.where(host, -1, dst_core),
                        hops[pair], xhops[pair], pair], axis=1)
    in_info = np.stack([image.in_gaxon, _i64(a["in_rt_delay"]), ax_core[image.in_gaxon],
                        np.zeros_like(image.in_gaxon), np.zeros_like(image.in_gaxon),
                        np.zeros_like(image.in_gaxon)], axis=1)
    regs_ = image.regs(np.arange(image.n_neurons))
    regs = tuple(_i64(getattr(regs_, k)) for k in REG_NAMES)
    out_glob = _i64(image.meta["output"]["global"])
    t = Tables(
        in_ptr=_i64(a["in_route_base"]), in_info=_i64(in_info), core_nb=nb_,
        core_ab=_i64(a["core_axon_base"]), core_ts=_i64(a["core_tick_start"]),
        core_ev_cyc=_i64(ev), core_fire_cyc=_i64(fire), ax_info=_i64(ax_info),
        wrow=np.ascontiguousarray(wrow if weights_override is None else weights_override),
        regs=regs, neu_layer=_i64(a["core_layer"][image.core_of_neuron]), rt_ptr=rb,
        rt_info=_i64(rt_info), pair_lptr=_i64(lptr), pair_links=_i64(links),
        pair_cyc=_i64(np.where(phost, 0, pair_cyc)),
        n_links=int(cw * spec.mesh_x * ch * spec.mesh_y * 4),
        out_glob=out_glob, out_th=regs[0][out_glob],
        out_scale=np.asarray(image.meta["output"]["scale"], np.float64),
        neurons_per_core=n_per)
    if weights_override is None:
        image._tables = t
    return t


def _workspace(image: ChipImage, tb: Tables, workers: int, analog: bool) -> tuple:
    """Per-worker scratch arrays, allocated once per image and number system and reused: fresh
    100 MB buffers on every call cost more in page faults than a sample's simulation."""
    key = (workers, analog)
    cache = image.__dict__.setdefault("_workspaces", {})
    if key not in cache:
        slots, A, C, N = image.spec.axon_slots, max(image.n_axons, 1), image.n_cores, \
            image.n_neurons
        P, NL = max(tb.pair_cyc.size, 1), max(tb.n_links, 1)
        cache[key] = (np.zeros((workers, slots, A), np.int32),
                      np.zeros((workers, slots, A), np.uint8),
                      np.zeros((workers, slots, C), np.int32),
                      np.zeros((workers, N), np.float64 if analog else np.int64),
                      np.zeros((workers, N), np.float64 if analog else np.int32),
                      np.zeros((workers, P), np.int64), np.zeros((workers, P), np.int64),
                      np.zeros((workers, NL), np.int64), np.zeros((workers, NL), np.int64))
    return cache[key]




def instance_tables(image: ChipImage, instance) -> tuple[Tables, bool]:
    """Kernel tables of a noise instance: the image's cached tables with the weight rows and
    the overridden registers replaced -> (tables, analog). Analog tables hold float64 weights
    and registers, with ``shift`` replaced by the per-neuron leak decay (2**-k for SHIFT,
    d / 4096 for MULT) that the float kernel applies as ``v - v * decay``."""
    base = tables(image)
    analog = bool(instance.analog)
    wrow = np.asarray(instance.wrow)
    if wrow.shape != base.wrow.shape:
        raise SimulationError(f"instance '{instance.label}': weight rows of shape "
                              f"{list(wrow.shape)}, the image needs {list(base.wrow.shape)}")
    over = dict(instance.regs or {})
    unknown = set(over) - set(REG_NAMES)
    if unknown:
        raise SimulationError(f"instance '{instance.label}': unknown registers {sorted(unknown)}")
    regs = []
    for k, r in zip(REG_NAMES, base.regs):
        v = over.get(k)
        if v is not None:
            v = np.asarray(v)
            if v.shape != r.shape:
                raise SimulationError(f"instance '{instance.label}': register {k} has shape "
                                      f"{list(v.shape)}, expected {list(r.shape)}")
        else:
            v = r
        if analog and k not in _MODE_REGS:
            regs.append(np.ascontiguousarray(v, dtype=np.float64))
        else:
            if not np.issubdtype(v.dtype, np.integer) and np.any(v != np.round(v)):
                raise SimulationError(f"instance '{instance.label}': register {k} must be "
                                      "integer on a digital instance")
            regs.append(_i64(v))
    if analog:
        lmode, shift, leak = regs[9], regs[6], regs[5]
        decay = np.where(lmode == 2, np.exp2(-np.where(lmode == 2, shift, 0.0)),
                         np.where(lmode == 3, leak / 4096.0, 0.0))
        regs[6] = np.ascontiguousarray(decay, dtype=np.float64)
        wrow = np.ascontiguousarray(wrow, dtype=np.float64)
    else:
        if wrow.dtype != np.int8:
            if not np.issubdtype(wrow.dtype, np.integer) or (
                    wrow.size and (wrow.min() < -128 or wrow.max() > 127)):
                raise SimulationError(f"instance '{instance.label}': a digital instance needs "
                                      "int8 weight rows")
        wrow = np.ascontiguousarray(wrow, dtype=np.int8)
    return dataclasses.replace(base, wrow=wrow, regs=tuple(regs)), analog


def default_workers() -> int:
    return max(1, min(numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1))


ENGINES = ("auto", "layer", "tick")


def choose_engine(image: ChipImage, engine: str = "auto", *, device: str = "cpu",
                  ticks: bool = False, weights=None, instance=None) -> str:
    """Which engine a request runs on: 'tick' (cycle-level, the living definition) or 'layer'
    (runtime/engines/layer.py: exact, time-batched). ``auto`` picks the layer engine for
    feed-forward images with descriptors unless the request needs per-tick quantities
    (``ticks``: latency, busy cycles, link loads), raw weight rows (``weights``) or a noise
    instance (``engine='layer'`` runs digital instances bit-exactly, analog ones in float64
    with a different summation order than the tick kernel)."""
    if engine not in ENGINES:
        raise SimulationError(f"unknown engine '{engine}'", f"use one of {', '.join(ENGINES)}")
    if device not in ("cpu", "cuda"):
        raise SimulationError(f"unknown device '{device}'", "use 'cpu' or 'cuda'")
    if engine == "tick":
        if device != "cpu":
            raise SimulationError("the tick engine runs on the CPU only",
                                  "use --engine layer (or auto) with --device cuda")
        return "tick"
    if engine == "layer":
        return "layer"
    from runtime.engines.layer import unsupported_reason
    if device == "cuda":
        return "layer"
    # noise instances stay on the tick engine under auto for now: the layer engine runs them
    # bit-exactly (digital) but rebuilds per-instance matrices and is slower today
    if ticks or weights is not None or instance is not None:
        return "tick"
    return "layer" if unsupported_reason(image) is None else "tick"


def run_payloads(image: ChipImage, payloads: np.ndarray, *, batch: int = 256,
                 workers: int | None = None, record: bool = False, progress: bool = False,
                 encoding: str = "direct", weights=None, instance=None, engine: str = "auto",
                 device: str = "cpu", ticks: bool = False) -> RunResult:
    """Run pre-encoded inputs ``payloads`` (uint8 [T, B, n_in]) on the engine that
    :func:`choose_engine` picks (``RunResult.engine`` says which ran).

    ``instance``: a chip instance of ``runtime.lab.noise`` (``ChipInstance``: ``wrow`` in the layout
    of :func:`dense_rows`, ``regs`` overrides over global neurons, ``analog``). Digital
    instances run the integer kernel with the overridden tables; analog ones the float kernel
    (float64 weights, registers and membranes). The readout ``count * th + V`` always uses the
    deployed thresholds (what the host programmed), and the SOP/energy accounting the deployed
    weights' nonzero pattern.
    """
    p = check_payloads(image, payloads)
    T, B, _ = p.shape
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise SimulationError(f"batch must be a positive integer, got {batch!r}")
    if workers is not None and (isinstance(workers, bool) or
                                not isinstance(workers, (int, np.integer)) or workers < 1):
        raise SimulationError(f"workers must be a positive integer, got {workers!r}")
    w_budget = default_workers() if workers is None else int(workers)
    check_run_budget(image, B, T, min(w_budget, max(min(batch, B), 1)))
    # the same checks for both engines, then the switch
    if choose_engine(image, engine, device=device, ticks=ticks, weights=weights,
                     instance=instance) == "layer":
        from runtime.engines import layer
        return layer.run_payloads(image, p, batch=batch, workers=workers, record=record,
                                  encoding=encoding, weights=weights, instance=instance,
                                  device=device)
    analog = False
    if instance is not None:
        if weights is not None:
            raise SimulationError("pass either weights= or instance=, not both")
        tb, analog = instance_tables(image, instance)
    else:
        tb = tables(image, weights)
    L = image.latency
    spec = image.spec
    workers = w_budget
    numba.set_num_threads(min(workers, numba.config.NUMBA_NUM_THREADS))
    n_layers = len(image.layers)
    N, C, n_out = image.n_neurons, image.n_cores, tb.out_glob.size
    out_counts = np.zeros((B, n_out), np.int64)
    vdt = np.float64 if analog else np.int64
    v_out = np.zeros((B, n_out), vdt)
    layer_spk = np.zeros((B, n_layers), np.int64)
    stats = np.zeros((B, kernels.N_STATS), np.int64)
    tick_cycles = np.zeros((B, T + L), np.int64)
    core_busy = np.zeros(C, np.int64)
    link_load = np.zeros(max(tb.n_links, 1), np.int64)
    cnt_all = np.zeros((B, N) if record else (1, 1), np.int64)
    v_all = np.zeros((B, N) if record else (1, 1), vdt)
    vlo, vhi = spec.membrane_range
    if analog:
        vlo, vhi = float(vlo), float(vhi)
    pb = None
    if progress:
        from compiler.progress import bar
        pb = bar(B, "run", unit="sample")
    # bounds-checked debug mode (NUMBA_BOUNDSCHECK=1): serial, so an IndexError surfaces
    kernel = kernels.run_batch_serial if numba.config.BOUNDSCHECK else kernels.run_batch
    t0 = time.perf_counter()
    for i in range(0, B, batch):
        j = min(B, i + batch)
        chunk = np.ascontiguousarray(p[:, i:j].transpose(1, 0, 2))
        bsz = j - i
        nw = min(workers, bsz)
        ws = _workspace(image, tb, nw, analog)
        cb = np.zeros((bsz, C), np.int64)
        lt = np.zeros((bsz, max(tb.n_links, 1)), np.int64)
        kernel(
            chunk, T, L, nw, tb.in_ptr, tb.in_info, tb.core_nb, tb.core_ab, tb.core_ts,
            tb.core_ev_cyc, tb.core_fire_cyc, tb.ax_info, tb.wrow, *tb.regs, tb.neu_layer,
            tb.rt_ptr, tb.rt_info, tb.pair_lptr, tb.pair_links, tb.pair_cyc, vlo, vhi,
            spec.axon_slots, *ws,
            out_counts[i:j], v_out[i:j], tb.out_glob, layer_spk[i:j], stats[i:j], cb, lt,
            tick_cycles[i:j], cnt_all[i:j] if record else cnt_all,
            v_all[i:j] if record else v_all, record)
        core_busy += cb.sum(axis=0)
        link_load += lt.sum(axis=0)
        if pb is not None:
            pb.update(bsz)
    wall = time.perf_counter() - t0
    if pb is not None:
        pb.close()
    sc = score(out_counts, v_out, tb.out_th, tb.out_scale)
    neuron_updates = float(np.sum(tb.neurons_per_core)) * T
    energy = {
        "synaptic": stats[:, kernels.ST_SOPS1] * spec.e_sop_pj,
        "neuron": np.full(B, neuron_updates * spec.e_neuron_pj),
        "routing": (stats[:, kernels.ST_HOPS] * spec.e_hop_pj
                    + stats[:, kernels.ST_XHOPS] * spec.e_interchip_pj),
    }
    return RunResult(
        timesteps=T, latency_ticks=L, encoding=encoding, out_counts=out_counts, v_out=v_out,
        scores=sc, layer_spikes=layer_spk, stats=stats, tick_cycles=tick_cycles,
        core_busy=core_busy, link_load=link_load,
        layer_names=[x["name"] for x in image.layers],
        layer_sizes=np.array([x["neurons"] for x in image.layers]), energy_pj=energy,
        clock_hz=spec.clock_hz, wall_s=wall,
        counts_all=cnt_all if record else None, v_all=v_all if record else None)


def run(image: ChipImage, x: np.ndarray, *, timesteps: int | None = None,
        encoding: str | None = None, seed: int = 0, **kw) -> RunResult:
    """Encode images ``x`` [B, ...] in [0, 1] and run them. T and encoding default to META."""
    from compiler import encoding as enc
    T = int(image.meta["timesteps"] if timesteps is None else timesteps)
    if not 1 <= T <= MAX_TIMESTEPS:
        raise SimulationError(f"timesteps must be in 1..{MAX_TIMESTEPS}, got {T}")
    name = encoding or image.meta["encoding"]
    x = np.asarray(x)
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != image.n_inputs:
        raise SimulationError(
            f"inputs of shape {list(x.shape)} do not match the image's input "
            f"{image.meta['input']['shape']} ({image.n_inputs} values per sample)")
    payloads = enc.encode(name, x.reshape(len(x), -1), T, seed=seed)
    return run_payloads(image, payloads, encoding=name, **kw)


__all__ = ["run", "run_payloads", "RunResult", "tables", "instance_tables", "dense_rows",
           "choose_engine", "ENGINES"]
