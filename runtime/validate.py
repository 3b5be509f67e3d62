"""Image validation: everything a chip.bin must satisfy before the runtime touches it.

``compiler.backend.binfmt.read`` proves a file is intact (magic, version, bounds, CRCs); it
says nothing about whether the tables make sense, and a file whose CRCs were recomputed after
editing passes it. The Numba kernels index with the tables' values and do no bounds checks, so
this module checks every index, count, range and cross-table invariant they rely on, the
embedded ChipSpec with the same rules as ``compiler.chip.load_spec``, and a memory budget
before any table is allocated. ``docs/binfmt.md`` ("What a valid image guarantees to the
kernels") lists the guarantees; :func:`validate` checks them in that order.

Every failure is a :class:`~compiler.errors.BinaryFormatError` whose message names the file,
the section or META key, the entry, what was expected and what was found.
"""

from __future__ import annotations

import math
import os

import numpy as np

from compiler.backend import binfmt
from compiler.chip import HOST_CHIP, MAX_TIMESTEPS, ChipSpec, spec_from_dict
from compiler.errors import BinaryFormatError, SimulationError, SpecError
from compiler.passes.place import board_grid

#: Input shapes have at most this many dimensions.
MAX_INPUT_DIMS = 8

_HINT = "the file is inconsistent (edited, or written by a broken tool); recompile it with " \
        "`snnc compile`"
_NEURON = ("neu_th_pos", "neu_th_neg", "neu_v_reset", "neu_v_init", "neu_bias", "neu_leak",
           "neu_shift", "neu_mode", "neu_index")
_CORE = ("core_chip", "core_x", "core_y", "core_lcn", "core_layer", "core_tick_start",
         "core_xbar_rows")
_ROUTE = ("chip", "x", "y", "axon", "delay")


# ------------------------------------------------------------------------------------------
# memory budget


def memory_budget() -> int:
    """Bytes one image may need: ``SNNC_MEMORY_BUDGET`` (bytes, or with a K/M/G/T suffix) or
    three quarters of the machine's physical memory."""
    env = os.environ.get("SNNC_MEMORY_BUDGET", "").strip()
    if env:
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        unit = env[-1].upper()
        try:
            return int(float(env[:-1]) * mult[unit]) if unit in mult else int(env)
        except ValueError as e:
            raise SimulationError(f"SNNC_MEMORY_BUDGET={env!r} is not a byte count",
                                  "use e.g. 8G, 512M or a plain number of bytes") from e
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 3 // 4)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def run_bytes(image, batch: int, timesteps: int, workers: int) -> int:
    """Bytes a run of ``batch`` samples x ``timesteps`` steps with ``workers`` threads needs
    beyond the image's cached tables (workspaces and per-sample outputs)."""
    f = image.footprint
    per_sample = ((timesteps + image.latency) * 8 + f["links"] * 8 + image.n_cores * 8
                  + timesteps * image.n_inputs + f["n_out"] * 16 + len(image.layers) * 8 + 64)
    return int(f["workspace"] * max(workers, 1) + per_sample * max(batch, 1))


def check_run_budget(image, batch: int, timesteps: int, workers: int) -> None:
    """Refuse a run whose buffers would not fit the memory budget, before allocating them."""
    need = run_bytes(image, batch, timesteps, workers) + image.footprint["tables"]
    budget = memory_budget()
    if need > budget:
        raise SimulationError(
            f"{image.path}: a run of {batch} samples x {timesteps} steps on {workers} workers "
            f"needs about {_gib(need)}, more than the memory budget of {_gib(budget)}",
            "use a smaller --batch, fewer --workers or fewer --timesteps, or raise "
            "SNNC_MEMORY_BUDGET")


# ------------------------------------------------------------------------------------------
# the checks


