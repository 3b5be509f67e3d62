"""Device non-idealities on a deployed chip image: seeded, composable noise models (runtime stage).

In: a :class:`runtime.image.ChipImage`. Out: a :class:`ChipInstance`, one frozen sample of one
simulated chip: the per-axon dense weight rows in exactly the layout of
``runtime.engines.tick.dense_rows(image)`` (int8 for digital instances, float64 for analog ones) and
overrides of neuron registers over global neurons. ``run_payloads(image, p, instance=inst)`` runs
it (digital: the integer kernel; analog: the float kernel), ``runtime.lab.twin.Twin(image,
instance=inst)`` differentiates it.

Models (docs/robustness.md; formulas in the design notes, algorithms.md sections 1-2):

    Mismatch(zeta, on, domain, granularity)
                                 relative Gaussian mismatch x(1 + zeta N) on weights, biases,
                                 thresholds (th_pos) and leaks (ADD value, SHIFT/MULT decay
                                 fraction), default weights and biases (compiler/params.py);
                                 one N per cell ('cell') or per trained parameter ('parameter',
                                 Büchel et al.); 'analog': real-valued; 'digital': re-quantized
                                 (round to nearest) and saturated to each core's weight width /
                                 register.
    PCM(t)                       aihwkit's PCMLikeNoiseModel on one differential conductance pair
                                 per weight, one scale per core (g_max 25 uS): programming noise,
                                 per-device drift exponent nu, accumulated 1/f read noise at
                                 t_inference, global drift compensation per core. Analog.
    BitFlip(p, registers)        each physical crossbar bit (the packed xbar rows of every core)
                                 flips with probability p, then the row is decoded with
                                 ``unpack_crossbar``; optionally every neuron register bit too.
    StuckAt(p, value)            each physical crossbar bit is stuck with probability p, at 0 or 1
                                 (half each unless ``value`` is given).
    DeadCores(k)                 k random cores are dead: their crossbar reads zeros, bias, initial
                                 membrane and leak are zero and th_pos is at its maximum, so their
                                 neurons never fire; output neurons on them score 0.

Seeding: instance ``index`` of a run with ``seed`` draws every random number of model kind K
from ``Generator(PCG64(SeedSequence([seed, index, K])))``, independently of the level. So one
chip instance keeps its mismatch pattern when zeta grows (x(1 + zeta N) with the same N), a bit
that flips at rate p also flips at every larger rate, and a PCM chip keeps its programmed
conductances and drift exponents over time (read noise has its own stream per time).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from compiler.backend.emit import pack_crossbar, unpack_crossbar
from compiler.errors import SimulationError
from compiler.params import (
    DEFAULT_GRANULARITY,
    DEFAULT_PARAMS,
    PARAM_KINDS,
    ParamsError,
    check_granularity,
    parse_params,
)

# --- aihwkit PCMLikeNoiseModel constants (algorithms.md 1.1) ----------------------------------
PCM_G_MAX = 25.0                         # uS, SinglePairConductanceConverter default
PCM_G_MIN = 0.0
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
PCM_PROG_G_REF = 25.0                    # prog_coeff_g_max_reference, uS
PCM_T_READ = 250e-9                      # s
PCM_T0 = 20.0                            # s
PCM_ZERO_CLIP = 1e-7
GDC_CLAMP = 1e-4

# register widths that bit flips act on (mode = reset 2 bits | neg 1 bit | leak 2 bits)
MODE_BITS = 5

KIND_TAGS = {"mismatch": 1, "pcm": 2, "pcm-read": 3, "bitflip": 4, "stuck-at": 5, "dead-cores": 6,
             "worst-case": 7, "landscape": 8, "certify": 9}

TIME_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
              "w": 7 * 86400.0, "y": 365 * 86400.0}
_TIME_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_time(text: str | float) -> float:
    """'1s', '10m', '1h', '1d', '2w', '1y' (365 days), '250ms' or a number of seconds -> s."""
    if isinstance(text, (int, float)):
        t = float(text)
    else:
        m = _TIME_RE.match(str(text))
        if not m or m.group(2).lower() not in ("",) + tuple(TIME_UNITS):
            raise SimulationError(f"'{text}' is not a time",
                                  "use a number with a unit: 1s, 10m, 1h, 1d, 1w, 1y")
        t = float(m.group(1)) * TIME_UNITS.get(m.group(2).lower(), 1.0)
    if not math.isfinite(t) or t < 0:
        raise SimulationError(f"inference time must be >= 0, got {text}")
    return t


def format_time(t: float) -> str:
    """Seconds -> the shortest exact label among y, d, h, m, s ('1h', '1d', '1y', '90s')."""
    for u in ("y", "w", "d", "h", "m", "s"):
        q = t / TIME_UNITS[u]
        if q >= 1 and abs(q - round(q)) < 1e-9:
            return f"{int(round(q))}{u}"
    return f"{t:g}s"


def rng_for(seed: int, index: int, kind: str, *extra: int) -> np.random.Generator:
    """The random stream of model ``kind`` on chip instance ``index`` of a run with ``seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int(seed), int(index), KIND_TAGS[kind], *[int(e) for e in extra]])))


