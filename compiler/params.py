"""Which trained parameters a mismatch model acts on, and at which granularity (one definition).

Both sides of "train robust to X, evaluate under X" read this module: the chip evaluation
(``runtime.lab.noise.Mismatch``, ``runtime.lab.sweep.worst_case``, ``runtime.lab.certify``,
``snnrun --mismatch-params``) and the training library's weight-noise and adversarial-weight
objectives (``frontends.training.robust``). It lives in compiler/ because both frontends/ and
runtime/ may import it (frontends never import runtime).

Parameter kinds (what ``--mismatch-params`` takes):

=========== ============================================= =========================================
kind        on the chip (register / cells)                in a torch model (frontends.training)
=========== ============================================= =========================================
weights     every crossbar cell (the synapse integers)     Conv/Linear ``weight``
bias        the per-neuron bias register                  Conv/Linear ``bias``
threshold   th_pos (kept in [1, th_max])                  IF/LIF ``v_threshold`` (a buffer)
leak        ADD: leak value; SHIFT/MULT: decay fraction   LIF ``beta`` (parameter or buffer)
=========== ============================================= =========================================

Granularity (``--mismatch-granularity``):

* ``cell``: one draw N per crossbar cell and per neuron register: independent device mismatch
  of every physical copy (a conv kernel element is copied to every output position, each copy
  gets its own error).
* ``parameter``: Büchel et al. (ICLR 2022): one draw per *trained parameter*, shared by every
  cell that holds it (a conv weight carries the same error at every position; the cell ->
  parameter map is the image's logical-layer descriptors, ``ChipImage.cell_params``); a bias,
  threshold or leak is one draw per (layer, channel), the grain at which the compiler's registers
  come from trained values (per-channel BN/threshold folding).

The default set is :data:`DEFAULT_PARAMS` = weights and biases: Büchel's theta is every trainable
parameter of the network (weights and biases; the neuron constants of our models are fixed
buffers unless made learnable), and it is what the training objectives perturb by default.
"""

from __future__ import annotations

from compiler.errors import SnnError

#: every parameter kind a mismatch model can act on, in canonical order
PARAM_KINDS: tuple[str, ...] = ("weights", "bias", "threshold", "leak")
#: the default of the chip evaluation AND of the training objectives
DEFAULT_PARAMS: tuple[str, ...] = ("weights", "bias")
GRANULARITIES: tuple[str, ...] = ("cell", "parameter")
DEFAULT_GRANULARITY = "cell"

#: older spellings accepted everywhere (``--mismatch-on weights,thresholds,leak``)
ALIASES = {"weight": "weights", "thresholds": "threshold", "th": "threshold", "biases": "bias",
           "leaks": "leak"}


class ParamsError(SnnError, ValueError):
    """An unknown parameter kind or granularity."""


def parse_params(spec, where: str = "--mismatch-params") -> tuple[str, ...]:
    """'weights,bias' | ['weights', 'bias'] | 'all' -> the canonical tuple (PARAM_KINDS order).

    Raises :class:`ParamsError` naming the bad token and the accepted ones.
    """
    if spec is None:
        return DEFAULT_PARAMS
    toks = spec.split(",") if isinstance(spec, str) else list(spec)
    toks = [str(t).strip().lower() for t in toks if str(t).strip()]
    if toks == ["all"]:
        return PARAM_KINDS
    out = set()
    for t in toks:
        t = ALIASES.get(t, t)
        if t not in PARAM_KINDS:
            raise ParamsError(f"{where}: unknown parameter kind '{t}'",
                              f"use a comma list of {','.join(PARAM_KINDS)} (or 'all')")
        out.add(t)
    if not out:
        raise ParamsError(f"{where}: no parameter kind given",
                          f"use a comma list of {','.join(PARAM_KINDS)}")
    return tuple(k for k in PARAM_KINDS if k in out)


def check_granularity(g: str, where: str = "--mismatch-granularity") -> str:
    g = str(g).strip().lower()
    if g not in GRANULARITIES:
        raise ParamsError(f"{where}: unknown granularity '{g}'",
                          "use 'cell' (one draw per crossbar cell) or 'parameter' (Büchel: one "
                          "draw per trained parameter)")
    return g


