"""NIR <-> graph IR (stage: imported; export also from folded integer graphs / chip images).

NIR (the `nir` package, HDF5 ``.nir`` files) describes neurons as continuous-time ODEs and leaves
open what a simulator must decide: the time step, how the ODE is discretised, the spike
predicate (``>`` or ``>=``), whether a spike resets the membrane to ``v_reset`` or subtracts the
threshold, and when the reset applies. Producers answer differently (anchors.md lesson 1), so
the importer takes an explicit ``dt`` (``--dt``, or ``metadata['dt']``, or the convention's
default) and a *convention* naming the producer (``--nir-convention``). Files written by snnc
carry everything in their metadata and need neither.

Conventions (what each framework's own NIR exporter/importer does; read from their public code)::

    name      dt default  LIF/LI beta   LIF/LI gain   IF/I gain  spike  reset     timing
    nir       required    1 - dt/tau    r*dt/tau      r*dt       >      v_reset   same step
    snnc      metadata    1 - dt/tau    r*dt/tau      r*dt       >=     metadata  same step
    snntorch  1e-4        1 - dt/tau    r*dt/tau      1/r        >      subtract  next step
    norse     1e-3        1 - dt/tau    dt/tau        1          >      v_reset   same step
    sinabs    1 (steps)   exp(-dt/tau)  1             1          >=     subtract  same step
    rockpool  1e-3        exp(-dt/tau)  1             1          >=     subtract  same step
    spyx      required    1 - dt/tau    dt/tau        1          >      subtract  spike late
    lava      1e-4        1 - dt/tau    dt/tau        1/r        >      to 0      same step

('1 - dt/tau' is forward Euler, 'exp(-dt/tau)' the exact decay; a gain without r means that
framework ignores r; 'next step': snnTorch's Leaky subtracts the threshold one step after the
spike, after the leak; 'spike late': Spyx emits the spike one step after the crossing.)

Sources: snnTorch ``export_nir.py``/``import_nir.py`` (Leaky -> LIF with dt = 1e-4, tau =
dt/(1-beta), r = tau/dt, so r*dt/tau = 1; Leaky's default reset is subtraction applied at the
*next* step (reset_delay=True), after the leak; spikes are ``mem - threshold > 0``); Norse
``import_nir.py`` + ``lif_box.py``/``iaf.py`` (dv = dt/tau (v_leak - v + i), IAF v += x, Heaviside
``x > 0``, reset to v_reset); Sinabs ``nir.py`` + ``layers/functional/lif.py`` (alpha =
exp(-1/tau_mem), input not normalised, SingleSpike ``v >= threshold``, MembraneSubtract, IF
imported with min_v_mem = -threshold: a floor at -threshold here); Rockpool ``nn/modules/torch/
nir.py`` + LIFTorch (exp decays, spikes ``floor(v/threshold)`` i.e. ``>=``, subtract; its LIF is
exported as CubaLIF); Spyx ``nir.py``/``nn.py`` (beta = 1 - dt/tau, weights scaled by dt/tau, the
spike is computed from the membrane *before* this step's input); the NIR paper's
``nir_to_lava.py`` (dv = dt/tau, input weight correction dt/tau, Loihi resets v to 0, IF
threshold v_threshold*r).

The IR neuron (compiler/ir/nodes.py) is ``v <- beta*v + z; s = v >= v_threshold; reset``. Every
mapping above is exact except these, which the importer lists in ``graph.attrs['nir']['lossy']``
and logs as warnings: the predicate ``>`` becomes ``>=`` (differs only when v equals the threshold
exactly); snnTorch's next-step subtraction (after the leak) becomes an immediate one (differs by
(1-beta)*threshold per spike; exact for IF, beta = 1); Spyx's one-step spike delay is dropped;
CubaLIF/CubaLI have a synaptic current state the IR does not have: refused unless
``cubalif='lif'``, which replaces the synaptic filter by its DC gain ``w_in`` (lossy). NIR
``Delay`` is representable only when all delays are 0 (the chip runs layer-synchronously).

Node map (import): Input, Output, Affine, Linear, Scale, Conv2d, SumPool2d, AvgPool2d, Flatten,
IF, LIF, LI (non-spiking readout: LIF with infinite threshold, no reset), I (integrator: IF with
infinite threshold), Threshold (stateless: LIF with beta = 0, no reset), Delay (0 only),
CubaLIF/CubaLI (see above), nested NIRGraph (flattened; a recurrent one is refused). Several
edges into one node are summed (an IR Add).

Export (:func:`export_nir`): an operator graph (BatchNorm folded first) maps node for node; IR
Add becomes a NIR ``Scale`` of ones with several incoming edges (metadata ``snnc.op = Add``);
IF -> NIR IF (r = 1/dt), LIF -> NIR LIF (tau = dt/(1-beta), r = tau/dt, v_leak = 0), an
infinite-threshold IF/LIF -> I/LI. The graph metadata holds ``dt``, ``discretization`` ('euler'),
``spike_predicate`` ('>='), ``reset`` and ``producer`` = 'snnc'; each neuron's metadata its
``snnc.reset`` ('soft' | 'hard' | 'none'), ``snnc.v_init`` and ``snnc.neg_floor``. A folded
integer graph (a chip image's ``unmap()``) exports each layer as one NIR Linear/Affine per
source (the unrolled integer matrix, flat populations) and its integer registers. What NIR
itself cannot say (subtractive reset, no reset, v_init, the floor, the chip's shift/multiply
leak arithmetic, payload inputs) is returned and logged as warnings.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from compiler.errors import FrontendError, UnsupportedOpError
from compiler.ir import (
    IF,
    LIF,
    Add,
    Affine,
    AvgPool2d,
    Conv2d,
    Flatten,
    Graph,
    Input,
    Linear,
    Output,
    Scale,
    SumPool2d,
    verify,
)
from compiler.ir.linear import broadcast, out_shape
from frontends.nir._common import PRODUCER, _a, _compact, _meta_str, _nir, _sanitize
from frontends.nir.conventions import (
    CONVENTION_HINT,
    CONVENTION_NAMES,
    CONVENTIONS,
    CUBALIF_MODES,
    DT_RTOL,
    GAIN_RTOL,
    NORSE_TAU_BUG,
    Convention,
    finite_dt,
    rockpool_dt,
    spyx_dt,
)

log = logging.getLogger(__name__)


def _flatten_graph(g, prefix: str = "", where: str = "<nir>"):
    """Nested NIRGraphs -> flat nodes/edges. Returns (nodes, edges, inputs, outputs)."""
    nir = _nir()
    nodes, edges, sub_io = {}, [], {}
    for k, n in g.nodes.items():
        full = f"{prefix}{k}"
        if isinstance(n, nir.NIRGraph):
            sn, se, si, so = _flatten_graph(n, f"{full}.", where)
            nodes.update(sn)
            edges += se
            sub_io[k] = (si, so)
        else:
            nodes[full] = n

    def resolve(name: str, as_src: bool) -> str:
        if name in sub_io:
            ends = sub_io[name][1 if as_src else 0]
            if len(ends) != 1:
                raise FrontendError(f"NIR file '{where}': edge to subgraph '{prefix}{name}' "
                                    f"is ambiguous: it has {len(ends)} "
                                    f"{'outputs' if as_src else 'inputs'}",
                                    "name the port: 'subgraph.port'")
            return ends[0]
        if name in g.nodes:
            return f"{prefix}{name}"
        head, _, tail = name.partition(".")
        if head in sub_io and f"{prefix}{head}.{tail}" in nodes:
            return f"{prefix}{head}.{tail}"
        raise FrontendError(f"NIR file '{where}': an edge refers to the unknown node "
                           f"'{prefix}{name}'", "the file is malformed: re-export it with the "
                           "producer's exporter (every edge must name an existing node)")

    for s, d in g.edges:
        edges.append((resolve(str(s), True), resolve(str(d), False)))
    ins = [f"{prefix}{k}" for k, n in g.nodes.items() if isinstance(n, nir.Input)]
    outs = [f"{prefix}{k}" for k, n in g.nodes.items() if isinstance(n, nir.Output)]
    return nodes, edges, ins, outs


def _topo(nodes: dict, edges: list, where: str = "<nir>") -> list[str]:
    import networkx as nx
    g = nx.DiGraph()
    order = {k: i for i, k in enumerate(nodes)}
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(g):
        cyc = nx.find_cycle(g)
        raise UnsupportedOpError("recurrent NIRGraph", cyc[0][0], f"NIR file '{where}'",
                                 f"the chip IR is feed-forward; the cycle {cyc} (e.g. a recurrent "
                                 "RLeaky/RSynaptic) cannot be mapped")
    return list(nx.lexicographical_topological_sort(g, key=order.__getitem__))


class _Importer:
    """State of one NIR import: the staged IR nodes and the translation rules."""

    def __init__(self, where: str, conv: Convention, dt: float | None, cubalif: str,
                 meta: dict):
        self.where, self.conv, self.dt, self.cubalif, self.meta = where, conv, dt, cubalif, meta
        self.source = f"NIR file '{where}'"
        self.staged: dict[str, list] = {}          # IR name -> [node, inputs]
        self.folded: dict[str, str] = {}           # synapse with a folded constant -> neuron
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.lossy: list[str] = []
        self.tau_scale = 1.0                       # Norse 1.1 exporter: tau = dt * tau_mem
        self.nir_name: dict[str, str] = {}         # readable IR base name -> NIR node name

    # --- helpers ------------------------------------------------------------------------------
    def unsupported(self, name: str, op: str, hint: str) -> UnsupportedOpError:
        orig = self.nir_name.get(name)
        where = self.source if orig in (None, name) else f"{self.source}, NIR node '{orig}'"
        return UnsupportedOpError(op, name, where, hint)

    def readable(self, name: str, n) -> str:
        """A NIR node name that is only a number ('0', 'lif1.2') gets its kind as a prefix."""
        head, _, last = name.rpartition(".")
        if not last.isdigit():
            return name
        kind = {"SumPool2d": "sumpool", "AvgPool2d": "avgpool"}.get(
            type(n).__name__, type(n).__name__.lower())
        nice = f"{head}.{kind}{last}" if head else f"{kind}{last}"
        self.nir_name[_sanitize(nice)] = name
        return nice

    def check_fields(self, name: str, n) -> None:
        """Malformed numbers (strings, NaN, Inf where not meaningful) -> FrontendError."""
        kind = type(n).__name__
        for attr in ("weight", "bias", "scale", "tau", "tau_mem", "tau_syn", "r", "w_in",
                     "v_leak", "v_threshold", "v_reset", "threshold", "delay"):
            v = getattr(n, attr, None)
            if v is None:
                continue
            try:
                a = np.asarray(v)
                if a.dtype.kind not in "biuf":
                    raise TypeError(a.dtype)
                a = a.astype(np.float64)
            except (TypeError, ValueError):
                raise FrontendError(f"{self.source}: {kind} node '{name}': '{attr}' is not "
                                    f"numeric ({type(v).__name__} {str(v)[:40]!r})",
                                    "the file is malformed: re-export it") from None
            bad = np.isnan(a)
            if attr in ("tau", "tau_mem", "tau_syn", "v_threshold", "threshold"):
                bad |= np.isneginf(a)          # +inf: no leak / never fires
            else:
                bad |= np.isinf(a)
            if np.any(bad):
                raise FrontendError(f"{self.source}: {kind} node '{name}': tensor '{attr}' "
                                    f"holds {int(bad.sum())} NaN/Inf value(s) of {a.size}",
                                    "the model diverged or the file is corrupt: re-export it")
            if attr in ("tau", "tau_mem", "tau_syn") and np.any(a <= 0):
                raise FrontendError(f"{self.source}: {kind} node '{name}': time constant "
                                    f"'{attr}' must be > 0, got min {a.min():g}",
                                    "the file is malformed (e.g. a decay written as tau)")

    def check_norse_tau(self, nodes: dict) -> None:
        """Norse 1.1 exports tau = dt / tau_mem_inv = dt * tau_mem: every tau is below dt."""
        if self.conv.name != "norse" or self.dt is None:
            return
        from frontends.nir.read import _time_constants
        taus, _, syn = _time_constants(nodes)
        allt = [t for t in taus + syn]
        if not allt:
            return
        below = [bool(np.all(_a(t) < self.dt)) for t in allt]
        if all(below):
            self.tau_scale = 1.0 / self.dt
            self.note(f"{NORSE_TAU_BUG}: every tau is below dt = {self.dt:g}, so tau is read "
                      f"as tau / dt (check --dt: the exporter's dt is the one to pass)")

    def tau(self, t) -> np.ndarray:
        return _a(t) * self.tau_scale

    def note(self, msg: str) -> None:
        if msg not in self.lossy:
            self.lossy.append(msg)

    def fresh(self, base: str) -> str:
        name, i = _sanitize(base), 1
        b = name
        while name in self.staged:
            name, i = f"{b}_{i}", i + 1
        return name

    def add(self, base: str, node, inputs: list[str], where: str | None = None) -> str:
        name = self.fresh(base)
        try:
            self.shapes[name] = out_shape(name, node, [self.shapes[i] for i in inputs])
        except Exception as e:
            raise FrontendError(f"{self.source}: node '{where or base}' ({type(node).__name__}): "
                                f"{e}") from e
        self.staged[name] = [node, list(inputs)]
        return name

    def need_dt(self, what: str) -> float:
        if self.dt is None:
            raise FrontendError(f"{self.source}: {what} needs the time step dt, which neither the "
                                f"file's metadata nor the '{self.conv.name}' convention gives",
                                "pass --dt (the step the model was trained/simulated with)")
        return self.dt

    def beta(self, tau, what: str) -> np.ndarray:
        dt = self.need_dt(what)
        tau = self.tau(tau)
        with np.errstate(divide="ignore"):
            b = 1.0 - dt / tau if self.conv.decay == "euler" else np.exp(-dt / tau)
        if np.any(b < 0):
            hint = "use the --dt the model was trained with (it must be below every tau)"
            if self.conv.name == "norse":
                hint = (f"{NORSE_TAU_BUG}; some taus here are below dt and some are not, so "
                        "the file cannot be read back: re-export with tau = 1 / tau_mem_inv")
            raise FrontendError(f"{self.source}: {what}: dt = {dt:g} > tau = {tau.min():g} gives "
                                "a negative decay with Euler steps", hint)
        return np.clip(b, 0.0, 1.0)

    def lif_gain(self, n, what: str) -> np.ndarray:
        rule = self.conv.lif_gain
        if rule == "1":
            return np.ones_like(_a(n.tau))
        dt = self.need_dt(what)
        g = dt / self.tau(n.tau)
        return g * _a(n.r) if rule == "r*dt/tau" else g

    def if_gain(self, r, what: str) -> np.ndarray:
        rule = self.conv.if_gain
        r = _a(r)
        if rule == "r*dt":
            return r * self.need_dt(what)
        if rule == "r":
            return r
        if rule == "1/r":
            return 1.0 / r
        return np.ones_like(r)

    def input_of(self, name: str, preds: list[str], add_name: str | None = None) -> str:
        """The single IR source of a NIR node (an IR Add when several edges arrive)."""
        if not preds:
            raise FrontendError(f"{self.source}: node '{name}' has no input edge")
        if len(preds) == 1:
            return preds[0]
        uniq = list(dict.fromkeys(preds))
        terms = []
        for p in uniq:
            k = preds.count(p)
            terms.append(p if k == 1 else self.add(f"{p}_x{k}", Scale(np.asarray(float(k))),
                                                  [p]))
        if len(terms) == 1:
            return terms[0]
        return self.add(add_name or f"{name}_sum", Add(), terms, name)

    def fold_constant(self, name: str, src: str, c: np.ndarray) -> None:
        """Add a constant current c (per neuron) into the bias of the synapse feeding ``src``."""
        node, ins = self.staged[src]
        shape = self.shapes[src]
        if not self.can_fold(src):
            raise self.unsupported(name, "v_leak != 0",
                                   "a constant leak potential can only be folded into the bias of "
                                   "the Affine/Conv2d right before the neuron")
        if isinstance(node, Conv2d):
            cc = broadcast(c, shape, "v_leak", name).reshape(shape[0], -1)
            if not np.allclose(cc, cc[:, :1]):
                raise self.unsupported(name, "v_leak varying within a channel",
                                       "use one v_leak per channel")
            node = Conv2d(node.weight, _a(node.bias) + cc[:, 0], node.stride, node.padding,
                          node.dilation, node.groups)
        else:
            b = _a(node.bias) if isinstance(node, Affine) else np.zeros(node.weight.shape[0])
            node = Affine(node.weight, b + broadcast(c, shape, "v_leak", name))
        self.staged[src][0] = node
        self.folded[src] = name

    def neuron(self, name: str, n, x: str, *, spiking: bool, leaky: bool,
               kind: str | None = None) -> str:
        """Gain, leak, threshold, reset and predicate of one NIR neuron -> IR Scale + IF/LIF."""
        conv = self.conv
        shape = self.shapes[x]
        kind = kind or type(n).__name__
        md = getattr(n, "metadata", None) or {}
        if leaky:
            beta = self.beta(n.tau, f"{kind} '{name}'")
            gain = self.lif_gain(n, f"{kind} '{name}'")
            v_leak = _a(getattr(n, "v_leak", 0.0))
        else:
            beta = None
            gain = self.if_gain(n.r, f"{kind} '{name}'")
            v_leak = np.zeros(())
        if np.any(gain <= 0) or not np.all(np.isfinite(gain)):
            raise FrontendError(f"{self.source}: {kind} '{name}': input gain must be finite and "
                                f"> 0 (check r, tau, dt)")
        for what, arr in (("gain", gain), ("v_leak", v_leak)):
            if _a(arr).size not in (1, int(np.prod(shape))) and not (
                    len(shape) >= 2 and _a(arr).size == shape[0]):
                raise FrontendError(f"{self.source}: {kind} '{name}': {what} of shape "
                                    f"{_a(arr).shape} does not fit the input {shape}")
        if spiking:
            th = _a(n.v_threshold)
            reset, v_reset, v_init, floor = self.reset_of(name, n, md)
        else:
            th = np.asarray(np.inf)
            reset, v_reset, v_init, floor = "none", np.zeros(()), self.md_v_init(md), None
        # constant current per step, in the synapse's units (before the gain)
        const = (1.0 - beta) * v_leak / gain if leaky and np.any(v_leak != 0) else None
        if spiking and reset == "soft" and conv.timing == "next_reset":
            th, v_init, const = self.delayed_subtract(name, x, th, beta, gain, v_init, const)
        if const is not None:
            self.fold_constant(name, x, const)
        if not spiking and md.get("snnc.scale") is not None:
            gain = gain * _a(md["snnc.scale"]).reshape(-1)   # a chip readout's per-neuron scale
        g = _compact(gain)
        if not np.allclose(g, 1.0, rtol=GAIN_RTOL, atol=0):
            x = self.add(f"{name}_gain", Scale(g), [x], name)
        kw = dict(v_threshold=_compact(th), v_reset=_compact(v_reset), v_init=_compact(v_init),
                  reset_mode=reset, neg_floor=floor, dt=float(self.dt or 1.0))
        if leaky:
            ir = LIF(beta=_compact(beta), **kw)
        else:
            ir = IF(**kw)
        if spiking:
            self.declare_spiking(kind, leaky)
        return self.add(name, ir, [x], name)

    def declare_spiking(self, kind: str, leaky: bool) -> None:
        """What this producer's spiking neurons do that the chip's neuron does not."""
        conv = self.conv
        if conv.predicate == ">":
            self.note(f"spike predicate '>' ({conv.name}) mapped to the chip's '>=' (differs only "
                      "when the membrane equals the threshold exactly)")
        if conv.multispike:
            who = ("Sinabs' MultiSpike (the default spike_fn of its layers and of from_nir)"
                   if conv.name == "sinabs" else "Rockpool's spike generation (floor(v / "
                   "threshold), up to max_spikes_per_dt)")
            self.note(f"multiple spikes per step: {who} emits floor(v / threshold) spikes in one "
                      "step and subtracts them all; the chip emits at most one per step and keeps "
                      "the rest in the membrane (subtractive reset), so the extra spikes come out "
                      "on the following steps (same totals unless the neuron saturates or the run "
                      "ends first; identical for single-spike models)")
        if conv.late_spike:
            self.note(f"{conv.producer} emits each spike one step after the threshold crossing "
                      "(computed from the membrane before this step's input); the chip emits it "
                      "in the same step, so spike trains are shifted by one step (the producer's "
                      "last-step crossing is not counted there)")
        if conv.name == "snntorch":
            self.note("snnTorch's reset_mechanism is not in NIR: read as 'subtract' (its "
                      "default). A model trained with reset_mechanism='zero' must be imported "
                      "with --nir-convention snntorch-zero (exact), one with 'none' cannot be "
                      "told apart")
        if conv.name == "sinabs" and not leaky:
            self.note("Sinabs' IAF min_v_mem is not in NIR: read as -threshold (a floor), as "
                      "Sinabs' from_nir does; a model trained with min_v_mem=None differs once "
                      "a membrane falls below -threshold")
        if conv.name == "sinabs" and leaky and kind == "LIF":
            self.note("Sinabs' LIF norm_input (default True: input scaled by 1 - alpha) is not "
                      "in NIR: read as norm_input=False, as Sinabs' own from_nir does")

    def delayed_subtract(self, name, x, th, beta, gain, v_init, const):
        """snnTorch's reset_delay: u_t = beta u_{t-1} + I_t - theta s_{t-1}, s_t = [u_t > theta].

        With d = theta/beta - theta and v'_t = u_t - (theta/beta) s_t + d this is exactly the IR
        neuron with threshold theta/beta (soft reset by theta/beta), v_init + d and a constant
        current (1 - beta) d per step, which is folded into the preceding Affine/Conv bias.
        """
        if beta is None or np.allclose(beta, 1.0):
            return th, v_init, const                 # IF: the delay changes nothing
        if np.any(beta <= 0) or not self.can_fold(x):
            self.note(f"{self.conv.producer} subtracts the threshold one step late, after the "
                      "leak; here it "
                      "could not be remapped exactly (beta = 0 or no Affine/Conv right before the "
                      "neuron), so the IR subtracts at once (per spike the membrane differs by "
                      "(1 - beta) * threshold)")
            return th, v_init, const
        d = th / beta - th
        extra = (1.0 - beta) * d / gain
        return th / beta, v_init + d, extra if const is None else const + extra

    def can_fold(self, src: str) -> bool:
        """``src`` is a synapse with no consumer yet (finish() checks none comes later)."""
        node, _ = self.staged[src]
        return (isinstance(node, (Affine, Linear, Conv2d)) and src not in self.folded
                and not any(src in v[1] for v in self.staged.values()))

    def finish(self) -> None:
        for src, neuron in self.folded.items():
            users = [k for k, v in self.staged.items() if src in v[1]]
            if len(users) != 1:
                raise self.unsupported(neuron, "constant current with a shared synapse",
                                       f"'{src}' also feeds {users}: a constant (v_leak or "
                                       "snnTorch's delayed reset) can only be folded into a "
                                       "synapse that feeds this neuron alone")

    @staticmethod
    def md_v_init(md: dict):
        v = md.get("snnc.v_init")
        return np.zeros(()) if v is None else _a(v)

    def reset_of(self, name: str, n, md: dict):
        conv = self.conv
        v_reset = _a(getattr(n, "v_reset", None) if getattr(n, "v_reset", None) is not None
                     else 0.0)
        v_init = self.md_v_init(md)
        floor = md.get("snnc.neg_floor")
        floor = None if floor is None or (np.ndim(floor) == 0 and not math.isfinite(float(floor))
                                          ) else float(floor)
        mode = conv.reset
        if mode == "metadata":
            r = _meta_str(md.get("snnc.reset")) or "hard"
            if r not in ("soft", "hard", "none"):
                raise FrontendError(f"{self.source}: node '{name}' has snnc.reset = {r!r}")
            return r, v_reset, v_init, floor
        if mode == "subtract":
            if conv.if_floor and isinstance(n, _nir().IF):
                floor = float(np.max(_a(n.v_threshold)))
                if not np.allclose(_a(n.v_threshold), floor):
                    self.note("sinabs floors each IF at -its threshold; the IR floor is one value "
                              "per layer (the largest threshold is used)")
            return "soft", np.zeros(()), v_init, floor
        if mode == "zero":
            return "hard", np.zeros(()), v_init, floor
        return "hard", v_reset, v_init, floor

    # --- the node map ---------------------------------------------------------------------------
    def convert(self, name: str, n, preds: list[str], top_io: tuple[set, set]) -> str | None:
        nir = _nir()
        ins, outs = top_io
        kind = type(n).__name__
        if not isinstance(n, (nir.Input, nir.Output)):
            name = self.readable(name, n)
        if isinstance(n, nir.Input):
            if name not in ins:            # a subgraph's input port: a pass-through
                return self.input_of(name, preds)
            shape = tuple(int(d) for d in _a(n.input_type["input"]).reshape(-1))
            if not shape or any(d <= 0 for d in shape):
                raise FrontendError(f"{self.source}: input '{name}' has shape {list(shape)}",
                                    "the NIR Input needs a static shape without the batch dim")
            iname = self.fresh(name)
            self.staged[iname] = [Input(shape), []]
            self.shapes[iname] = shape
            scale = self.meta.get("input_scale")
            if _meta_str(self.meta.get("snnc.stage")) == "folded" and scale is not None:
                # an exported chip graph takes payloads p = x * input_scale: restore that
                return self.add(f"{iname}_payload", Scale(np.asarray(float(_a(scale)))),
                                [iname], name)
            return iname
        md = getattr(n, "metadata", None) or {}
        if (isinstance(n, nir.Scale) and _meta_str(md.get("snnc.op")) == "Add"
                and np.all(_a(n.scale) == 1)):
            return self.input_of(name, preds, add_name=name)   # our Add junction
        x = self.input_of(name, preds)
        if isinstance(n, nir.Output):
            return x
        s = self.shapes[x]
        if isinstance(n, nir.Affine):
            w = _a(n.weight)
            if w.ndim != 2:
                raise self.unsupported(name, f"Affine with a {w.ndim}-D weight", "use [out, in]")
            return self.add(name, Affine(w, _a(n.bias).reshape(-1)), [x])
        if isinstance(n, nir.Linear):
            w = _a(n.weight)
            if w.ndim != 2:
                raise self.unsupported(name, f"Linear with a {w.ndim}-D weight", "use [out, in]")
            return self.add(name, Linear(w), [x])
        if isinstance(n, nir.Scale):
            sc = _a(n.scale)
            if sc.size == int(np.prod(s)):
                sc = sc.reshape(-1)
            return self.add(name, Scale(_compact(sc) if sc.size > 1 else sc.reshape(())), [x])
        if isinstance(n, nir.Conv2d):
            w = _a(n.weight)
            pad = n.padding
            k = w.shape[2:]
            dil = tuple(int(d) for d in np.broadcast_to(_a(n.dilation).astype(int), (2,)))
            if isinstance(pad, str):
                if pad == "valid":
                    pad = (0, 0)
                else:  # 'same' (stride 1): symmetric only for odd effective kernels
                    eff = [dil[i] * (k[i] - 1) for i in range(2)]
                    if any(e % 2 for e in eff):
                        raise self.unsupported(name, "Conv2d(padding='same') with an even kernel",
                                               "the chip pads symmetrically; use an odd kernel "
                                               "or explicit padding")
                    pad = (eff[0] // 2, eff[1] // 2)
            pad = tuple(int(p) for p in np.broadcast_to(_a(pad).astype(int), (2,)))
            stride = tuple(int(v) for v in np.broadcast_to(_a(n.stride).astype(int), (2,)))
            return self.add(name, Conv2d(w, _a(n.bias).reshape(-1), stride=stride, padding=pad,
                                         dilation=dil, groups=int(n.groups)), [x])
        if isinstance(n, (nir.AvgPool2d, nir.SumPool2d)):
            cls = SumPool2d if isinstance(n, nir.SumPool2d) else AvgPool2d
            two = lambda v: tuple(int(q) for q in np.broadcast_to(_a(v).astype(int), (2,)))  # noqa: E731
            return self.add(name, cls(two(n.kernel_size), two(n.stride), two(n.padding)), [x])
        if isinstance(n, nir.Flatten):
            if _meta_str(md.get("snnc.implicit")) == "flatten":
                return x
            a, b = int(n.start_dim), int(n.end_dim)
            declared = (n.input_type or {}).get("input")
            if declared is not None and _a(declared).size == len(s) + 1 or a >= len(s):
                a, b = a - 1, (b - 1 if b > 0 else b)   # a batch-inclusive start_dim (torch's)
            if not (0 <= a < max(len(s), 1)):
                raise self.unsupported(name, f"Flatten(start_dim={n.start_dim})",
                                       f"start_dim must index the input shape {list(s)}")
            return self.add(name, Flatten(a, b), [x])
        if isinstance(n, nir.IF):
            return self.neuron(name, n, x, spiking=True, leaky=False)
        if isinstance(n, nir.LIF):
            return self.neuron(name, n, x, spiking=True, leaky=True)
        if isinstance(n, nir.LI):
            return self.neuron(name, n, x, spiking=False, leaky=True)
        if isinstance(n, nir.I):
            return self.neuron(name, n, x, spiking=False, leaky=False)
        if isinstance(n, (nir.CubaLIF, nir.CubaLI)):
            return self.cuba(name, n, x)
        if isinstance(n, nir.Threshold):
            th = _compact(_a(n.threshold))
            self.note(f"stateless Threshold '{name}' as an LIF with beta = 0 (the chip's leak "
                      "quantization keeps a small residue)")
            return self.add(name, LIF(v_threshold=th, beta=np.zeros(()), reset_mode="none",
                                      dt=float(self.dt or 1.0)), [x])
        if isinstance(n, nir.Delay):
            if np.all(_a(n.delay) == 0):
                return x
            raise self.unsupported(name, "Delay",
                                   "the chip runs layers synchronously (route balances branch "
                                   "delays itself); only zero delays can be represented")
        raise self.unsupported(name, kind, "supported NIR nodes: Input, Output, Affine, Linear, "
                               "Scale, Conv2d, AvgPool2d, SumPool2d, Flatten, IF, LIF, LI, I, "
                               "Threshold, Delay (0), nested graphs; CubaLIF with cubalif='lif'")

    def cuba(self, name: str, n, x: str) -> str:
        nir = _nir()
        kind = type(n).__name__
        if self.cubalif != "lif":
            raise self.unsupported(name, kind, "the IR neuron has no synaptic current state: "
                                   "retrain with LIF (snnTorch Leaky, Norse LIFBox) or import with "
                                   "cubalif='lif' (--cubalif lif: the synaptic filter replaced by "
                                   "its DC gain; lossy)")
        from types import SimpleNamespace
        membrane = SimpleNamespace(                 # the membrane part, in LIF field names
            tau=n.tau_mem, r=n.r, v_leak=n.v_leak, v_threshold=getattr(n, "v_threshold", None),
            v_reset=getattr(n, "v_reset", None), metadata=getattr(n, "metadata", {}))
        w_in = _a(n.w_in)
        rule = self.conv.cuba
        if rule == "w_in":
            dc, how = w_in, "w_in"
        else:
            dt = self.need_dt(f"{kind} '{name}'")
            ts = self.tau(n.tau_syn)
            if rule == "tau_syn/dt":
                dc, how = w_in * ts / dt, "w_in * tau_syn / dt"
            else:
                a = np.exp(-dt / ts)
                dc, how = ((w_in * a / (1 - a), "w_in * exp(-dt/tau_syn) / (1 - exp(-dt/tau_syn))")
                           if rule == "exp_pre" else
                           (w_in / (1 - a), "w_in / (1 - exp(-dt/tau_syn))"))
        extra = (" Norse's LIFCell also feeds the membrane the synaptic current of the previous "
                 "step (one step of input delay, dropped here)." if self.conv.name == "norse"
                 else "")
        self.note(f"{kind} '{name}': the synaptic filter (tau_syn) is replaced by its DC gain "
                  f"{how} ({self.conv.producer}; --cubalif lif): the membrane sees each input "
                  f"at once instead of low-pass filtered, so spike timing differs.{extra}")
        dc = _compact(dc)
        if not np.allclose(dc, 1.0):
            x = self.add(f"{name}_w_in", Scale(dc), [x], name)
        spiking = isinstance(n, nir.CubaLIF)
        return self.neuron(name, membrane, x, spiking=spiking, leaky=True, kind=kind)


def _pick_convention(meta: dict, convention: str | None, where: str) -> Convention:
    producer = _meta_str(meta.get("producer"))
    if convention is None and producer == PRODUCER:
        convention = "snnc"
    if convention is None:               # a file annotated by hand (metadata['convention'])
        convention = _meta_str(meta.get("convention"))
    if convention is None:
        raise FrontendError(f"NIR file '{where}': no convention in its metadata", CONVENTION_HINT)
    if convention not in CONVENTIONS:
        raise FrontendError(f"NIR file '{where}': unknown NIR convention '{convention}'",
                            f"use one of {', '.join(CONVENTION_NAMES)}")
    return CONVENTIONS[convention]


def _time_constants(nodes: dict) -> tuple[list, list, list]:
    """(tau, r, tau_syn) arrays of every leaky neuron (LIF/LI: tau; CubaLIF/CubaLI: tau_mem)."""
    nir = _nir()
    taus, rs, syn = [], [], []
    for n in nodes.values():
        if isinstance(n, (nir.LIF, nir.LI)):
            taus.append(_a(n.tau))
            rs.append(_a(n.r))
        elif isinstance(n, (nir.CubaLIF, nir.CubaLI)):
            taus.append(_a(n.tau_mem))
            rs.append(_a(n.r))
            syn.append(_a(n.tau_syn))
    return taus, rs, syn


def _resolve_dt(conv: Convention, dt, meta: dict, nodes: dict, where: str):
    """(convention, dt, dt source, notes): --dt, metadata['dt'], the file's own encoding, default.

    Rockpool 3.1 carries dt only in r and Spyx 1.0 writes r = beta; both are read back here.
    A Spyx file without r = beta is a pre-1.0 one (convention 'spyx-0').
    """
    notes: list[str] = []
    dt = finite_dt(dt, f"NIR file '{where}': --dt")
    meta_dt = finite_dt(meta.get("dt"), f"NIR file '{where}': metadata['dt']")
    taus, rs, _ = _time_constants(nodes)
    from_file = None
    if conv.dt_from == "rockpool":
        from_file = rockpool_dt(taus, rs)
        if from_file is None and taus and not all(np.allclose(r, 1.0) for r in rs):
            notes.append("Rockpool writes dt into r (r = tau * exp(-dt/tau) / dt), but the "
                         "neurons' r give no common dt; the convention's default is used")
    elif conv.dt_from == "spyx":
        from_file = spyx_dt(taus, rs)
        if from_file is None and taus:
            conv = CONVENTIONS["spyx-0"]
            notes.append("the file's LIF r is not Spyx 1.0's r = beta: read with the rules of "
                         "Spyx before 1.0 (convention 'spyx-0': input gain dt/tau, immediate "
                         "subtraction)")
    if dt is not None:
        src = "--dt"
        if from_file is not None and abs(from_file - dt) > DT_RTOL * dt:
            notes.append(f"--dt {dt:g} overrides the dt {from_file:g} that the file's time "
                         f"constants encode ({conv.producer})")
    elif meta_dt is not None:
        dt, src = meta_dt, "metadata"
    elif from_file is not None:
        dt, src = from_file, f"the file ({conv.producer} encodes dt in r)"
    else:
        dt, src = conv.dt, "convention default"
    return conv, dt, src, notes


def from_nir_graph(g, where: str = "<nir>", dt: float | None = None,
                   convention: str | None = None, cubalif: str = "error") -> Graph:
    """Import an in-memory ``nir.NIRGraph`` (see :func:`import_nir`)."""
    if cubalif not in CUBALIF_MODES:
        raise FrontendError(f"unknown cubalif mode '{cubalif}'", f"use one of {CUBALIF_MODES}")
    meta = dict(getattr(g, "metadata", None) or {})
    nodes, edges, ins, outs = _flatten_graph(g, where=where)
    nir = _nir()
    dynamic = (nir.IF, nir.LIF, nir.LI, nir.I, nir.CubaLIF, nir.CubaLI, nir.Threshold)
    if convention is None and not any(isinstance(n, dynamic) for n in nodes.values()):
        convention = "nir"            # no neuron: nothing is left open
    conv = _pick_convention(meta, convention, where)
    checker = _Importer(where, conv, None, cubalif, meta)
    for k, n in nodes.items():             # malformed numbers first: dt detection reads them
        checker.check_fields(k, n)
    conv, dt, dt_source, notes = _resolve_dt(conv, dt, meta, nodes, where)
    if len(ins) != 1 or len(outs) != 1:
        raise FrontendError(f"NIR file '{where}': {len(ins)} inputs and {len(outs)} outputs at "
                            "the top level, expected one each")
    if len(set(edges)) != len(edges):
        log.warning("NIR file '%s': duplicate edges removed", where)
        edges = list(dict.fromkeys(edges))
    imp = _Importer(where, conv, dt, cubalif, meta)
    for msg in notes:
        imp.note(msg)
    imp.check_norse_tau(nodes)
    preds: dict[str, list[str]] = {k: [] for k in nodes}
    for s, d in edges:
        preds[d].append(s)
    ir_of: dict[str, str] = {}
    for name in _topo(nodes, edges, where):
        ir_of[name] = imp.convert(name, nodes[name], [ir_of[p] for p in preds[name]],
                                  (set(ins), set(outs)))
    imp.finish()
    out = Graph({"dt": float(dt if dt is not None else 1.0),
                 "nir": {"file": where, "convention": conv.name, "producer": conv.producer,
                         "dt": dt, "dt_source": dt_source, "lossy": list(imp.lossy)}})
    for name, (node, inputs) in imp.staged.items():
        out.add(name, node, inputs)
    src = ir_of[outs[0]]
    oname = _sanitize(outs[0]) if _sanitize(outs[0]) not in imp.staged else f"{outs[0]}_out"
    out.add(_sanitize(oname), Output(imp.shapes[src]), [src])
    _prune(out, where)
    verify(out, "imported")
    for msg in imp.lossy:
        log.warning("NIR import of '%s' (%s convention, %s): %s", where, conv.name,
                    conv.producer, msg)
    return out


def _prune(g: Graph, where: str) -> None:
    """Nodes that do not reach the Output (e.g. unused subgraph ports) are not allowed."""
    import networkx as nx
    keep = nx.ancestors(g.nx(), g.output_name) | {g.output_name}
    dead = [n for n in g.topo_order() if n not in keep]
    if dead:
        raise FrontendError(f"NIR file '{where}': nodes {dead} do not lead to the output",
                            "remove unused nodes from the NIR graph")


def import_nir(path, dt: float | None = None, convention: str | None = None,
               cubalif: str = "error", **_) -> Graph:
    """Read a ``.nir`` file into an imported-stage graph.

    Args:
        path: the file (or an in-memory ``nir.NIRGraph``).
        dt: the time step in seconds (or the unit of the file's time constants); default:
            ``metadata['dt']``, else the convention's default; required when neither gives one
            and the graph has time constants.
        convention: the producer: one of :data:`CONVENTION_NAMES` (module docstring). Files
            written by snnc (metadata producer = 'snnc') need none; others must name one.
        cubalif: 'error' (default) or 'lif' (documented lossy approximation).
    Returns:
        The Graph; ``attrs['nir']`` records the convention, dt and the lossy translations.
    Raises:
        FrontendError: unreadable file, missing dt/convention; UnsupportedOpError: a node with
        no IR form (named, with a suggestion).
    """
    nir = _nir()
    if isinstance(path, nir.NIRGraph):
        return from_nir_graph(path, "<nir>", dt, convention, cubalif)
    path = Path(path)
    if not path.is_file():
        raise FrontendError(f"model file {path} not found", "check the path")
    try:
        g = nir.read(str(path), type_check=False)
    except Exception as e:
        raise FrontendError(f"NIR file '{path.name}': {_read_problem(path)} "
                            f"({type(e).__name__}: {e})", _read_hint(path)) from e
    return from_nir_graph(g, path.name, dt, convention, cubalif)


def _is_nir_hdf5(path: Path) -> bool:
    try:
        import h5py
        with h5py.File(path, "r") as f:
            return "node" in f
    except Exception:
        return False


def _read_problem(path: Path) -> str:
    return ("a NIR file whose graph is malformed" if _is_nir_hdf5(path)
            else "not a readable NIR file")


def _read_hint(path: Path) -> str:
    if _is_nir_hdf5(path):
        return ("the HDF5 structure is NIR but the graph does not hold together (e.g. an edge "
                "to a node that does not exist): re-export it with the producer's exporter")
    return "a .nir file is HDF5 written by nir.write (groups 'version' and 'node')"