# --- chip instances ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ChipInstance:
    """One simulated chip: effective weights and register overrides of a deployed image.

    Attributes:
        wrow: dense weight rows in the layout of ``runtime.engines.tick.dense_rows(image)``
            (axon by axon over its core's neurons, core by core); int8 if digital, float64 if
            analog (in integer weight units).
        regs: register name (as in ``NeuronRegs``) -> array over global neurons; only the
            perturbed registers are present (int64 if digital, float64 if analog; mode registers
            are always integers). ``shift`` may be real-valued on analog instances (decay 2**-k).
        analog: run on the float path.
        label: what was applied, for tables and errors.
    The readout (count * th + V) uses the deployed thresholds, not ``regs['th_pos']``: the host
    decodes with the values it programmed.
    """

    wrow: np.ndarray
    regs: dict = field(default_factory=dict)
    analog: bool = False
    label: str = "clean"

    def reg(self, image, name: str) -> np.ndarray:
        """Effective register ``name`` over global neurons (override or deployed value)."""
        if self.regs and self.regs.get(name) is not None:
            return np.asarray(self.regs[name])
        return getattr(_layout(image).regs, name)


class _Layout:
    """Per-image facts the models need (cached on the image)."""

    def __init__(self, image):
        from runtime.engines.tick import dense_rows
        a = image.a
        self.spec = image.spec
        self.n_cores = image.n_cores
        self.nb = a["core_neuron_base"].astype(np.int64)
        self.ab = a["core_axon_base"].astype(np.int64)
        self.n_per = np.diff(self.nb)
        self.a_per = np.diff(self.ab)
        self.core_off = np.concatenate([[0], np.cumsum(self.n_per * self.a_per)]).astype(np.int64)
        self.w = a["core_w"].astype(np.int64)
        self.lcn = a["core_lcn"].astype(np.int64)
        self.ax_off, wrow = dense_rows(image)
        wrow.setflags(write=False)
        self.wrow = wrow
        self.regs = image.regs(np.arange(image.n_neurons))
        rng_ = [self.spec.weight_range(int(w)) for w in self.w]
        cells = np.diff(self.core_off)
        self.wlo = np.repeat(np.array([r[0] for r in rng_], np.int64), cells)
        self.whi = np.repeat(np.array([r[1] for r in rng_], np.int64), cells)
        self.core_of_neuron = image.core_of_neuron
        self._cell_param = None
        self._reg_group = None

    def block(self, wrow: np.ndarray, c: int) -> np.ndarray:
        """View of core ``c``'s weights [axons, neurons] inside ``wrow``."""
        return wrow[self.core_off[c]:self.core_off[c + 1]].reshape(self.a_per[c], self.n_per[c])

    def packed(self, image, c: int) -> np.ndarray:
        a = image.a
        lo, hi = int(a["core_xbar_base"][c]), int(a["core_xbar_base"][c + 1])
        return a["xbar"][lo:hi].reshape(-1, self.spec.xbar_cols // 8)


def _layout(image) -> _Layout:
    lay = getattr(image, "_noise_layout", None)
    if lay is None:
        lay = _Layout(image)
        image._noise_layout = lay
    return lay


def clean_instance(image) -> ChipInstance:
    """The deployed chip itself as a digital instance (runs bit-exactly like ``run_payloads``)."""
    return ChipInstance(wrow=_layout(image).wrow, regs={}, analog=False, label="clean")


def _merge(inst: ChipInstance, regs: dict, wrow=None, analog=None, label=None) -> ChipInstance:
    r = dict(inst.regs or {})
    r.update(regs)
    return ChipInstance(wrow=inst.wrow if wrow is None else wrow, regs=r,
                        analog=inst.analog if analog is None else analog,
                        label=label or inst.label)


def _join(a: str, b: str) -> str:
    return b if a == "clean" else f"{a} + {b}"


def quantize_weights(image, w: np.ndarray) -> np.ndarray:
    """Real weight rows -> int8 rows rounded to nearest and saturated to each core's width."""
    lay = _layout(image)
    return np.clip(np.rint(w), lay.wlo, lay.whi).astype(np.int8)


# --- relative Gaussian mismatch ---------------------------------------------------------------
#: older name of the parameter kinds (compiler/params.py is the one definition)
MISMATCH_TARGETS = PARAM_KINDS


def cell_params(image) -> np.ndarray:
    """Trained-parameter id of every cell of the instance weight rows (the ``wrow`` layout of
    ``runtime.engines.tick.dense_rows``): int64 [cells], -1 where no synapse is mapped. Cells with
    equal ids hold the same trained integer (a conv kernel element at every output position; an
    axon duplicated on several cores). Source: the image's logical-layer descriptors
    (``ChipImage.cell_params``); an image without them is refused with a recompile hint."""
    lay = _layout(image)
    if lay._cell_param is None:
        if not getattr(image, "has_ops", False):
            raise SimulationError(
                "mismatch granularity 'parameter' needs the cell -> trained-parameter map, but "
                "this image has no logical-layer descriptors (op_* sections)",
                "recompile the model with this snnc (`snnc compile`), or use "
                "--mismatch-granularity cell")
        out = np.empty(int(lay.core_off[-1]), np.int64)
        for c in range(lay.n_cores):
            out[lay.core_off[c]:lay.core_off[c + 1]] = image.cell_params(c).reshape(-1)
        out.setflags(write=False)
        lay._cell_param = out
    return lay._cell_param


def register_groups(image) -> np.ndarray:
    """Trained-parameter id of every neuron's registers (bias, threshold, leak) at parameter
    granularity: one id per (layer, channel) (channel = dim 0 of a (C, H, W) layer, the neuron
    itself in a 1-D layer; ``compiler.ir.linear.channels``). int64 [n_neurons]."""
    lay = _layout(image)
    if lay._reg_group is None:
        from compiler.ir.linear import channels
        out = np.full(int(lay.nb[-1]), -1, np.int64)
        base = 0
        for li, L in enumerate(image.layers):
            ch = channels(tuple(L["shape"]))
            out[image.layer_neurons(li)] = base + ch
            base += int(ch.max()) + 1 if ch.size else 0
        out.setflags(write=False)
        lay._reg_group = out
    return lay._reg_group


def _shared(n: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per-element draws from per-parameter draws ``n`` (0 where the id is -1: no synapse)."""
    return np.where(ids >= 0, n[np.maximum(ids, 0)], 0.0)


@dataclass(frozen=True)
class Mismatch:
    """Relative Gaussian mismatch x -> x(1 + zeta N(0, 1)), frozen per chip instance.

    Args:
        zeta: relative standard deviation.
        on: the parameter kinds (``compiler.params``: 'weights', 'bias', 'threshold' (th_pos,
            kept in [1, th_max]), 'leak' (ADD: the leak value; SHIFT and MULT: the decay
            fraction 2**-k resp. d/4096, kept in [0, 1])); a comma string or a sequence, the
            old spellings 'thresholds' and 'leaks' accepted. Default: weights and biases.
        domain: 'analog' (real-valued) or 'digital' (weights rounded to nearest and saturated to
            the core's width, registers rounded and saturated to their widths; a perturbed SHIFT
            decay goes to the nearest k).
        granularity: 'cell' (one N per crossbar cell and per neuron register) or 'parameter'
            (Büchel et al.: one N per trained parameter, shared by every cell that holds it;
            registers one N per (layer, channel)); see compiler/params.py.

    Seeding: 'cell' draws, from the instance's mismatch stream, N over all cells, then over
    neurons for thresholds, leaks and biases (fixed order whatever is selected); 'parameter'
    draws from its own stream N over the parameter ids, then over the register groups for
    thresholds, leaks and biases.
    """

    zeta: float
    on: tuple[str, ...] = DEFAULT_PARAMS
    domain: str = "digital"
    granularity: str = DEFAULT_GRANULARITY
    kind = "mismatch"

    def __post_init__(self):
        try:
            object.__setattr__(self, "on", parse_params(self.on, "mismatch"))
            object.__setattr__(self, "granularity", check_granularity(self.granularity,
                                                                      "mismatch granularity"))
        except ParamsError as e:
            raise SimulationError(e.message, e.hint) from e
        if self.domain not in ("analog", "digital"):
            raise SimulationError(f"mismatch: domain must be analog or digital, got {self.domain}")
        if not (self.zeta >= 0 and math.isfinite(self.zeta)):
            raise SimulationError(f"mismatch: zeta must be >= 0, got {self.zeta}")

    @property
    def params(self) -> tuple[str, ...]:
        return self.on

    def draws(self, image, n_cells: int, seed: int, index: int):
        """(N per cell, N_threshold, N_leak, N_bias per neuron) of instance ``index``."""
        lay = _layout(image)
        n_neu = int(lay.nb[-1])
        if self.granularity == "cell":
            rng = rng_for(seed, index, self.kind)
            n_w = rng.standard_normal(n_cells)
            n_th = rng.standard_normal(n_neu)
            n_lk = rng.standard_normal(n_neu)
            n_b = rng.standard_normal(n_neu)
            return n_w, n_th, n_lk, n_b
        rng = rng_for(seed, index, self.kind, 1)
        cp = cell_params(image)
        if cp.size != n_cells:
            raise SimulationError(f"mismatch: instance has {n_cells} cells, the image {cp.size}")
        grp = register_groups(image)
        n_groups = int(grp.max()) + 1 if grp.size else 0
        n_w = _shared(rng.standard_normal(int(image.n_params)), cp)
        n_th = _shared(rng.standard_normal(n_groups), grp)
        n_lk = _shared(rng.standard_normal(n_groups), grp)
        n_b = _shared(rng.standard_normal(n_groups), grp)
        return n_w, n_th, n_lk, n_b

    def apply(self, image, inst: ChipInstance, seed: int, index: int) -> ChipInstance:
        spec = image.spec
        n_w, n_th, n_lk, n_b = self.draws(image, inst.wrow.size, seed, index)
        analog = inst.analog or self.domain == "analog"
        z = float(self.zeta)
        wrow, regs = inst.wrow, {}
        if "weights" in self.on:
            w = np.asarray(inst.wrow, np.float64) * (1.0 + z * n_w)
            wrow = w if analog else quantize_weights(image, w)
        if "bias" in self.on:
            b = inst.reg(image, "bias").astype(np.float64) * (1.0 + z * n_b)
            b = np.clip(b, *spec.bias_range)
            regs["bias"] = b if analog else np.rint(b).astype(np.int64)
        if "threshold" in self.on:
            th = inst.reg(image, "th_pos").astype(np.float64) * (1.0 + z * n_th)
            th = np.clip(th, 1.0, spec.threshold_max)
            regs["th_pos"] = th if analog else np.rint(th).astype(np.int64)
        if "leak" in self.on:
            regs.update(_leak_mismatch(image, inst, z * n_lk, analog))
        what = "" if tuple(self.on) == DEFAULT_PARAMS else " on " + "+".join(self.on)
        per = "" if self.granularity == "cell" else ", per parameter"
        return _merge(inst, regs, wrow=wrow, analog=analog,
                      label=_join(inst.label, f"mismatch {z:g}{what} ({self.domain}{per})"))


def _leak_mismatch(image, inst, zn: np.ndarray, analog: bool) -> dict:
    spec = image.spec
    mode = inst.reg(image, "leak_mode").astype(np.int64)
    leak = inst.reg(image, "leak").astype(np.float64)
    shift = inst.reg(image, "shift").astype(np.float64)
    f = 1.0 + zn
    out = {}
    add, shf, mul = mode == 1, mode == 2, mode == 3
    lk = leak.copy()
    lo, hi = spec.leak_range
    lk[add] = np.clip(leak[add] * f[add], lo, hi)
    dmax = (1 << spec.mult_bits) - 1
    lk[mul] = np.clip(leak[mul] * f[mul], 0.0, 4096.0 if analog else dmax)
    decay = np.clip(np.exp2(-shift[shf]) * f[shf], 2.0 ** -60, 1.0)
    k = -np.log2(decay)
    sh = shift.copy()
    if analog:
        sh[shf] = k
        out["leak"], out["shift"] = lk, sh
    else:
        sh[shf] = np.clip(np.rint(k), 0, (1 << spec.shift_bits) - 1)
        out["leak"], out["shift"] = np.rint(lk).astype(np.int64), sh.astype(np.int64)
    return out


# --- PCM (aihwkit PCMLikeNoiseModel) ---------------------------------------------------------
def pcm_sigma_prog(g_target, g_max: float = PCM_G_MAX, coeff=PCM_PROG_COEFF,
                   g_ref: float = PCM_PROG_G_REF) -> np.ndarray:
    """Programming-noise std (uS) of a device programmed to ``g_target`` (algorithms.md 1.3)."""
    x = np.asarray(g_target, np.float64) / g_max
    return (coeff[0] + coeff[1] * x + coeff[2] * x * x) * g_max / g_ref


def pcm_nu_stats(g_target, g_max: float = PCM_G_MAX) -> tuple[np.ndarray, np.ndarray]:
    """(mu_nu, sigma_nu) of the drift exponent of a device at ``g_target`` (algorithms.md 1.4)."""
    g_rel = np.maximum(np.abs(np.asarray(g_target, np.float64)) / g_max, PCM_ZERO_CLIP)
    mu = np.clip(-0.0155 * np.log(g_rel) + 0.0244, 0.049, 0.1)
    sd = np.clip(-0.0125 * np.log(g_rel) - 0.0059, 0.008, 0.045)
    return mu, sd


def pcm_read_noise_factor(t_inference: float, t0: float = PCM_T0,
                          t_read: float = PCM_T_READ) -> float:
    """sqrt(ln((t + t_read) / (2 t_read))) with t = t_inference + t0 (algorithms.md 1.5)."""
    t = t_inference + t0
    return math.sqrt(math.log((t + t_read) / (2 * t_read)))


def pcm_drift_factor(nu, t_inference: float, t0: float = PCM_T0):
    """(t / t0)**-nu with t = t_inference + t0 (1 when t <= t0)."""
    t = t_inference + t0
    if t <= t0:
        return np.ones_like(np.asarray(nu, np.float64))
    return (t / t0) ** (-np.asarray(nu, np.float64))


def pcm_q_s(g_prog, g_max: float = PCM_G_MAX) -> np.ndarray:
    """Relative 1/f read-noise amplitude Q_s of a device at programmed ``g_prog``."""
    return np.minimum(0.0088 / np.maximum((np.abs(g_prog) / g_max) ** 0.65, 1e-3), 0.2)


def _to_conductances(w: np.ndarray, g_max: float, g_min: float):
    """aihwkit SinglePairConductanceConverter: ([g_plus, g_minus], scale s)."""
    s = (g_max - g_min) / max(float(np.max(np.abs(w))) if w.size else 0.0, PCM_ZERO_CLIP)
    sw = w * s
    return [np.clip(sw, 0.0, g_max) + g_min, np.clip(-sw, 0.0, g_max) + g_min], s


def _to_weights(g, s: float, g_min: float) -> np.ndarray:
    return ((g[0] - g_min) - (g[1] - g_min)) / s


@dataclass(frozen=True)
class PCM:
    """Phase-change-memory crossbars (aihwkit ``PCMLikeNoiseModel``, tile flow, per core).

    Each core's weights [axons, neurons] become one differential pair per cell with one scale
    s = g_max / max|W| per core. ``program``: g_prog = max(0, g_T + sigma_prog(g_T) N), nu =
    |mu_nu(g_T) + sigma_nu(g_T) N| (fixed from then on); ``drift`` at t_inference: W_prog is
    converted again (new scale from max|W_prog|, as aihwkit's ``drift_weights``), each device
    drifts g (t/t0)**-nu and gets relative 1/f read noise Q_s(g) sqrt(ln((t+t_read)/(2 t_read))),
    clipped at 0. Global drift compensation (per core): W <- W * mean|W_prog| / mean|W_t|.
    """

    t_inference: float
    gdc: bool = True
    g_max: float = PCM_G_MAX
    g_min: float = PCM_G_MIN
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    kind = "pcm"

    def apply(self, image, inst: ChipInstance, seed: int, index: int) -> ChipInstance:
        lay = _layout(image)
        rng_p = rng_for(seed, index, "pcm")
        rng_r = rng_for(seed, index, "pcm-read", int(round(self.t_inference * 1000)))
        src = np.asarray(inst.wrow, np.float64)
        out = np.empty(src.size, np.float64)
        for c in range(lay.n_cores):
            lo, hi = lay.core_off[c], lay.core_off[c + 1]
            w = src[lo:hi]
            w_prog, nus = self.program(w, rng_p)
            w_t = self.drift(w_prog, nus, rng_r)
            if self.gdc:
                ref = max(float(np.mean(np.abs(w_prog))) if w.size else 0.0, GDC_CLAMP)
                cur = max(float(np.mean(np.abs(w_t))) if w.size else 0.0, GDC_CLAMP)
                w_t = w_t * (ref / cur)
            out[lo:hi] = w_t
        lab = f"pcm {format_time(self.t_inference)}" + ("" if self.gdc else " (no GDC)")
        return _merge(inst, {}, wrow=out, analog=True, label=_join(inst.label, lab))

    def program(self, w: np.ndarray, rng: np.random.Generator):
        """aihwkit ``apply_programming_noise``: (W_prog, [nu_plus, nu_minus])."""
        gs, s = _to_conductances(w, self.g_max, self.g_min)
        gp, nus = [], []
        for g in gs:                      # aihwkit's order: programming noise, then nu, per device
            sig = pcm_sigma_prog(g, self.g_max)
            gp.append(np.maximum(g + self.prog_noise_scale * sig * rng.standard_normal(g.shape),
                                 0.0))
            mu, sd = pcm_nu_stats(g, self.g_max)
            nus.append(np.abs(mu + sd * rng.standard_normal(g.shape)) * self.drift_scale)
        return _to_weights(gp, s, self.g_min), nus

    def drift(self, w_prog: np.ndarray, nus, rng: np.random.Generator) -> np.ndarray:
        """aihwkit ``apply_drift_noise`` at ``t_inference``: re-convert, drift, read noise."""
        gs, s = _to_conductances(w_prog, self.g_max, self.g_min)
        t = self.t_inference + PCM_T0
        fac = pcm_read_noise_factor(self.t_inference)
        out = []
        for g, nu in zip(gs, nus):
            gd = g * pcm_drift_factor(nu, self.t_inference) if t > PCM_T0 else g
            sig = pcm_q_s(g, self.g_max) * fac
            out.append(np.maximum(gd + np.abs(gd) * self.read_noise_scale * sig
                                  * rng.standard_normal(g.shape), 0.0))
        return _to_weights(out, s, self.g_min)


# --- SRAM faults ------------------------------------------------------------------------------
def _require_digital(inst: ChipInstance, what: str) -> None:
    if inst.analog:
        raise SimulationError(f"{what} act on the digital SRAM crossbar, but instance "
                              f"'{inst.label}' is analog", f"apply {what} before analog models")


def _physical_bits(image, inst: ChipInstance, c: int) -> np.ndarray:
    """Unpacked physical bits [rows, xbar_cols] of core ``c`` holding ``inst``'s weights."""
    lay = _layout(image)
    if inst.wrow is lay.wrow:
        packed = lay.packed(image, c)
    else:
        packed = pack_crossbar(lay.block(inst.wrow, c).astype(np.int64), int(lay.w[c]),
                               int(lay.lcn[c]), image.spec)
    return np.unpackbits(packed, axis=1, bitorder="little", count=image.spec.xbar_cols)


def _decode(image, c: int, bits: np.ndarray) -> np.ndarray:
    lay = _layout(image)
    packed = np.packbits(bits, axis=1, bitorder="little")
    return unpack_crossbar(packed, int(lay.a_per[c]), int(lay.n_per[c]), int(lay.w[c]),
                           int(lay.lcn[c]), image.spec)


def _crossbar_fault(image, inst, rng, fault) -> np.ndarray:
    """Apply ``fault(bits, rng) -> bits`` to every core's physical bits -> new int8 rows."""
    lay = _layout(image)
    out = np.array(inst.wrow, dtype=np.int8, copy=True)
    for c in range(lay.n_cores):
        if lay.a_per[c] == 0 or lay.n_per[c] == 0:
            continue
        bits = fault(_physical_bits(image, inst, c), rng)
        out[lay.core_off[c]:lay.core_off[c + 1]] = _decode(image, c, bits).reshape(-1)
    return out


def register_widths(spec) -> dict[str, tuple[int, bool]]:
    """Register -> (stored bits, signed) as bit flips see them."""
    return {"th_pos": (spec.threshold_bits, False), "th_neg": (spec.threshold_bits, False),
            "v_reset": (spec.membrane_bits, True), "v_init": (spec.membrane_bits, True),
            "bias": (spec.bias_bits, True), "leak": (spec.leak_bits, True),
            "shift": (spec.shift_bits, False), "mode": (MODE_BITS, False)}


def _flip_field(v: np.ndarray, bits: int, signed: bool, u: np.ndarray, p: float) -> np.ndarray:
    """XOR each of the ``bits`` stored bits of ``v`` where ``u`` [n, bits] < p; decode."""
    mask = np.zeros(v.shape, np.int64)
    hit = u < p
    for b in range(bits):
        mask |= hit[:, b].astype(np.int64) << b
    x = (v.astype(np.int64) & ((1 << bits) - 1)) ^ mask
    if signed:
        x = x - (((x >> (bits - 1)) & 1) << bits)
    return x


@dataclass(frozen=True)
class BitFlip:
    """Random SRAM bit flips at rate ``p`` on every physical crossbar bit (and, with
    ``registers``, every stored bit of the neuron registers, widths as in ChipSpec)."""

    p: float
    registers: bool = False
    kind = "bitflip"

    def apply(self, image, inst: ChipInstance, seed: int, index: int) -> ChipInstance:
        _require_digital(inst, "bit flips")
        if not 0 <= self.p <= 1:
            raise SimulationError(f"bit-flip rate must be in [0, 1], got {self.p}")
        rng = rng_for(seed, index, self.kind)
        p = float(self.p)

        def flip(bits, r):
            return bits ^ (r.random(bits.shape, dtype=np.float32) < p).astype(np.uint8)

        wrow = _crossbar_fault(image, inst, rng, flip)
        regs = {}
        if self.registers:
            n = int(_layout(image).nb[-1])
            for name, (bits, signed) in register_widths(image.spec).items():
                u = rng.random((n, bits), dtype=np.float32)
                if name == "mode":
                    mode = (inst.reg(image, "reset_mode") | (inst.reg(image, "neg_mode") << 2)
                            | (inst.reg(image, "leak_mode") << 3))
                    m = _flip_field(mode, bits, False, u, p)
                    regs["reset_mode"], regs["neg_mode"] = m & 3, (m >> 2) & 1
                    regs["leak_mode"] = (m >> 3) & 3
                else:
                    regs[name] = _flip_field(inst.reg(image, name), bits, signed, u, p)
        lab = f"bitflip {p:g}" + (" (+registers)" if self.registers else "")
        return _merge(inst, regs, wrow=wrow, label=_join(inst.label, lab))


@dataclass(frozen=True)
class StuckAt:
    """Stuck-at faults: each physical crossbar bit is stuck with probability ``p``, at ``value``
    (0 or 1) or, with ``value=None``, at 0 or 1 with probability 1/2 each."""

    p: float
    value: int | None = None
    kind = "stuck-at"

    def apply(self, image, inst: ChipInstance, seed: int, index: int) -> ChipInstance:
        _require_digital(inst, "stuck-at faults")
        if not 0 <= self.p <= 1:
            raise SimulationError(f"stuck-at rate must be in [0, 1], got {self.p}")
        rng = rng_for(seed, index, self.kind)
        p, val = float(self.p), self.value

        def stick(bits, r):
            stuck = r.random(bits.shape, dtype=np.float32) < p
            one = (r.random(bits.shape, dtype=np.float32) < 0.5) if val is None else (
                np.full(bits.shape, bool(val)))
            return np.where(stuck, one.astype(np.uint8), bits).astype(np.uint8)

        wrow = _crossbar_fault(image, inst, rng, stick)
        lab = f"stuck-at {p:g}" + ("" if val is None else f" (at {val})")
        return _merge(inst, {}, wrow=wrow, label=_join(inst.label, lab))


@dataclass(frozen=True)
class DeadCores:
    """``k`` dead cores, chosen uniformly (nested: the dead set at k is in the one at k + 1)."""

    k: int
    kind = "dead-cores"

    def apply(self, image, inst: ChipInstance, seed: int, index: int) -> ChipInstance:
        lay = _layout(image)
        k = int(self.k)
        if not 0 <= k <= lay.n_cores:
            raise SimulationError(f"dead cores: k must be in 0..{lay.n_cores}, got {self.k}")
        dead = np.sort(rng_for(seed, index, self.kind).permutation(lay.n_cores)[:k])
        wrow = np.array(inst.wrow, copy=True)
        sel = np.isin(lay.core_of_neuron, dead)
        for c in dead:
            wrow[lay.core_off[c]:lay.core_off[c + 1]] = 0
        regs = {}
        fdt = np.float64 if inst.analog else np.int64
        for name, val in (("bias", 0), ("v_init", 0), ("leak_mode", 0),
                          ("th_pos", image.spec.threshold_max)):
            r = np.array(inst.reg(image, name), dtype=np.int64 if name == "leak_mode" else fdt)
            r[sel] = val
            regs[name] = r
        return _merge(inst, regs, wrow=wrow,
                      label=_join(inst.label, f"dead cores {k} {dead.tolist()}"))


# --- composition ------------------------------------------------------------------------------
def sample(image, models, seed: int = 0, index: int = 0,
           base: ChipInstance | None = None) -> ChipInstance:
    """Chip instance ``index``: ``models`` applied in order to ``base`` (default: the clean
    deployed chip). Deterministic in (seed, index)."""
    inst = base if base is not None else clean_instance(image)
    if not isinstance(models, (list, tuple)):
        models = [models]
    for m in models:
        inst = m.apply(image, inst, seed, index)
    return inst


def make_model(kind: str, level: float, *, domain: str = "digital",
               on=DEFAULT_PARAMS, gdc: bool = True, registers: bool = False,
               stuck_value: int | None = None, granularity: str = DEFAULT_GRANULARITY):
    """The model of sweep ``kind`` at ``level`` (zeta, seconds, rate or number of cores)."""
    if kind == "mismatch":
        return Mismatch(float(level), on, domain, granularity)
    if kind == "pcm":
        return PCM(float(level), gdc=gdc)
    if kind == "bitflip":
        return BitFlip(float(level), registers=registers)
    if kind == "stuck-at":
        return StuckAt(float(level), stuck_value)
    if kind == "dead-cores":
        return DeadCores(int(level))
    raise SimulationError(f"unknown noise kind '{kind}'",
                          "use mismatch, pcm, bitflip, stuck-at or dead-cores")


__all__ = ["ChipInstance", "Mismatch", "PCM", "BitFlip", "StuckAt", "DeadCores", "sample",
           "make_model", "clean_instance", "parse_time", "format_time", "rng_for",
           "quantize_weights", "cell_params", "register_groups", "pcm_sigma_prog", "pcm_nu_stats",
           "pcm_read_noise_factor",
           "pcm_drift_factor", "pcm_q_s", "register_widths"]
