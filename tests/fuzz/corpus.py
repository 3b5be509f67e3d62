"""Crafted chip.bin files: a small valid image and checksum-valid hostile variants of it.

Every variant is written with the project's own writer (``binfmt.to_bytes`` / ``binfmt._pack``),
so its CRCs are correct and only the runtime validator (``runtime/validate.py``) stands between
it and the kernels. ``CASES`` maps a case name to (mutation, a word the refusal must contain).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from functools import lru_cache

import numpy as np

from compiler import compile_model
from compiler.backend import binfmt
from compiler.chip import HOST_CHIP, PICORE64

#: a small chip so the base image spans several cores on two chips
TINY = dataclasses.replace(PICORE64, name="tiny", mesh_x=2, mesh_y=2, xbar_rows=64,
                           xbar_cols=128, max_chips=4)


@lru_cache(maxsize=1)
def _base():
    from factories import make_mlp
    prog = compile_model(make_mlp((80, 48, 20, 6), seed=3, lif=True), TINY, bits=4, chips=2,
                         timesteps=4)
    return prog.sections(), prog.spec.digest()


def base_sections() -> tuple[dict, str]:
    """(sections with 'meta' as a dict, spec digest) of the valid base image, fresh copies."""
    sec, dig = _base()
    out = {k: (copy.deepcopy(v) if k == "meta" else np.array(v)) for k, v in sec.items()}
    return out, dig


def spec_digest(d: dict) -> str:
    """The header digest a hostile writer would compute for META spec ``d`` (ChipSpec.digest)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def to_bytes(sec: dict, digest: str | None = None) -> bytes:
    """Checksum-valid bytes; the digest follows META's spec unless given."""
    if digest is None:
        digest = spec_digest(sec["meta"]["spec"]) if isinstance(sec["meta"].get("spec"), dict) \
            else "00" * 32
    return binfmt.to_bytes(sec, digest)


# --- mutations: each takes and returns a sections dict ---------------------------------------

def _set(name, i, v):
    def f(s):
        a = s[name].astype(np.int64)
        a[i] = v
        s[name] = a.astype(s[name].dtype)
        return s
    return f


def _meta(path, v):
    def f(s):
        d = s["meta"]
        for k in path[:-1]:
            d = d[k]
        if v is _DEL:
            del d[path[-1]]
        else:
            d[path[-1]] = v
        return s
    return f


def _spec(k, v):
    return _meta(("spec", k), v)


_DEL = object()


def _drop(name):
    def f(s):
        del s[name]
        return s
    return f


def _host_entry(s):
    return int(np.flatnonzero(s["rt_chip"] == HOST_CHIP)[0])


def _host_axon_past_output(s):
    e = _host_entry(s)
    s["rt_axon"][e] = s["meta"]["output"]["neurons"]
    return s


def _output_global_short(s):
    s["meta"]["output"]["global"] = s["meta"]["output"]["global"][:-1]
    return s


def _grid(g):
    return _meta(("board", "grid"), g)


def _dup_axon(s):
    e = int(np.flatnonzero(s["rt_chip"] != HOST_CHIP)[1])
    for k in ("rt_chip", "rt_x", "rt_y", "rt_axon"):
        s[k][e] = s[k][e - 1]
    return s


def _same_slot(s):
    for k in ("core_chip", "core_x", "core_y"):
        s[k][1] = s[k][0]
    return s


def _neu_index_dup(s):
    s["neu_index"][1] = s["neu_index"][0]
    return s


def _axons_huge(s):
    s["core_axon_base"][-1] = 2**32 - 1
    return s


def _route_base_decreasing(s):
    s["neu_route_base"][2] = s["neu_route_base"][1] - 1 if s["neu_route_base"][1] else 5
    return s


def _two_d(s):
    s["core_w"] = s["core_w"].reshape(1, -1)
    return s


def _input_to_host(s):
    s["in_rt_chip"][0] = HOST_CHIP
    return s


def _route_to_nowhere(s):
    e = int(np.flatnonzero(s["rt_chip"] != HOST_CHIP)[0])
    s["rt_chip"][e] = 3
    return s


def _rt_delay_off(s):
    e = int(np.flatnonzero(s["rt_chip"] != HOST_CHIP)[0])
    s["rt_delay"][e] += 1
    return s


def _layer_cores(s):
    s["meta"]["layers"][0]["cores"] = s["meta"]["layers"][0]["cores"][1:]
    return s


def _mult_leak(s):
    s["neu_mode"][0] = (3 << 3) | (s["neu_mode"][0] & 7)
    s["neu_leak"][0] = 5000
    return s


def _layer_source(s):
    s["meta"]["layers"][1]["sources"] = ["nope"]
    return s


def _layer_depth(s):
    s["meta"]["layers"][1]["depth"] += 1
    return s


