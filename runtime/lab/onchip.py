"""On-chip training of a deployed chip image: BPTT through the bit-exact twin, FP16 shadow
weights, re-quantisation to the crossbar, a per-engine cost model, federated averaging.

The chip model (docs/chip.md 'On-chip training'; constants in ``compiler.chip.ChipSpec``): every
core has an FP engine (the training-mode forward: integrate the events, record FP16 membrane
traces), a BP engine (surrogate-gradient deltas back through W^T and through time) and a WG
engine (dW += delta x spike, then the shadow update). All three skip zeros: the FP engine works
per nonzero input event, the BP engine per nonzero FP16 surrogate derivative, the WG engine per
(nonzero event, nonzero derivative) pair on a synapse.

    new_image, report = train(image, x, y, x_test, y_test, OnChipConfig(epochs=5))

Algorithm (one chip, one step = one mini-batch):

1. programmed weights ``q`` (integers, the image's widths) -> the chip's effective weights: ``q``
   itself, or on a mismatch instance ``clip(rint(q * (1 + zeta N)))`` with the instance's frozen
   N (``runtime.lab.noise.Mismatch.weight_gain``; thresholds/leaks of the instance as sampled);
2. forward through ``runtime.lab.twin.Twin`` (bit-exact with the runtime: the loss is computed on
   the spikes the chip really produces), cross-entropy on the scores in output-spike units,
   times a power-of-two loss scale;
3. backward with the twin's ``half_backward``: membrane traces, surrogate derivatives and the
   deltas leaving every spike are rounded to FP16; the weight gradient reaches ``q`` straight
   through the rounding (times the mismatch gain);
4. WG: per (layer, source) matrix the gradient is divided by a power of two 2^round(log2 rms)
   (an exponent shift, exact in FP16) and rounded to FP16 -> ``g``;
5. FP16 shadow update, every operation rounded to FP16 (torch.float16, IEEE round-to-nearest-
   even): ``m <- mu*m + g``; ``s <- clip(s - lr_k*m, lo, hi)`` with ``lr_k = lr * max|q_k|``
   (the step is relative to the matrix's weight range) and cosine decay over the run;
6. re-quantisation ``q <- clip(round(s), lo, hi)`` per cell with its core's width (1, 2, 4 or 8
   bits): ``nearest`` (round half to even) or ``stochastic`` (floor(s + u), u ~ U[0, 1) from
   ``Generator(PCG64(SeedSequence([seed, 17, chip, step])))``).

Federated (FedAvg, McMahan et al. 2017): K simulated chips, shards IID (seeded permutation) or
non-IID by label (sorted by label, 2K contiguous shards, two per chip, seeded assignment); per
round every chip starts from the global FP16 shadow, trains ``local_epochs`` on its shard, the
host averages the shadows weighted by shard size (float64 sum, one rounding to FP16), re-quantises
and writes the weights to every chip. Communication per round: every chip uploads its FP16
shadow and downloads the averaged one.

The written image keeps placement, routes and registers; only the crossbar bits change
(``compiler.backend.emit.pack_crossbar`` per core), META ``source`` records where it came from
and how it was trained, and the file gets new section CRCs (``compiler.backend.binfmt``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from compiler import progress as _progress
from compiler.backend.emit import file_sha256, pack_crossbar
from compiler.errors import SimulationError
from runtime.engines.tick import run_payloads
from runtime.image import from_sections
from runtime.lab.noise import ChipInstance, Mismatch, _layout, clean_instance, sample
from runtime.lab.twin import SURROGATES, Twin, fp16, surrogate_derivative

ROUNDINGS = ("nearest", "stochastic")
_F16 = torch.float16


@dataclass
class OnChipConfig:
    """Options of :func:`train` (the ``snnrun train`` options)."""

    epochs: int = 5                  # passes over the data (federated: per chip, = rounds x local)
    lr: float = 0.002                # step relative to max|q| of each matrix (see module doc)
    momentum: float = 0.9
    batch: int = 32
    layers: tuple[str, ...] | None = None   # trainable layers (None: all)
    rounding: str = "nearest"
    surrogate: str = "triangle"      # compact support: zero derivatives are skipped by BP/WG
    alpha: float | None = None
    schedule: str = "cosine"         # or 'constant'
    loss_scale: float = 1024.0       # power of two; halved on FP16 overflow
    workers: int = 1
    federated: bool = False
    non_iid: bool = False
    local_epochs: int = 1
    mismatch: float | None = None    # train a mismatch instance of the chip (hardware in the loop)
    mismatch_on: tuple[str, ...] = ("weights",)
    mismatch_domain: str = "digital"
    instance_seed: int = 0
    seed: int = 0
    timesteps: int | None = None     # default: META
    encoding: str | None = None      # default: META

    def validate(self, image) -> None:
        def bad(what, hint=None):
            return SimulationError(f"on-chip training: {what}", hint)
        if self.epochs < 1:
            raise bad(f"epochs must be >= 1, got {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise bad(f"momentum must be in [0, 1), got {self.momentum}")
        if self.batch < 1:
            raise bad(f"batch must be >= 1, got {self.batch}")
        if self.rounding not in ROUNDINGS:
            raise bad(f"rounding '{self.rounding}'", f"use one of {', '.join(ROUNDINGS)}")
        if self.surrogate not in SURROGATES:
            raise bad(f"surrogate '{self.surrogate}'", f"use one of {', '.join(SURROGATES)}")
        if self.schedule not in ("cosine", "constant"):
            raise bad(f"schedule '{self.schedule}'", "use cosine or constant")
        if self.workers < 1:
            raise bad(f"workers must be >= 1, got {self.workers}")
        if self.workers > 1 and not self.federated:
            raise bad(f"{self.workers} workers need federated training",
                      "add --federated (one chip per worker, FedAvg on the host)")
        if self.non_iid and not self.federated:
            raise bad("non-IID shards need federated training", "add --federated")
        if self.federated and self.epochs % self.local_epochs:
            raise bad(f"epochs ({self.epochs}) must be a multiple of local_epochs "
                      f"({self.local_epochs})")
        if self.local_epochs < 1:
            raise bad(f"local_epochs must be >= 1, got {self.local_epochs}")
        if self.mismatch is not None and not (self.mismatch >= 0 and
                                              math.isfinite(self.mismatch)):
            raise bad(f"mismatch zeta must be >= 0, got {self.mismatch}")
        names = [L["name"] for L in image.layers]
        unknown = [n for n in (self.layers or ()) if n not in names]
        if unknown:
            raise bad(f"unknown layers {unknown}", f"the image has layers {', '.join(names)}")
        if self.layers is not None and not self.layers:
            raise bad("no trainable layer given")

    @property
    def rounds(self) -> int | None:
        return self.epochs // self.local_epochs if self.federated else None


# --------------------------------------------------------------------------------------------
# update arithmetic (FP16 shadow, rounding, re-quantisation, FedAvg)
# --------------------------------------------------------------------------------------------
def pow2_scale(g: np.ndarray) -> float:
    """2^round(log2(rms(g))) (1 for an all-zero gradient): dividing by it is exact in FP16."""
    rms = float(np.sqrt(np.mean(np.square(g)))) if g.size else 0.0
    if not (rms > 0 and math.isfinite(rms)):
        return 1.0
    return float(2.0 ** round(math.log2(rms)))


def shadow_update(shadow: torch.Tensor, mom: torch.Tensor, g: torch.Tensor, lr: float,
                  momentum: float, lo: torch.Tensor, hi: torch.Tensor):
    """One FP16 SGD-momentum step; every operation is rounded to FP16 (torch.float16).

    ``m <- fp16(fp16(mu * m) + g)``, ``s <- clip(fp16(s - fp16(lr * m)), lo, hi)``.
    Returns the new (shadow, momentum), both float16.
    """
    if shadow.dtype != _F16 or mom.dtype != _F16 or g.dtype != _F16:
        raise SimulationError("shadow_update needs float16 shadow, momentum and gradient")
    mu, lr16 = torch.tensor(momentum, dtype=_F16), torch.tensor(lr, dtype=_F16)
    m = mu * mom + g if momentum else g.clone()
    s = shadow - lr16 * m
    s = torch.minimum(torch.maximum(s, lo.to(_F16)), hi.to(_F16))
    return s, m


def requantize(shadow, lo: np.ndarray, hi: np.ndarray, rounding: str = "nearest",
               rng: np.random.Generator | None = None) -> np.ndarray:
    """FP16 shadow -> integer weights clipped to each cell's width range [lo, hi].

    ``nearest``: round half to even (``np.rint``). ``stochastic``: ``floor(s + u)``,
    u ~ U[0, 1) from ``rng`` (rounds up with probability frac(s), unbiased)."""
    s = (shadow.to(torch.float64).numpy() if isinstance(shadow, torch.Tensor)
         else np.asarray(shadow, np.float64))
    if rounding == "nearest":
        q = np.rint(s)
    elif rounding == "stochastic":
        if rng is None:
            raise SimulationError("stochastic rounding needs a seeded generator")
        q = np.floor(s + rng.random(s.shape))
    else:
        raise SimulationError(f"unknown rounding '{rounding}'", "use nearest or stochastic")
    return np.clip(q, lo, hi).astype(np.int64)


def fedavg(shadows: list[dict], sizes) -> dict:
    """Weighted mean of FP16 shadow dicts (float64 sum, one rounding to FP16 per value)."""
    w = np.asarray(sizes, np.float64)
    if len(shadows) != w.size or w.size == 0 or np.any(w < 0) or w.sum() <= 0:
        raise SimulationError("fedavg needs one positive weight per worker")
    w = w / w.sum()
    out = {}
    for k in shadows[0]:
        acc = sum(float(wi) * s[k].to(torch.float64) for wi, s in zip(w, shadows))
        out[k] = acc.to(_F16)
    return out


def make_shards(y: np.ndarray, k: int, non_iid: bool, seed: int) -> list[np.ndarray]:
    """Indices of ``k`` shards: IID (a seeded permutation cut in k parts) or non-IID by label
    (indices sorted by label, cut in 2k contiguous shards, two random shards per worker)."""
    y = np.asarray(y)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 17, 1])))
    if k < 1 or k > len(y):
        raise SimulationError(f"cannot split {len(y)} samples into {k} shards")
    if not non_iid:
        return [np.sort(p) for p in np.array_split(rng.permutation(len(y)), k)]
    order = np.argsort(y, kind="stable")
    pieces = np.array_split(order, 2 * k)
    pick = rng.permutation(2 * k)
    return [np.sort(np.concatenate([pieces[pick[2 * i]], pieces[pick[2 * i + 1]]]))
            for i in range(k)]


# --------------------------------------------------------------------------------------------
# one chip: the twin, its trainable matrices, the programmed weights
# --------------------------------------------------------------------------------------------
@dataclass
class _Mat:
    key: tuple[str, str]
    off: np.ndarray          # dense-rows offset of each CSR entry (first cell)
    core: np.ndarray         # core of each entry
    lo: np.ndarray
    hi: np.ndarray
    mask: sp.csr_matrix      # binary structure [n_src, n]


class Chip:
    """One simulated chip: a deployed image (or a mismatch instance of it) being trained."""

    def __init__(self, image, cfg: OnChipConfig, index: int = 0):
        self.image, self.cfg, self.index = image, cfg, index
        self.model = None
        if cfg.mismatch is not None:
            self.model = Mismatch(float(cfg.mismatch), tuple(cfg.mismatch_on),
                                  cfg.mismatch_domain)
            self.instance = sample(image, [self.model], seed=cfg.instance_seed, index=index)
            self.gain = self.model.weight_gain(image, cfg.instance_seed, index)
        else:
            self.instance, self.gain = clean_instance(image), None
        self.twin = Twin(image, instance=self.instance, surrogate=cfg.surrogate, alpha=cfg.alpha)
        self.twin.half_backward = True
        lay = _layout(image)
        self.lay = lay
        links = self.twin._links
        names = [L["name"] for L in image.layers]
        train = set(cfg.layers or names)
        self.mats: dict = {}
        for key, lk in links.items():
            if key[0] not in train:
                continue
            order = np.argsort(lk.inv, kind="stable")
            keep = np.ones(order.size, bool)
            keep[1:] = lk.inv[order][1:] != lk.inv[order][:-1]
            first = np.empty(lk.indices.size, np.int64)
            first[lk.inv[order][keep]] = lk.off[order][keep]
            core = np.searchsorted(lay.core_off, first, side="right") - 1
            mask = sp.csr_matrix((np.ones(lk.indices.size), lk.indices, lk.indptr),
                                 shape=lk.shape)
            self.mats[key] = _Mat(key, first, core, lay.wlo[first].astype(np.float64),
                                  lay.whi[first].astype(np.float64), mask)
        if not self.mats:
            raise SimulationError("on-chip training: the trainable layers have no synapses")
        self.links = links
        self.lowest = min(names.index(k[0]) for k in self.mats)

    # programmed <-> effective weights
    def deployed(self) -> dict:
        """Programmed integer weights of the image, per trainable matrix (CSR data order)."""
        wrow = self.lay.wrow
        return {k: np.asarray(wrow[m.off], np.int64) for k, m in self.mats.items()}

    def effective(self, q: dict) -> dict:
        """What the chip computes with when ``q`` is programmed (float64 values)."""
        out = {}
        analog = bool(self.instance.analog)
        for k, m in self.mats.items():
            v = q[k].astype(np.float64)
            if self.gain is not None:
                v = v * self.gain[m.off]
                if not analog:
                    v = np.clip(np.rint(v), self.lay.wlo[m.off], self.lay.whi[m.off])
            out[k] = v
        return out

    def rows(self, q: dict) -> np.ndarray:
        """Programmed dense weight rows (int8) with ``q`` written into the trainable cells."""
        rows = self.lay.wrow.astype(np.int8).copy()
        for k, m in self.mats.items():
            rows[m.off] = q[k].astype(np.int8)
        return rows

    def instance_for(self, q: dict) -> ChipInstance:
        """This chip with ``q`` programmed (for runtime evaluation)."""
        rows = self.rows(q)
        if self.gain is None:
            return ChipInstance(wrow=rows, regs=self.instance.regs, analog=False,
                                label="programmed")
        w = rows.astype(np.float64) * self.gain
        if not self.instance.analog:
            w = np.clip(np.rint(w), self.lay.wlo, self.lay.whi).astype(np.int8)
        return ChipInstance(wrow=w, regs=self.instance.regs, analog=self.instance.analog,
                            label=self.instance.label)


# --------------------------------------------------------------------------------------------
# cost model
# --------------------------------------------------------------------------------------------
@dataclass
class Cost:
    """Accumulated training cost of one or more chips (see :func:`step_cost`)."""

    fp_cycles: int = 0
    bp_cycles: int = 0
    wg_cycles: int = 0
    dram_cycles: int = 0
    fp_flops: float = 0.0
    bp_flops: float = 0.0
    wg_flops: float = 0.0
    dram_bytes: float = 0.0
    gpu_dram_bytes: float = 0.0
    samples: int = 0
    steps: int = 0
    events: float = 0.0           # nonzero input events seen by the FP engine
    dense_events: float = 0.0     # the same with every input nonzero
    active_derivs: float = 0.0    # nonzero FP16 surrogate derivatives
    derivs: float = 0.0

    def add(self, o: Cost) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))

    def to_dict(self, spec) -> dict:
        cycles = self.fp_cycles + self.bp_cycles + self.wg_cycles + self.dram_cycles
        flops = self.fp_flops + self.bp_flops + self.wg_flops
        e_eng = flops * spec.e_flop_pj
        e_dram = self.dram_bytes * spec.e_dram_pj_per_byte
        return {
            "cycles": int(cycles), "fp_cycles": int(self.fp_cycles),
            "bp_cycles": int(self.bp_cycles), "wg_cycles": int(self.wg_cycles),
            "dram_cycles": int(self.dram_cycles),
            "time_s": cycles / spec.clock_hz,
            "energy_uj": (e_eng + e_dram) * 1e-6,
            "energy_breakdown_uj": {"fp": self.fp_flops * spec.e_flop_pj * 1e-6,
                                    "bp": self.bp_flops * spec.e_flop_pj * 1e-6,
                                    "wg": self.wg_flops * spec.e_flop_pj * 1e-6,
                                    "dram": e_dram * 1e-6},
            "flops": flops, "fp_flops": self.fp_flops, "bp_flops": self.bp_flops,
            "wg_flops": self.wg_flops,
            "dram_bytes": int(round(self.dram_bytes)),
            "gpu_dram_bytes_estimate": int(round(self.gpu_dram_bytes)),
            "dram_reduction": (1.0 - self.dram_bytes / self.gpu_dram_bytes
                               if self.gpu_dram_bytes else None),
            "input_event_density": self.events / self.dense_events if self.dense_events else None,
            "derivative_density": self.active_derivs / self.derivs if self.derivs else None,
            "samples": int(self.samples), "steps": int(self.steps),
        }


class CostModel:
    """Per-step cost of one chip (docs/chip.md 'On-chip training' states every formula)."""

    def __init__(self, chip: Chip):
        image, cfg = chip.image, chip.cfg
        self.chip, self.spec = chip, image.spec
        self.names = [L["name"] for L in image.layers]
        self.n_cores = image.n_cores
        self.glob = {L["name"]: image.layer_neurons(i) for i, L in enumerate(image.layers)}
        self.core_of = image.core_of_neuron
        self.chip_of_core = image.a["core_chip"].astype(np.int64)
        self.structure = {k: sp.csr_matrix((np.ones(lk.indices.size), lk.indices, lk.indptr),
                                           shape=lk.shape) for k, lk in chip.links.items()}
        syn = np.zeros(self.n_cores)
        for m in chip.mats.values():
            syn += np.bincount(m.core, minlength=self.n_cores)
        self.syn = syn                                 # trainable synapses per core
        a = image.a
        self.axons = np.diff(a["core_axon_base"].astype(np.int64))
        self.neurons = np.diff(a["core_neuron_base"].astype(np.int64))
        self.momentum = cfg.momentum > 0
        self.bp_layers = set(self.names[chip.lowest:])

    def _per_core(self, per_neuron: dict) -> np.ndarray:
        out = np.zeros(self.n_cores)
        for name, v in per_neuron.items():
            out += np.bincount(self.core_of[self.glob[name]], weights=v, minlength=self.n_cores)
        return out

    def step(self, p: np.ndarray, st, T: int, B: int) -> Cost:
        """Cost of one training step on payloads ``p`` [T, B, n_in] with twin state ``st``."""
        spec, chip = self.spec, self.chip
        inp = chip.image.meta["input"]["name"]
        act = {inp: p != 0}
        for name in self.names:
            act[name] = st.spikes[name].detach().numpy() != 0
        dnz = {}
        for name in self.names:
            u = st.u[name]
            d = fp16(surrogate_derivative(fp16(u), chip.twin.surrogate, chip.twin.alpha))
            dnz[name] = (d != 0).numpy()
        fp_n, bp_n, wg_n = {}, {}, {}
        events = dense = 0.0
        for name in self.names:
            srcs = [k for k in self.structure if k[0] == name]
            fp = np.zeros(len(self.glob[name]))
            bp, wg = np.zeros_like(fp), np.zeros_like(fp)
            dcount = dnz[name].reshape(T * B, -1).sum(0).astype(np.float64)
            for key in srcs:
                M = self.structure[key]
                x = act[key[1]].reshape(T * B, -1)
                c = x.sum(0).astype(np.float64)
                fp += M.T @ c                                       # events x fan-out
                events += float(c @ np.asarray(M.sum(1)).ravel())
                dense += float(T * B * M.nnz)
                if key[1] != inp and key[1] in self.bp_layers:
                    bp += dcount * np.asarray(M.sum(0)).ravel()     # delta x fan-in
                if key in chip.mats:
                    xm = sp.csr_matrix(x.astype(np.float64)) @ M    # [TB, n] events per neuron
                    wg += np.asarray(xm.multiply(dnz[name].reshape(T * B, -1)).sum(0)).ravel()
            fp_n[name], bp_n[name], wg_n[name] = fp, bp, wg
        cost = Cost(samples=B, steps=1, events=events, dense_events=dense,
                    active_derivs=float(sum(v.sum() for k, v in dnz.items()
                                            if k in self.bp_layers)),
                    derivs=float(sum(v.size for k, v in dnz.items() if k in self.bp_layers)))
        nf = spec.train_neuron_flops * T * B
        fp_mac = self._per_core(fp_n)
        bp_mac = self._per_core({k: v for k, v in bp_n.items()})
        wg_mac = self._per_core(wg_n)
        upd_flops = (4.0 if self.momentum else 2.0) * self.syn        # shadow update per step
        bp_neu = np.zeros(self.n_cores)
        for name in self.bp_layers:
            bp_neu += np.bincount(self.core_of[self.glob[name]], minlength=self.n_cores) * nf
        fp_neu = self.neurons * nf
        fpf = 2 * fp_mac + fp_neu
        bpf = 2 * bp_mac + bp_neu
        wgf = 2 * wg_mac + upd_flops
        cost.fp_cycles = int(np.max(np.ceil(fpf / (2 * spec.fp_macs_per_cycle))))
        cost.bp_cycles = int(np.max(np.ceil(bpf / (2 * spec.bp_macs_per_cycle))))
        cost.wg_cycles = int(np.max(np.ceil(wgf / (2 * spec.wg_macs_per_cycle))))
        cost.fp_flops, cost.bp_flops, cost.wg_flops = (float(fpf.sum()), float(bpf.sum()),
                                                       float(wgf.sum()))
        dram = self.dram_per_core(T, B)
        cost.dram_bytes = float(dram.sum())
        per_chip = np.bincount(self.chip_of_core, weights=dram)
        cost.dram_cycles = int(np.ceil(per_chip.max() / spec.dram_bytes_per_cycle)) \
            if per_chip.size else 0
        cost.gpu_dram_bytes = self.gpu_bytes(T, B)
        return cost

    def dram_per_core(self, T: int, B: int) -> np.ndarray:
        """Spill traffic per core for one step of B samples: the buffer holds, in this order,
        the sample's traces (1 bit per axon and step for the input spikes, FP16 per neuron and
        step for the membrane trace), the FP16 gradient accumulators, the FP16 shadow (and
        momentum). Overflow costs: traces written in FP and read in BP (x2 per sample),
        gradients read-modify-written per sample (x2 per sample), shadow/momentum read and
        written once per step (x2)."""
        buf = float(self.spec.train_buffer_bytes)
        trainable = self.syn > 0
        in_bp = np.zeros(self.n_cores, bool)
        for name in self.bp_layers:
            in_bp[self.core_of[self.glob[name]]] = True
        traces = np.where(in_bp, T * self.axons / 8.0 + 2.0 * T * self.neurons, 0.0)
        grads = 2.0 * self.syn
        shadow = (4.0 if self.momentum else 2.0) * self.syn
        free = np.full(self.n_cores, buf)
        o_t = np.maximum(traces - free, 0)
        free = np.maximum(free - traces, 0)
        o_g = np.maximum(grads - free, 0)
        free = np.maximum(free - grads, 0)
        o_s = np.maximum(shadow - free, 0)
        return np.where(trainable | in_bp, 2 * B * o_t + 2 * B * o_g + 2 * o_s, 0.0)

    def gpu_bytes(self, T: int, B: int) -> float:
        """DRAM bytes of the same dense BPTT step on a GPU (A100 model, FP16 tensors, one
        kernel per layer and timestep, no reuse across kernels): forward reads the input
        activations, the weights and V, writes V, spikes and the surrogate input; backward
        reads the spike gradient, the saved input, reads/writes dV, reads the weights and
        writes the input gradient; weight gradients read inputs and deltas and
        read-modify-write dW every timestep; the update reads W, dW (and momentum) and writes
        W (and momentum) once per step."""
        inp = self.chip.image.meta["input"]["name"]
        total = 0.0
        sizes = {inp: self.chip.image.n_inputs}
        sizes.update({L["name"]: int(L["neurons"]) for L in self.chip.image.layers})
        for key, M in self.structure.items():
            layer, src = key
            n, ns, nnz = sizes[layer], sizes[src], M.nnz
            total += T * (2 * B * ns + 2 * nnz)                        # FP: x_t, W
            if layer in self.bp_layers:
                total += T * 2 * nnz                                   # BP: W
                if src != inp and src in self.bp_layers:
                    total += T * 2 * B * ns                            # BP: dx_t
            if key in self.chip.mats:
                total += T * (2 * B * ns + 2 * B * n + 4 * nnz)         # WG: x_t, delta, dW rmw
                total += (10 if self.momentum else 6) * nnz            # update
        for name in self.names:
            n = sizes[name]
            total += T * 2 * B * n * 4                                 # FP: V r/w, s, u
            if name in self.bp_layers:
                total += T * 2 * B * n * 4                             # BP: ds, u, dV r/w
        return float(total)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
@dataclass
class _State:
    shadow: dict
    mom: dict
    loss_scale: float


def _payloads(x: np.ndarray, enc: str, T: int, seed: int) -> np.ndarray:
    from compiler.encoding import encode
    return encode(enc, x.reshape(len(x), -1), T, seed=seed)


class Trainer:
    """On-chip training of one image on one or more simulated chips (see :func:`train`)."""

    def __init__(self, image, cfg: OnChipConfig):
        cfg.validate(image)
        self.image, self.cfg = image, cfg
        self.T = int(cfg.timesteps or image.meta["timesteps"])
        self.enc = cfg.encoding or image.meta["encoding"]
        n_chips = cfg.workers if cfg.federated else 1
        same = cfg.mismatch is None
        first = Chip(image, cfg, 0)
        self.chips = [first] + [first if same else Chip(image, cfg, k) for k in range(1, n_chips)]
        self.costs = [CostModel(first)] + [CostModel(c) if c is not first else None
                                            for c in self.chips[1:]]
        q0 = first.deployed()
        self.q = q0
        self.shadow = {k: torch.as_tensor(v, dtype=torch.float64).to(_F16) for k, v in q0.items()}
        self.lr_k = {k: cfg.lr * max(1.0, float(np.abs(v).max(initial=0))) for k, v in q0.items()}
        self.total_steps = 0
        self.step_i = 0
        self.skipped = 0

    def _lr(self) -> float:
        if self.cfg.schedule == "constant" or self.total_steps <= 1:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(self.step_i, self.total_steps) /
                                   self.total_steps))

    def _quant(self, shadow: dict, chip: int) -> dict:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [int(self.cfg.seed), 17, int(chip), int(self.step_i)])))
        m = self.chips[0].mats
        return {k: requantize(s, m[k].lo, m[k].hi, self.cfg.rounding, rng)
                for k, s in shadow.items()}

    def _step(self, ci: int, st: _State, q: dict, x: np.ndarray, y: np.ndarray, seed: int,
              cost: Cost):
        chip = self.chips[ci]
        p = _payloads(x, self.enc, self.T, seed)
        eff = chip.effective(q)
        wv = {k: torch.as_tensor(v).requires_grad_(True) for k, v in eff.items()}
        scores, ts = chip.twin(torch.as_tensor(p, dtype=torch.float64), wvals=wv,
                               return_state=True)
        logits = scores / chip.twin.logit_unit
        yt = torch.as_tensor(y, dtype=torch.int64)
        loss_t = torch.nn.functional.cross_entropy(logits, yt)
        (loss_t * st.loss_scale).backward()
        loss = float(loss_t.detach())
        grads = {}
        finite = True
        for k, m in chip.mats.items():
            g = wv[k].grad.numpy() / st.loss_scale
            if chip.gain is not None:
                g = g * chip.gain[m.off]                     # straight through q*(1+zeta N)
            if not np.all(np.isfinite(g)):
                finite = False
                break
            grads[k] = g
        cm = self.costs[ci] or self.costs[0]
        cost.add(cm.step(p, ts, self.T, len(x)))
        correct = int((logits.argmax(1) == yt).sum())
        if not finite:                                       # FP16 overflow: skip, halve scale
            st.loss_scale = max(1.0, st.loss_scale / 2)
            self.skipped += 1
            return loss, correct
        fac = self._lr()
        for k, m in chip.mats.items():
            g = grads[k]
            g16 = torch.as_tensor(g / pow2_scale(g)).to(_F16)
            st.shadow[k], st.mom[k] = shadow_update(
                st.shadow[k], st.mom[k], g16, self.lr_k[k] * fac, self.cfg.momentum,
                torch.as_tensor(m.lo), torch.as_tensor(m.hi))
        return loss, correct

    def _epoch(self, ci: int, st: _State, idx: np.ndarray, x, y, epoch: int, cost: Cost,
               bar=None) -> tuple[float, float]:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [int(self.cfg.seed), 17, 2, ci, epoch])))
        order = idx[rng.permutation(len(idx))]
        q = self._quant(st.shadow, ci)
        losses, correct = [], 0
        for b0 in range(0, len(order), self.cfg.batch):
            bi = order[b0:b0 + self.cfg.batch]
            loss, c = self._step(ci, st, q, x[bi], y[bi],
                                 seed=self.cfg.seed * 1_000_003 + self.step_i, cost=cost)
            losses.append(loss * len(bi))
            correct += c
            self.step_i += 1
            q = self._quant(st.shadow, ci)
            if bar is not None:
                bar.update(1)
        return float(np.sum(losses) / max(len(order), 1)), correct / max(len(order), 1)

    def evaluate(self, q: dict, x, y) -> list[float]:
        """Runtime accuracy of every chip with ``q`` programmed."""
        p = _payloads(x, self.enc, self.T, seed=self.cfg.seed)
        out = []
        for chip in self.chips if self.cfg.mismatch is not None else self.chips[:1]:
            res = run_payloads(self.image, p, instance=chip.instance_for(q), encoding=self.enc)
            out.append(res.accuracy(y))
        return out

    def run(self, x, y, x_test, y_test, progress: bool = False,
            cluster=None) -> tuple[object, dict]:
        cfg = self.cfg
        x, y = np.asarray(x, np.float64), np.asarray(y, np.int64)
        if len(x) != len(y) or len(x) == 0:
            raise SimulationError(f"on-chip training needs as many labels as samples, got "
                                  f"{len(x)} samples and {len(y)} labels")
        if int(np.prod(x.shape[1:])) != self.image.n_inputs:
            raise SimulationError(f"inputs of shape {list(x.shape[1:])} do not match the "
                                  f"image's input {self.image.meta['input']['shape']}")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise SimulationError("on-chip training inputs must be images in [0, 1]")
        before = self.evaluate(self.q, x_test, y_test)
        history = []
        total = Cost()
        K = len(self.chips)
        if cfg.federated:
            shards = make_shards(y, K, cfg.non_iid, cfg.seed)
            if any(len(s) == 0 for s in shards):
                raise SimulationError(f"{K} workers leave a chip without data",
                                      "use fewer workers or more samples")
            steps_per = [math.ceil(len(s) / cfg.batch) for s in shards]
            self.total_steps = cfg.rounds * cfg.local_epochs * max(steps_per)
            n_bar = cfg.rounds * cfg.local_epochs * sum(steps_per)
            desc, unit = "on-chip training (federated)", "step"
        else:
            shards = [np.arange(len(y))]
            self.total_steps = cfg.epochs * math.ceil(len(y) / cfg.batch)
            n_bar = self.total_steps
            desc, unit = "on-chip training", "step"
        comm = 0
        per_epoch_cost = []
        with _progress.bar(n_bar, desc, unit=unit, enabled=progress) as bar:
            if not cfg.federated:
                st = _State(self.shadow, {k: torch.zeros_like(v) for k, v in self.shadow.items()},
                            cfg.loss_scale)
                for e in range(cfg.epochs):
                    c = Cost()
                    loss, acc = self._epoch(0, st, shards[0], x, y, e, c, bar)
                    self.q = self._quant(st.shadow, 0)
                    test = self.evaluate(self.q, x_test, y_test)
                    total.add(c)
                    per_epoch_cost.append(c.to_dict(self.image.spec))
                    history.append({"epoch": e + 1, "loss": loss, "train_accuracy_twin": acc,
                                    "accuracy": float(np.mean(test))})
                    bar.set_postfix_str(f"epoch {e + 1} loss {loss:.3f} acc {np.mean(test):.3f}")
                self.shadow = st.shadow
            else:
                n_bytes = 2 * sum(v.numel() for v in self.shadow.values())
                for r in range(cfg.rounds):
                    c_round = Cost()
                    locals_, losses = [], []
                    step0 = self.step_i
                    units = [(ci, idx, r, step0) for ci, idx in enumerate(shards)]
                    if cluster is not None:
                        # one unit per chip and round; the trainer (chips, twins) and the data
                        # go to the object store once, the round's shadow weights per round
                        shared = (cluster.put(self), cluster.put(self.shadow), cluster.put(x),
                                  cluster.put(y))
                        outs = cluster.map(local_update, units, shared=shared,
                                           desc=f"federated round {r + 1}")
                        for _, _, _, n in outs:
                            bar.update(n)
                    else:
                        outs = [local_update(self, self.shadow, x, y, *u, bar=bar)
                                for u in units]
                    for shadow_k, loss, c, _ in outs:
                        losses.append(loss)
                        locals_.append(shadow_k)
                        c_round.add(c)
                    self.step_i = step0 + cfg.local_epochs * max(steps_per)
                    self.shadow = fedavg(locals_, [len(s) for s in shards])
                    self.q = self._quant(self.shadow, 0)
                    comm += 2 * K * n_bytes
                    test = self.evaluate(self.q, x_test, y_test)
                    total.add(c_round)
                    per_epoch_cost.append(c_round.to_dict(self.image.spec))
                    history.append({"round": r + 1, "loss": float(np.mean(losses)),
                                    "accuracy": float(np.mean(test)),
                                    "accuracy_per_chip": [float(a) for a in test]})
                    bar.set_postfix_str(f"round {r + 1} acc {np.mean(test):.3f}")
        rows = self.chips[0].rows(self.q)
        tuned = tuned_image(self.image, rows, {"training": training_record(cfg)})
        after = self.after(tuned, x_test, y_test)
        spec = self.image.spec
        cost = total.to_dict(spec)
        n_ep = cfg.epochs
        cost["per_epoch"] = {k: (v / n_ep if isinstance(v, (int, float)) and v is not None
                                 and not isinstance(v, bool) else v)
                             for k, v in cost.items() if k in (
                                 "cycles", "fp_cycles", "bp_cycles", "wg_cycles", "dram_cycles",
                                 "time_s", "energy_uj", "dram_bytes", "gpu_dram_bytes_estimate",
                                 "flops")}
        cost["engines"] = {"fp_macs_per_cycle": spec.fp_macs_per_cycle,
                           "bp_macs_per_cycle": spec.bp_macs_per_cycle,
                           "wg_macs_per_cycle": spec.wg_macs_per_cycle,
                           "tflops_per_w": spec.train_tflops_per_w,
                           "buffer_bytes_per_core": spec.train_buffer_bytes}
        if cfg.federated:
            cost["communication_bytes"] = int(comm)
            cost["communication_bytes_per_round"] = int(comm // max(cfg.rounds, 1))
        changed = sum(int(np.count_nonzero(self.q[k] != v))
                      for k, v in self.chips[0].deployed().items())
        report = {
            "accuracy_before": float(np.mean(before)),
            "accuracy_after": float(np.mean(after)),
            "epochs": int(cfg.epochs),
            "workers": int(K),
            "rounds": cfg.rounds,
            "cost": cost,
            "history": history,
            "per_epoch_cost": per_epoch_cost,
            "federated": bool(cfg.federated), "non_iid": bool(cfg.non_iid),
            "layers": sorted({k[0] for k in self.chips[0].mats}),
            "trainable_synapses": int(sum(m.off.size for m in self.chips[0].mats.values())),
            "weights_changed": changed,
            "rounding": cfg.rounding, "surrogate": cfg.surrogate, "lr": cfg.lr,
            "timesteps": self.T, "encoding": self.enc,
            "train_samples": int(len(y)), "test_samples": int(len(y_test)),
            "fp16_overflow_steps": int(self.skipped),
        }
        if cfg.mismatch is not None:
            report["mismatch"] = {"zeta": cfg.mismatch, "on": list(cfg.mismatch_on),
                                  "domain": cfg.mismatch_domain,
                                  "instance_seed": cfg.instance_seed,
                                  "accuracy_before_per_chip": [float(a) for a in before],
                                  "accuracy_after_per_chip": [float(a) for a in after]}
        return tuned, report

    def after(self, tuned, x_test, y_test) -> list[float]:
        """Runtime accuracy of the *written* image (per chip instance, sampled on it)."""
        p = _payloads(x_test, self.enc, self.T, seed=self.cfg.seed)
        out = []
        for chip in self.chips if self.cfg.mismatch is not None else self.chips[:1]:
            inst = (sample(tuned, [chip.model], seed=self.cfg.instance_seed, index=chip.index)
                    if chip.model is not None else None)
            out.append(run_payloads(tuned, p, instance=inst, encoding=self.enc).accuracy(y_test))
        return out


def local_update(trainer: Trainer, shadow: dict, x, y, ci: int, idx: np.ndarray, r: int,
                 step0: int, bar=None):
    """One federated work unit: chip ``ci``'s local epochs of round ``r`` from the round's
    shadow weights -> (new shadow, last local loss, Cost, steps). Its randomness depends on
    (seed, chip, epoch, step) only, and it runs with one torch thread, so a unit gives the same
    numbers here and on a Ray worker (runtime/lab/cluster.py)."""
    from frontends.native.functional import torch_threads
    cfg = trainer.cfg
    trainer.step_i = step0
    st = _State({k: v.clone() for k, v in shadow.items()},
                {k: torch.zeros_like(v) for k, v in shadow.items()}, cfg.loss_scale)
    c = Cost()
    loss = float("nan")
    with torch_threads(1):
        for le in range(cfg.local_epochs):
            loss, _ = trainer._epoch(ci, st, idx, x, y, r * cfg.local_epochs + le, c, bar)
    return st.shadow, loss, c, trainer.step_i - step0


def training_record(cfg: OnChipConfig) -> dict:
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    d["rounds"] = cfg.rounds
    return d


def tuned_image(image, rows: np.ndarray, source: dict | None = None):
    """A new ChipImage: ``image`` with dense weight rows ``rows`` (int8, dense-rows layout)
    packed into every core's crossbar (placement, routes and registers unchanged) and META
    ``source`` recording the parent image. Write it with ``write_image``."""
    lay = _layout(image)
    rows = np.asarray(rows)
    if rows.shape != lay.wrow.shape:
        raise SimulationError(f"weight rows of shape {list(rows.shape)}, the image needs "
                              f"{list(lay.wrow.shape)}")
    if np.any(rows < lay.wlo) or np.any(rows > lay.whi):
        raise SimulationError("a programmed weight lies outside its core's width range")
    spec = image.spec
    parts = []
    a = image.a
    for c in range(image.n_cores):
        blk = lay.block(rows, c)
        packed = pack_crossbar(blk, int(a["core_w"][c]), int(a["core_lcn"][c]), spec)
        parts.append(packed.reshape(-1))
    xbar = np.concatenate(parts).astype(np.uint8) if parts else np.zeros(0, np.uint8)
    if xbar.size != a["xbar"].size:
        raise SimulationError("re-packed crossbar changed size (placement must not change)")
    # on-chip training updates every cell on its own: cells that held one trained parameter
    # (one conv kernel weight) no longer agree, so the logical-layer descriptors (op_*
    # sections) no longer describe the crossbars. Drop them: the tuned image runs on the tick
    # engine, and per-parameter mismatch needs a recompiled model (docs/runtime.md).
    dropped = sorted(k for k in a if k.startswith("op_"))
    sections = {k: v for k, v in a.items() if not k.startswith("op_")}
    sections["xbar"] = xbar
    meta = copy.deepcopy(image.meta)
    parent = {"path": Path(image.path).name}
    if Path(image.path).is_file():
        parent["sha256"] = file_sha256(image.path)
    meta["source"] = {"kind": "on-chip training", "image": parent,
                      "model": image.meta.get("source", {}), **(source or {})}
    if dropped:
        meta["source"]["dropped_sections"] = dropped
    sections["meta"] = meta
    return from_sections(sections, image.spec_digest)


def image_sections(image) -> dict:
    """The sections dict of an image (for ``compiler.backend.binfmt.write``)."""
    s = {k: v for k, v in image.a.items()}
    s["meta"] = image.meta
    return s


def step_cost(image, x, y, config: OnChipConfig | None = None, **kw) -> dict:
    """The cost (``Cost.to_dict``) of one training step on the batch ``x``, ``y`` (forward,
    backward and update of one chip; nothing is written): cost scaling studies."""
    cfg = copy.deepcopy(config) if config is not None else OnChipConfig()
    for k, v in kw.items():
        setattr(cfg, k, v)
    tr = Trainer(image, cfg)
    st = _State(tr.shadow, {k: torch.zeros_like(v) for k, v in tr.shadow.items()},
                cfg.loss_scale)
    c = Cost()
    tr._step(0, st, tr.q, np.asarray(x, np.float64), np.asarray(y, np.int64), cfg.seed, c)
    return c.to_dict(image.spec)


def train(image, x, y, x_test=None, y_test=None, config: OnChipConfig | None = None,
          progress: bool = False, cluster=None, **kw) -> tuple[object, dict]:
    """Fine-tune a deployed image on chip: ``(tuned ChipImage, report dict)``.

    ``cluster`` (federated runs): a :class:`runtime.lab.cluster.Cluster`; each round's
    (chip, round) units run on Ray, with the same numbers as the local run.

    ``x``: images [N, ...] in [0, 1], ``y`` labels. Accuracy before/after is measured with the
    cycle-level runtime on ``x_test``/``y_test`` (default: the training data). Keyword
    arguments override fields of ``config`` (:class:`OnChipConfig`).
    """
    cfg = copy.deepcopy(config) if config is not None else OnChipConfig()
    for k, v in kw.items():
        if not hasattr(cfg, k):
            raise SimulationError(f"on-chip training: unknown option '{k}'",
                                  f"options: {', '.join(OnChipConfig.__dataclass_fields__)}")
        setattr(cfg, k, tuple(v) if k in ("layers", "mismatch_on") and v is not None else v)
    if x_test is None:
        x_test, y_test = x, y
    x_test, y_test = np.asarray(x_test, np.float64), np.asarray(y_test, np.int64)
    tr = Trainer(image, cfg)
    return tr.run(x, y, x_test, y_test, progress=progress, cluster=cluster)


__all__ = ["OnChipConfig", "train", "step_cost", "Trainer", "Chip", "CostModel", "Cost",
           "shadow_update",
           "requantize", "fedavg", "make_shards", "pow2_scale", "tuned_image", "image_sections",
           "training_record", "ROUNDINGS"]