class _Checker:
    def __init__(self, image):
        self.img = image
        self.src = image.path

    def bad(self, what: str, hint: str = _HINT) -> BinaryFormatError:
        return BinaryFormatError(f"{self.src}: {what}", hint)

    # --- META ------------------------------------------------------------------------------
    def obj(self, d, key: str, where: str) -> dict:
        if not isinstance(d, dict) or key not in d:
            raise self.bad(f"META {where}: missing key '{key}'")
        v = d[key]
        if not isinstance(v, dict):
            raise self.bad(f"META {where}.{key}: expected an object, got {type(v).__name__}")
        return v

    def int_(self, d, key: str, where: str, lo: int, hi: int) -> int:
        if key not in d:
            raise self.bad(f"META {where}: missing key '{key}'")
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.bad(f"META {where}.{key}: expected an integer, got {v!r:.60}")
        if not lo <= v <= hi:
            raise self.bad(f"META {where}.{key} = {v}: expected {lo}..{hi}")
        return v

    def str_(self, d, key: str, where: str) -> str:
        if key not in d:
            raise self.bad(f"META {where}: missing key '{key}'")
        v = d[key]
        if not isinstance(v, str) or not v or len(v) > 4096:
            raise self.bad(f"META {where}.{key}: expected a non-empty string, got {v!r:.60}")
        return v

    def list_(self, d, key: str, where: str, n: int | None = None) -> list:
        if key not in d:
            raise self.bad(f"META {where}: missing key '{key}'")
        v = d[key]
        if not isinstance(v, list):
            raise self.bad(f"META {where}.{key}: expected a list, got {type(v).__name__}")
        if n is not None and len(v) != n:
            raise self.bad(f"META {where}.{key}: expected {n} entries, got {len(v)}")
        return v

    def ints(self, v: list, where: str, lo: int, hi: int) -> np.ndarray:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self.bad(f"META {where}: expected a list of integers")
        if v and (min(v) < lo or max(v) > hi):
            i = next(i for i, x in enumerate(v) if not lo <= x <= hi)
            raise self.bad(f"META {where}[{i}] = {v[i]}: expected {lo}..{hi}")
        return np.array(v, dtype=np.int64)

    def floats(self, v: list, where: str, positive: bool) -> None:
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) \
                    or (positive and x <= 0):
                raise self.bad(f"META {where}[{i}] = {x!r:.40}: expected a finite "
                               f"{'positive ' if positive else ''}number")

    def meta(self) -> ChipSpec:
        m = self.img.meta
        sd = self.obj(m, "spec", "")
        try:
            spec = spec_from_dict(sd, f"{self.src}: META spec", complete=True)
        except SpecError as e:
            raise self.bad(e.message, "the chip spec stored in the file is invalid; recompile "
                                      "with a valid --chip") from e
        if spec.digest() != self.img.spec_digest:
            raise self.bad("META spec does not match the header's spec digest (stored "
                           f"{self.img.spec_digest[:16]}..., META hashes to "
                           f"{spec.digest()[:16]}...)")
        board = self.obj(m, "board", "")
        chips = self.int_(board, "chips", "board", 1, spec.max_chips)
        grid = self.ints(self.list_(board, "grid", "board", 2), "board.grid", 1, spec.max_chips)
        if tuple(grid.tolist()) != board_grid(chips):
            raise self.bad(f"META board.grid = {grid.tolist()}: a board of {chips} chips has "
                           f"the grid {list(board_grid(chips))}")
        inp = self.obj(m, "input", "")
        self.str_(inp, "name", "input")
        shape = self.ints(self.list_(inp, "shape", "input"), "input.shape", 1, 1 << 32)
        if not 1 <= shape.size <= MAX_INPUT_DIMS:
            raise self.bad(f"META input.shape has {shape.size} dimensions, expected "
                           f"1..{MAX_INPUT_DIMS}")
        size = self.int_(inp, "size", "input", 1, 1 << 32)
        if math.prod(shape.tolist()) != size:
            raise self.bad(f"META input.size = {size} is not the product of input.shape "
                           f"{shape.tolist()}")
        if "scale" not in inp:
            raise self.bad("META input: missing key 'scale'")
        self.floats([inp["scale"]], "input.scale", True)
        self.int_(m, "timesteps", "", 1, MAX_TIMESTEPS)
        from compiler.encoding import ALIASES, ENCODINGS
        enc = self.str_(m, "encoding", "")
        if enc not in ENCODINGS and enc not in ALIASES:
            raise self.bad(f"META encoding '{enc:.40}' is not one of "
                           f"{sorted(ENCODINGS + tuple(ALIASES))}")
        self.int_(m, "latency", "", 0, 0xFFFF)
        layers = self.list_(m, "layers", "")
        if not layers:
            raise self.bad("META layers is empty")
        if len(layers) > 0xFFFF:
            raise self.bad(f"META layers has {len(layers)} entries, more than core_layer "
                           "(u16) can index")
        out = self.obj(m, "output", "")
        self.str_(out, "layer", "output")
        self.int_(out, "neurons", "output", 1, 1 << 32)
        for k in ("quant", "calibration", "source", "options"):
            if k in m and not isinstance(m[k], dict):
                raise self.bad(f"META {k}: expected an object, got {type(m[k]).__name__}")
        return spec

    def layer_table(self) -> tuple[dict, np.ndarray, np.ndarray]:
        """-> (name -> index, neurons per layer, depth per layer)."""
        m = self.img.meta
        inp = m["input"]["name"]
        index: dict[str, int] = {}
        neurons, depth = [], []
        widths = self.img.spec.weight_widths
        for i, L in enumerate(m["layers"]):
            w = f"layers[{i}]"
            if not isinstance(L, dict):
                raise self.bad(f"META {w}: expected an object, got {type(L).__name__}")
            name = self.str_(L, "name", w)
            if name in index or name == inp:
                raise self.bad(f"META {w}.name '{name:.40}' is used twice")
            n = self.int_(L, "neurons", w, 1, 1 << 32)
            shape = self.ints(self.list_(L, "shape", w), f"{w}.shape", 1, 1 << 32)
            if not 1 <= shape.size <= MAX_INPUT_DIMS or math.prod(shape.tolist()) != n:
                raise self.bad(f"META {w}.shape {shape.tolist()} does not hold its {n} neurons")
            bits = self.int_(L, "bits", w, 1, 8)
            if bits not in widths:
                raise self.bad(f"META {w}.bits = {bits}: not a weight width of the chip "
                               f"{list(widths)}")
            srcs = self.list_(L, "sources", w)
            if not srcs:
                raise self.bad(f"META {w}.sources is empty")
            d = 0
            for j, s in enumerate(srcs):
                if not isinstance(s, str) or (s != inp and s not in index):
                    raise self.bad(f"META {w}.sources[{j}] = {s!r:.40}: not the input or an "
                                   "earlier layer")
                d = max(d, 0 if s == inp else depth[index[s]])
            if len(set(srcs)) != len(srcs):
                raise self.bad(f"META {w}.sources lists a source twice")
            dep = self.int_(L, "depth", w, 1, 0xFFFF + 1)
            if dep != d + 1:
                raise self.bad(f"META {w}.depth = {dep}: its sources give depth {d + 1}")
            self.ints(self.list_(L, "cores", w), f"{w}.cores", 0, 1 << 32)
            index[name] = i
            neurons.append(n)
            depth.append(dep)
        out = m["output"]
        if out["layer"] not in index:
            raise self.bad(f"META output.layer '{out['layer']:.40}' is not a layer")
        oi = index[out["layer"]]
        if out["neurons"] != neurons[oi]:
            raise self.bad(f"META output.neurons = {out['neurons']}: layer '{out['layer']}' "
                           f"has {neurons[oi]}")
        if m["latency"] != depth[oi] - 1:
            raise self.bad(f"META latency = {m['latency']}: the output layer's depth gives "
                           f"{depth[oi] - 1}")
        self.ints(self.list_(out, "global", "output", neurons[oi]), "output.global", 0,
                  (1 << 32) - 1)
        self.floats(self.list_(out, "scale", "output", neurons[oi]), "output.scale", True)
        return index, np.array(neurons, np.int64), np.array(depth, np.int64)

    # --- sections --------------------------------------------------------------------------
    def sections(self) -> None:
        a = self.img.a
        # the op_* descriptor sections (format 1.1) are optional: older images run without them
        missing = [k for k in binfmt.SECTIONS
                   if k != "meta" and not k.startswith("op_") and k not in a]
        if missing:
            raise self.bad(f"section '{missing[0]}' is missing"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        for k, v in a.items():
            if k == "op_table":       # descriptors: [ops, columns]; layerdesc decodes the rest
                from compiler.backend.layerdesc import COLS
                if v.ndim != 2 or v.shape[1] != len(COLS):
                    raise self.bad(f"section 'op_table': shape {list(v.shape)}, expected "
                                   f"[ops, {len(COLS)}]")
                continue
            if v.ndim != 1:
                raise self.bad(f"section '{k}': shape {list(v.shape)}, expected one dimension")

    def prefix(self, name: str, n: int, total: int | None, what: str) -> np.ndarray:
        b = self.img.a[name].astype(np.int64)
        if b.size != n + 1:
            raise self.bad(f"section '{name}' has {b.size} entries, expected {n + 1} ({what} + 1)")
        if b[0] != 0:
            raise self.bad(f"section '{name}'[0] = {b[0]}, expected 0")
        d = np.diff(b)
        if np.any(d < 0):
            i = int(np.argmax(d < 0))
            raise self.bad(f"section '{name}' decreases at entry {i + 1} ({b[i]} -> {b[i + 1]})")
        if total is not None and b[-1] != total:
            raise self.bad(f"section '{name}' ends at {b[-1]}, expected {total}")
        return b

    def size_is(self, name: str, n: int, what: str) -> None:
        if self.img.a[name].size != n:
            raise self.bad(f"section '{name}' has {self.img.a[name].size} entries, expected "
                           f"{n} ({what})")

    def in_range(self, name: str, arr: np.ndarray, lo: int, hi: int, what: str = "") -> None:
        if arr.size and (arr.min() < lo or arr.max() > hi):
            i = int(np.argmax((arr < lo) | (arr > hi)))
            raise self.bad(f"section '{name}' entry {i} = {int(arr[i])}: expected {lo}..{hi}"
                           + (f" ({what})" if what else ""))

    def run(self) -> dict:
        img, a, m = self.img, self.img.a, self.img.meta
        self.sections()
        spec = self.meta()
        img.__dict__["spec"] = spec
        lidx, lneu, ldep = self.layer_table()
        n_layers = len(lneu)

        # cores
        C = a["core_w"].size
        for k in _CORE:
            self.size_is(k, C, "one per core")
        if C == 0:
            raise self.bad("the image has no cores")
        if C > spec.max_chips * spec.cores_per_chip:
            raise self.bad(f"{C} cores, more than the {spec.max_chips * spec.cores_per_chip} "
                           "of the largest board")
        nb = self.prefix("core_neuron_base", C, None, "cores")
        N = int(nb[-1])
        for k in _NEURON:
            self.size_is(k, N, f"core_neuron_base gives {N} neurons")
        w = a["core_w"].astype(np.int64)
        lcn = a["core_lcn"].astype(np.int64)
        bad_w = ~np.isin(w, spec.weight_widths)
        if bad_w.any():
            c = int(np.argmax(bad_w))
            raise self.bad(f"section 'core_w' entry {c} = {w[c]}: not a weight width of the "
                           f"chip {list(spec.weight_widths)}")
        self.in_range("core_lcn", lcn, 0, spec.max_lcn, "max_lcn")
        nn = np.diff(nb)
        cap_n = spec.xbar_cols // (w << lcn)
        if np.any(nn > cap_n):
            c = int(np.argmax(nn > cap_n))
            raise self.bad(f"section 'core_neuron_base': core {c} has {nn[c]} neurons, more than "
                           f"its capacity {cap_n[c]} "
                           f"(w={w[c]}, LCN={lcn[c]})")
        ab = self.prefix("core_axon_base", C, None, "cores")
        na = np.diff(ab)
        cap_a = spec.xbar_rows << lcn
        if np.any(na > cap_a):
            c = int(np.argmax(na > cap_a))
            raise self.bad(f"section 'core_axon_base': core {c} has {na[c]} axons, more than its "
                           f"capacity {cap_a[c]} "
                           f"(LCN={lcn[c]})")
        A = int(ab[-1])
        n_in = m["input"]["size"]
        # every axon has exactly one source route entry (checked below): bound A by the entries
        # the file holds before anything of size A is allocated
        R, E_in = a["rt_axon"].size, a["in_rt_axon"].size
        if A > R + E_in:
            raise self.bad(f"core_axon_base declares {A} axons but the file holds only "
                           f"{R + E_in} route entries (each axon needs one)")
        rows = np.minimum(na, spec.xbar_rows)
        if np.any(a["core_xbar_rows"] != rows):
            c = int(np.argmax(a["core_xbar_rows"] != rows))
            raise self.bad(f"section 'core_xbar_rows' entry {c} = {a['core_xbar_rows'][c]}: "
                           f"core {c}'s {na[c]} axons need {rows[c]} rows")
        xb = self.prefix("core_xbar_base", C, a["xbar"].size, "cores")
        if np.any(np.diff(xb) != rows * (spec.xbar_cols // 8)):
            c = int(np.argmax(np.diff(xb) != rows * (spec.xbar_cols // 8)))
            raise self.bad(f"section 'core_xbar_base': core {c} holds {np.diff(xb)[c]} bytes, "
                           f"its {rows[c]} rows need {rows[c] * (spec.xbar_cols // 8)}")

        # placement and board
        chips = m["board"]["chips"]
        self.in_range("core_chip", a["core_chip"], 0, chips - 1, f"board of {chips} chips")
        self.in_range("core_x", a["core_x"], 0, spec.mesh_x - 1, "mesh_x")
        self.in_range("core_y", a["core_y"], 0, spec.mesh_y - 1, "mesh_y")
        key = (a["core_chip"].astype(np.int64) << 16) | (a["core_x"].astype(np.int64) << 8) \
            | a["core_y"]
        uk, first, cnt = np.unique(key, return_index=True, return_counts=True)
        if np.any(cnt > 1):
            k = int(uk[np.argmax(cnt > 1)])
            dup = np.flatnonzero(key == k)[:2].tolist()
            raise self.bad(f"cores {dup[0]} and {dup[1]} share chip {k >> 16} core "
                           f"({(k >> 8) & 255}, {k & 255})")

        # layers and neurons
        layer = a["core_layer"].astype(np.int64)
        self.in_range("core_layer", layer, 0, n_layers - 1, f"META has {n_layers} layers")
        for li, L in enumerate(m["layers"]):
            mine = np.flatnonzero(layer == li)
            if sorted(L["cores"]) != mine.tolist():
                raise self.bad(f"META layers[{li}].cores = {L['cores'][:8]} disagrees with "
                               f"core_layer (cores {mine[:8].tolist()})")
            if mine.size == 0:
                raise self.bad(f"META layer '{L['name']}' has no cores")
            if np.any(w[mine] != L["bits"]):
                c = int(mine[np.argmax(w[mine] != L["bits"])])
                raise self.bad(f"core {c} has weight width {w[c]}, its layer '{L['name']}' "
                               f"{L['bits']}")
        ts = a["core_tick_start"].astype(np.int64)
        want_ts = ldep[layer] - 1
        if np.any(ts != want_ts):
            c = int(np.argmax(ts != want_ts))
            raise self.bad(f"section 'core_tick_start' entry {c} = {ts[c]}: its layer's depth "
                           f"gives {want_ts[c]}")
        core_of_n = np.repeat(np.arange(C), nn)
        nlayer = layer[core_of_n]
        idx = a["neu_index"].astype(np.int64)
        lim = lneu[nlayer]
        if np.any(idx >= lim):
            i = int(np.argmax(idx >= lim))
            raise self.bad(f"section 'neu_index' entry {i} = {idx[i]}: its layer has "
                           f"{lim[i]} neurons")
        loff = np.concatenate([[0], np.cumsum(lneu)])
        if int(loff[-1]) != N:
            raise self.bad(f"META layers hold {int(loff[-1])} neurons, the cores {N}")
        seen = np.bincount(loff[nlayer] + idx, minlength=N)
        if np.any(seen != 1):
            g = int(np.argmax(seen != 1))
            li = int(np.searchsorted(loff, g, side="right") - 1)
            raise self.bad(f"neuron {g - loff[li]} of layer '{m['layers'][li]['name']}' is on "
                           f"{seen[g]} cores (expected exactly 1)")
        self.registers(spec)

        # routes
        rb = self.prefix("neu_route_base", N, R, "neurons")
        self.prefix("in_route_base", n_in, E_in, "inputs")
        for pre, n_e in (("rt_", R), ("in_rt_", E_in)):
            for k in _ROUTE:
                self.size_is(pre + k, n_e, f"{pre}axon has {n_e} entries")
            d = a[pre + "delay"]
            self.in_range(pre + "delay", d, 1, spec.max_delay, "1..max_delay")
        ent = np.diff(rb)
        per_core = np.bincount(core_of_n, weights=ent, minlength=C).astype(np.int64)
        if np.any(per_core > spec.route_entries):
            c = int(np.argmax(per_core > spec.route_entries))
            raise self.bad(f"core {c} uses {per_core[c]} route entries, more than the chip's "
                           f"{spec.route_entries}")
        n_out = m["output"]["neurons"]
        gax = resolve(img, "rt_", self.bad)
        igax = resolve(img, "in_rt_", self.bad)
        img.__dict__["gaxon"], img.__dict__["in_gaxon"] = gax, igax
        src = np.bincount(gax[gax >= 0], minlength=A) + np.bincount(igax, minlength=A)
        if np.any(src != 1):
            ax = int(np.argmax(src != 1))
            core = int(np.searchsorted(ab, ax, side="right") - 1)
            raise self.bad(f"core {core} axon {ax - ab[core]} is fed by {int(src[ax])} route "
                           "entries (expected exactly 1)")
        # delays balance every path (layer-synchronous semantics = compiler.reference)
        core_of_ax = np.repeat(np.arange(C), na)
        src_n = np.repeat(np.arange(N), ent)
        sdep = ldep[nlayer[src_n]]
        host = gax < 0
        dst_core = np.zeros(R, np.int64)
        dst_core[~host] = core_of_ax[gax[~host]]
        ddep = np.where(host, sdep + 1, ldep[layer[dst_core]])
        want = ddep - sdep
        bad_d = a["rt_delay"].astype(np.int64) != want
        if np.any(bad_d):
            e = int(np.argmax(bad_d))
            raise self.bad(f"section 'rt_delay' entry {e} = {a['rt_delay'][e]}: the depths of "
                           f"its source and destination layers give {want[e]}")
        iwant = ldep[layer[core_of_ax[igax]]]
        bad_d = a["in_rt_delay"].astype(np.int64) != iwant
        if np.any(bad_d):
            e = int(np.argmax(bad_d))
            raise self.bad(f"section 'in_rt_delay' entry {e} = {a['in_rt_delay'][e]}: the "
                           f"depth of its destination layer gives {iwant[e]}")
        # an axon's source is one of its layer's sources (else unmap() drops the weights)
        pop = np.full(A, -2, np.int64)
        pop[gax[~host]] = nlayer[src_n[~host]]
        pop[igax] = -1
        names = [L["name"] for L in m["layers"]]
        allowed = {(li, -1 if s == m["input"]["name"] else lidx[s])
                   for li, L in enumerate(m["layers"]) for s in L["sources"]}
        pairs = np.unique(np.stack([layer[core_of_ax], pop], axis=1), axis=0) if A else []
        for dl, sl in (tuple(p) for p in np.asarray(pairs).tolist()):
            if (dl, sl) not in allowed:
                sname = "the input" if sl < 0 else f"layer '{names[sl]}'"
                raise self.bad(f"layer '{names[dl]}' receives spikes from {sname}, which is not "
                               "among its META sources")
        # output: the readout neurons and the host routes agree
        out_layer = lidx[m["output"]["layer"]]
        og = np.array(m["output"]["global"], np.int64)
        if np.any(og >= N):
            k = int(np.argmax(og >= N))
            raise self.bad(f"META output.global[{k}] = {og[k]}: the image has {N} neurons")
        if np.any(nlayer[og] != out_layer) or np.any(idx[og] != np.arange(n_out)):
            k = int(np.argmax((nlayer[og] != out_layer) | (idx[og] != np.arange(n_out))))
            raise self.bad(f"META output.global[{k}] = {og[k]} is not neuron {k} of the output "
                           f"layer '{m['output']['layer']}'")
        hk = -1 - gax[host]
        hsrc = src_n[host]
        if hk.size != n_out or np.any(np.bincount(hk, minlength=n_out) != 1) \
                or np.any(og[hk] != hsrc):
            raise self.bad("the host routes do not send each output neuron k to output k "
                           "exactly once")

        # memory: what tables() and one worker's workspace will allocate
        cw, ch = board_grid(chips)
        n_links = cw * spec.mesh_x * ch * spec.mesh_y * 4
        chip_ = a["core_chip"].astype(np.int64)
        X = (chip_ % cw) * spec.mesh_x + a["core_x"]
        Y = (chip_ // cw) * spec.mesh_y + a["core_y"]
        sc = core_of_n[src_n]
        dc = np.where(host, sc, dst_core)
        up = np.unique(sc * (C + 1) + np.where(host, C, dc))
        ps, pd = up // (C + 1), np.minimum(up % (C + 1), C - 1)
        path = int(np.sum(np.abs(X[ps] - X[pd]) + np.abs(Y[ps] - Y[pd])))
        P = max(up.size, 1)
        dense = int(np.sum(nn * na))
        big = int(np.max(rows * spec.xbar_cols + na * nn * (w * 8 + 16)))
        tables = (dense + A * 4 * 8 + (R + E_in) * 6 * 8 + N * 11 * 8 + P * 24 + path * 8
                  + (n_in + 1) * 8 + big)
        workspace = (spec.axon_slots * (A + 1) * 5 + spec.axon_slots * C * 4 + N * 16 + P * 16
                     + n_links * 16)
        fp = {"tables": int(tables), "workspace": int(workspace), "links": int(n_links),
              "n_out": int(n_out)}
        img.__dict__["footprint"] = fp
        need = run_bytes(img, 1, m["timesteps"], 1) + fp["tables"]
        budget = memory_budget()
        if need > budget:
            raise self.bad(f"running this image needs about {_gib(need)} (tables "
                           f"{_gib(fp['tables'])}, {n_links} board links, {A} axons x "
                           f"{spec.axon_slots} slots), more than the memory budget of "
                           f"{_gib(budget)}",
                           "raise SNNC_MEMORY_BUDGET if the machine really has the memory")
        return fp

    def registers(self, spec: ChipSpec) -> None:
        a = self.img.a
        mode = a["neu_mode"].astype(np.int64)
        self.in_range("neu_mode", mode >> 5, 0, 0, "bits 5-7 are reserved")
        rmode, lmode = mode & 3, (mode >> 3) & 3
        self.in_range("neu_mode", rmode, 0, 2, "reset mode: 0 hard, 1 soft, 2 none")
        vlo, vhi = spec.membrane_range
        blo, bhi = spec.bias_range
        for name, lo, hi in (("neu_th_pos", 1, spec.threshold_max),
                             ("neu_th_neg", 0, spec.threshold_max),
                             ("neu_v_reset", vlo, vhi), ("neu_v_init", vlo, vhi),
                             ("neu_bias", blo, bhi),
                             ("neu_shift", 0, (1 << spec.shift_bits) - 1)):
            self.in_range(name, a[name].astype(np.int64), lo, hi, f"{spec.name} register range")
        leak = a["neu_leak"].astype(np.int64)
        llo, lhi = spec.leak_range
        self.in_range("neu_leak", np.where(lmode == 1, leak, 0), llo, lhi, "ADD leak range")
        self.in_range("neu_leak", np.where(lmode == 3, leak, 0), 0, (1 << spec.mult_bits) - 1,
                      "MULT decay range")


def resolve(image, pre: str, bad) -> np.ndarray:
    """Route entries ``pre*`` -> global destination axon, or -1-k for host output k.

    Checks that each entry names a core of the image (or the host) and an axon of that core,
    that host entries name an output index and input entries never target the host.
    """
    a = image.a
    key = (a["core_chip"].astype(np.int64) << 16) | (a["core_x"].astype(np.int64) << 8) \
        | a["core_y"]
    order = np.argsort(key, kind="stable")
    sk = key[order]
    chip = a[pre + "chip"].astype(np.int64)
    host = chip == HOST_CHIP
    name = pre + "axon"
    if pre == "in_rt_" and np.any(host):
        raise bad(f"section 'in_rt_chip' entry {int(np.argmax(host))} targets the host "
                  "(input routes must end on a core)")
    q = (chip << 16) | (a[pre + "x"].astype(np.int64) << 8) | a[pre + "y"]
    pos = np.minimum(np.searchsorted(sk, q), sk.size - 1)
    found = sk[pos] == q
    if np.any(~found & ~host):
        e = int(np.argmax(~found & ~host))
        raise bad(f"section '{pre}chip' entry {e} names chip {chip[e]} core "
                  f"({a[pre + 'x'][e]}, {a[pre + 'y'][e]}), which holds no core")
    if np.any(host & ((a[pre + "x"] != 0) | (a[pre + "y"] != 0))):
        e = int(np.argmax(host & ((a[pre + "x"] != 0) | (a[pre + "y"] != 0))))
        raise bad(f"section '{pre}x'/'{pre}y' entry {e}: a host route must have core (0, 0)")
    core = np.where(host, 0, order[pos])
    ax = a[name].astype(np.int64)
    n_ax = np.diff(a["core_axon_base"].astype(np.int64))
    over = ~host & (ax >= n_ax[core])
    if np.any(over):
        e = int(np.argmax(over))
        raise bad(f"section '{name}' entry {e} = {ax[e]}: core {int(core[e])} has "
                  f"{int(n_ax[core[e]])} axons")
    n_out = len(image.meta["output"]["global"])
    if np.any(host & (ax >= n_out)):
        e = int(np.argmax(host & (ax >= n_out)))
        raise bad(f"section '{name}' entry {e} = {ax[e]}: a host route names an output index, "
                  f"the output layer has {n_out}")
    g = a["core_axon_base"].astype(np.int64)[core] + ax
    return np.where(host, -1 - ax, g)


def validate(image) -> dict:
    """Check a freshly read :class:`~runtime.image.ChipImage`; returns its memory footprint
    (``tables``, ``workspace`` per worker, ``links``, ``n_out``).

    Raises:
        BinaryFormatError: naming the file, the section or META key and the broken rule.
    """
    return _Checker(image).run()


__all__ = ["validate", "resolve", "memory_budget", "run_bytes", "check_run_budget",
           "MAX_TIMESTEPS"]