CASES: dict = {
    # indices the kernels follow (the memory corruptions)
    "core_layer_past_layers": (_set("core_layer", 0, 7), "core_layer"),
    "host_route_past_output": (_host_axon_past_output, "output"),
    "output_global_short": (_output_global_short, "output.global"),
    "grid_0x0": (_grid([0, 0]), "board.grid"),
    "grid_too_small": (_grid([1, 1]), "board.grid"),
    "grid_huge": (_grid([100000, 100000]), "board.grid"),
    "chips_huge": (_meta(("board", "chips"), 100000), "board.chips"),
    "core_chip_off_board": (_set("core_chip", 0, 2), "core_chip"),
    "core_x_off_mesh": (_set("core_x", 0, 2), "core_x"),
    "two_cores_one_slot": (_same_slot, "share"),
    "axons_declared_huge": (_axons_huge, "core_axon_base"),
    "axon_fed_twice": (_dup_axon, "fed by"),
    "route_to_missing_core": (_route_to_nowhere, "holds no core"),
    "rt_axon_past_core": (_set("rt_axon", 0, 60000), "rt_axon"),
    "input_route_to_host": (_input_to_host, "host"),
    "route_base_decreasing": (_route_base_decreasing, "neu_route_base"),
    "neuron_base_past_sections": (_set("core_neuron_base", -1, 10**6), "neu_"),
    "xbar_base_wrong": (_set("core_xbar_base", 1, 3), "core_xbar_base"),
    "xbar_rows_wrong": (_set("core_xbar_rows", 0, 1), "core_xbar_rows"),
    "neu_index_duplicate": (_neu_index_dup, "exactly 1"),
    "neu_index_huge": (_set("neu_index", 0, 2**32 - 1), "neu_index"),
    "section_two_dims": (_two_d, "one dimension"),
    "section_missing": (_drop("neu_bias"), "neu_bias"),
    # the embedded chip spec (load_spec's rules)
    "spec_axon_slots_0": (_spec("axon_slots", 0), "axon_slots"),
    "spec_axon_slots_2": (_spec("axon_slots", 2), "max_delay"),
    "spec_max_delay_40": (_spec("max_delay", 40), "max_delay"),
    "spec_widths_3": (_spec("weight_widths", [3]), "weight_widths"),
    "spec_membrane_64": (_spec("membrane_bits", 64), "membrane_bits"),
    "spec_event_cycles_0": (_spec("event_cycles", 0), "event_cycles"),
    "spec_hop_cycles_huge": (_spec("hop_cycles", 2**62), "hop_cycles"),
    "spec_threshold_wide": (_spec("threshold_bits", 30), "threshold_bits"),
    "spec_shift_bits_9": (_spec("shift_bits", 9), "shift_bits"),
    "spec_mult_bits_13": (_spec("mult_bits", 13), "mult_bits"),
    "spec_bool_int": (_spec("axon_slots", True), "axon_slots"),
    "spec_string_int": (_spec("mesh_x", "8"), "mesh_x"),
    "spec_unknown_key": (_spec("turbo", 1), "unknown"),
    "spec_missing_key": (_spec("clock_hz", _DEL), "missing"),
    "spec_xbar_rows_huge": (_spec("xbar_rows", 1 << 20), "xbar_rows"),
    "spec_digest_mismatch": (lambda s: s, None),  # handled in the test: wrong header digest
    # registers
    "tick_start_65535": (_set("core_tick_start", 0, 65535), "core_tick_start"),
    "shift_255": (_set("neu_shift", 0, 255), "neu_shift"),
    "reset_mode_3": (_set("neu_mode", 0, 3), "reset mode"),
    "mode_reserved_bits": (_set("neu_mode", 0, 0x80), "reserved"),
    "th_pos_0": (_set("neu_th_pos", 0, 0), "neu_th_pos"),
    "th_pos_wide": (_set("neu_th_pos", 0, 2**31), "neu_th_pos"),
    "v_init_wide": (_set("neu_v_init", 0, 2**30), "neu_v_init"),
    "bias_wide": (_set("neu_bias", 0, -(2**30)), "neu_bias"),
    "mult_leak_5000": (_mult_leak, "MULT"),
    "core_w_3": (_set("core_w", 0, 3), "core_w"),
    "core_lcn_7": (_set("core_lcn", 0, 7), "core_lcn"),
    "rt_delay_0": (_set("rt_delay", 0, 0), "rt_delay"),
    "rt_delay_unbalanced": (_rt_delay_off, "rt_delay"),
    "in_rt_delay_15": (_set("in_rt_delay", 0, 15), "in_rt_delay"),
    # META
    "timesteps_1e9": (_meta(("timesteps",), 10**9), "timesteps"),
    "timesteps_0": (_meta(("timesteps",), 0), "timesteps"),
    "latency_1e12": (_meta(("latency",), 10**12), "latency"),
    "latency_wrong": (_meta(("latency",), 5), "latency"),
    "meta_no_output": (_meta(("output",), _DEL), "output"),
    "meta_no_spec": (_meta(("spec",), _DEL), "spec"),
    "meta_layers_not_list": (_meta(("layers",), {"a": 1}), "layers"),
    "meta_layers_empty": (_meta(("layers",), []), "layers"),
    "meta_encoding_bogus": (_meta(("encoding",), "bogus"), "encoding"),
    "meta_input_size": (_meta(("input", "size"), 81), "input.size"),
    "meta_input_shape_str": (_meta(("input", "shape"), ["a"]), "input.shape"),
    "meta_output_scale_neg": (_meta(("output", "scale"), [-1.0] * 6), "output.scale"),
    "meta_output_layer_unknown": (_meta(("output", "layer"), "zz"), "output.layer"),
    "meta_layer_cores": (_layer_cores, "cores"),
    "meta_layer_source": (_layer_source, "sources"),
    "meta_layer_depth": (_layer_depth, "depth"),
    "meta_source_list": (_meta(("source",), [1, 2]), "source"),
}


def case_bytes(name: str) -> bytes:
    """The checksum-valid file of case ``name``."""
    sec, dig = base_sections()
    fn, _ = CASES[name]
    sec = fn(sec)
    if name == "spec_digest_mismatch":
        return binfmt.to_bytes(sec, "ab" * 32)
    return to_bytes(sec)


def deep_meta_bytes(depth: int = 100_000) -> bytes:
    """A file whose META JSON nests ``depth`` lists deep (checksums valid)."""
    raw = np.frombuffer(("{\"x\":" + "[" * depth + "]" * depth + "}").encode(), np.uint8)
    return binfmt._pack([(1, 1, raw)], bytes(32))