def torch_kind(role: str, tensor_name: str) -> str | None:
    """The parameter kind of tensor ``tensor_name`` of a torch module playing ``role``
    ('synapse': Conv/Linear and subclasses; 'neuron': IF/LIF), None if no kind covers it.
    Torch-free: the training library decides the role with isinstance."""
    if role == "synapse":
        return {"weight": "weights", "bias": "bias"}.get(tensor_name)
    if role == "neuron":
        return {"v_threshold": "threshold", "beta": "leak"}.get(tensor_name)
    return None


# --- reference defaults ------------------------------------------------------------------------
#: Each entry: (what, our default, reference value, reference). docs/robustness.md prints this
#: table; ``--preset`` (snnrun) and ``preset=`` (frontends.training.robust) apply the reference
#: values of one reference.
DEFAULTS_VS_REFERENCES: tuple[tuple[str, str, str, str, str], ...] = (
    # (preset, setting, ours, reference value, where)
    ("buechel", "mismatch granularity", "cell", "parameter",
     "Büchel et al. 2022: one N per trained parameter"),
    ("buechel", "mismatch parameters", "weights,bias", "weights,bias",
     "Büchel et al. 2022: theta = all trained parameters"),
    ("buechel", "mismatch domain", "digital", "analog",
     "Büchel et al. 2022: real-valued theta(1 + zeta N)"),
    ("buechel", "worst-case projection into the box", "on", "off",
     "Büchel et al. 2022 (JAX code): sign steps from theta + eps N, no projection"),
    ("buechel", "worst-case PGA steps", "10", "10", "Büchel et al. 2022: N_steps = 10"),
    ("buechel", "AWP inner steps (training)", "3", "10", "Büchel code's AWP baseline"),
    ("buechel", "AWP / adversarial-weights parameters (training)", "weights,bias",
     "weights,bias", "compiler.params.DEFAULT_PARAMS"),
    ("torchattacks", "PGD step alpha", "eps/4", "2/255", "torchattacks.PGD(alpha=2/255)"),
    ("torchattacks", "PGD steps", "10", "10", "torchattacks.PGD(steps=10)"),
    ("torchattacks", "PGD random start", "on", "on", "torchattacks.PGD(random_start=True)"),
    ("pdsg", "SDA iterations", "10 x --steps = 100", "500", "official SDA code"),
    ("pdsg", "surrogate", "atan", "pdsg", "PDSG paper"),
    ("pdsg", "PGD step alpha", "eps/4", "eps/4", "PDSG code"),
)

#: snnrun option values of each preset (option name as click's parameter name)
PRESETS: dict[str, dict[str, object]] = {
    "buechel": {"mismatch_granularity": "parameter", "mismatch_params": "weights,bias",
                "mismatch_domain": "analog", "worst_case_projection": False, "steps": 10},
    "torchattacks": {"alpha": 2 / 255, "steps": 10},
    "pdsg": {"surrogate": "pdsg", "sda_iters": 500},
}

#: training-library keyword values of each preset (frontends.training.robust)
TRAINING_PRESETS: dict[str, dict[str, dict[str, object]]] = {
    "buechel": {"adversarial-weights": {"steps": 10, "include": DEFAULT_PARAMS},
                "awp": {"steps": 10, "include": DEFAULT_PARAMS}},
    "torchattacks": {"input-adversarial": {"alpha": 2 / 255, "steps": 10}},
}


def preset(name: str) -> dict:
    """The snnrun option values of preset ``name`` (buechel | torchattacks | pdsg)."""
    if name not in PRESETS:
        raise ParamsError(f"unknown preset '{name}'", f"use one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def defaults_table() -> str:
    """The Markdown table of our defaults next to the reference values (docs/robustness.md)."""
    lines = ["| preset | setting | snnc default | reference | source |",
             "|---|---|---|---|---|"]
    for row in DEFAULTS_VS_REFERENCES:
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


__all__ = ["PRESETS", "TRAINING_PRESETS", "DEFAULTS_VS_REFERENCES", "preset", "defaults_table",
           "PARAM_KINDS", "DEFAULT_PARAMS", "GRANULARITIES", "DEFAULT_GRANULARITY", "ParamsError",
           "parse_params", "check_granularity", "torch_kind"]
