"""The target chip as data: :class:`ChipSpec`, the only home of hardware limits.

``PICORE64`` is the default (../docs/chip.md): a PIcore-like chip with 64 cores on an 8 x 8 mesh,
1024 x 1024 one-bit synapses per core, weights of 1/2/4/8 bits bit-sliced over adjacent columns,
fan-in extension LCN 0..6 (1X..64X), 24-bit saturating membranes and a 4096-entry route table
per core.
Users describe a variant chip in a TOML or JSON file and pass it with ``--chip FILE``; every key is
optional and defaults to PICORE64's value. The spec digest is written into chip.bin so a binary is
never run against a different chip than it was compiled for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from compiler.errors import SpecError

HOST_CHIP = 0xFFFF  # route-entry chip id that means "to the host" (output spikes)


@dataclass(frozen=True)
class ChipSpec:
    """Resources, neuron register widths, and the timing/energy model of one chip (and board)."""

    name: str = "picore64"
    # --- resources -------------------------------------------------------------------------
    mesh_x: int = 8
    mesh_y: int = 8
    xbar_rows: int = 1024            # physical axon rows per core
    xbar_cols: int = 1024            # physical one-bit columns per core
    weight_widths: tuple[int, ...] = (1, 2, 4, 8)
    max_lcn: int = 6                 # fan-in extension 1X..64X: 2**lcn row blocks per neuron
    route_entries: int = 4096        # per core
    max_delay: int = 15              # ticks per route entry (>= 1)
    axon_slots: int = 16             # circular axon buffer depth per core
    max_chips: int = 64              # chips on the largest supported board
    # --- neuron registers (bits) -----------------------------------------------------------
    membrane_bits: int = 24          # V, v_reset, v_init: signed, saturating
    threshold_bits: int = 23         # th_pos, th_neg: unsigned
    bias_bits: int = 24              # per-neuron constant added every tick: signed
    leak_bits: int = 16              # ADD leak: signed
    shift_bits: int = 4              # SHIFT leak k
    mult_bits: int = 12              # MULT leak decay d: V <- sign(V)*((|V|*(2**12-d)) >> 12)
    payload_bits: int = 8            # graded input events
    # --- timing model ----------------------------------------------------------------------
    clock_hz: float = 100e6
    event_cycles: int = 2            # integrate: per input event ...
    cols_per_cycle: int = 64         # ... + ceil(columns_in_use / cols_per_cycle)
    neurons_per_cycle: int = 4       # fire: ceil(N_used / 4) cycles ...
    packet_cycles: int = 1           # ... + 1 cycle per packet sent
    hop_cycles: int = 2              # NoC, per hop (XY routing)
    interchip_hop_cycles: int = 20
    # --- energy model (pJ) -----------------------------------------------------------------
    e_sop_pj: float = 2.64           # per one-bit SOP (event x set weight bit)
    e_neuron_pj: float = 5.0         # per logical neuron update per tick
    e_hop_pj: float = 3.0            # per packet per on-chip link
    e_interchip_pj: float = 30.0     # per packet per inter-chip link

    # ---------------------------------------------------------------------------------------
    @property
    def cores_per_chip(self) -> int:
        return self.mesh_x * self.mesh_y

    def axons_per_core(self, lcn: int) -> int:
        return self.xbar_rows << lcn

    def neurons_per_core(self, w: int, lcn: int) -> int:
        return self.xbar_cols // (w << lcn)

    def weight_range(self, w: int) -> tuple[int, int]:
        """Representable integer weights of width ``w`` (w=1 is unsigned {0,1})."""
        if w == 1:
            return 0, 1
        return -(1 << (w - 1)), (1 << (w - 1)) - 1

    @property
    def membrane_range(self) -> tuple[int, int]:
        return -(1 << (self.membrane_bits - 1)), (1 << (self.membrane_bits - 1)) - 1

    @property
    def bias_range(self) -> tuple[int, int]:
        return -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1

    @property
    def threshold_max(self) -> int:
        return (1 << self.threshold_bits) - 1

    @property
    def leak_range(self) -> tuple[int, int]:
        return -(1 << (self.leak_bits - 1)), (1 << (self.leak_bits - 1)) - 1

    @property
    def payload_max(self) -> int:
        return (1 << self.payload_bits) - 1

    def lcn_for_fanin(self, fan_in: int) -> int:
        """Smallest LCN whose axon count holds ``fan_in`` (may exceed max_lcn; caller checks)."""
        blocks = max(1, math.ceil(fan_in / self.xbar_rows))
        return max(0, math.ceil(math.log2(blocks)))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["weight_widths"] = list(self.weight_widths)
        return d

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of every field: identifies the chip a binary targets."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


PICORE64 = ChipSpec()
BUILTIN_SPECS = {"picore64": PICORE64}


def _validate(spec: ChipSpec, where: str) -> None:
    def bad(field: str, why: str) -> SpecError:
        return SpecError(f"{where}: field '{field}' {why}",
                         "fix the value or remove the key to use the picore64 default")

    for f in dataclasses.fields(ChipSpec):
        v = getattr(spec, f.name)
        if f.name in ("name", "weight_widths"):
            continue
        if isinstance(v, (int, float)) and v <= 0 and f.name != "max_lcn":
            raise bad(f.name, f"must be positive, got {v}")
    if not spec.weight_widths or any(w not in (1, 2, 4, 8) for w in spec.weight_widths):
        raise bad("weight_widths",
                  f"must be a subset of [1, 2, 4, 8], got {list(spec.weight_widths)}")
    if spec.max_lcn < 0 or spec.max_lcn > 6:
        raise bad("max_lcn", f"must be in 0..6, got {spec.max_lcn}")
    if spec.xbar_cols % (1 << spec.max_lcn):
        # the core is read as 2**LCN column blocks; a (w, LCN) pair leaving no whole neuron
        # (xbar_cols < w * 2**LCN) is simply never chosen by the partitioner
        raise bad("xbar_cols", "must be divisible by 2**max_lcn")
    if spec.xbar_cols % 8:
        raise bad("xbar_cols", "must be a multiple of 8 (rows are stored as packed bytes)")
    if spec.max_delay >= spec.axon_slots:
        raise bad("max_delay", f"must be < axon_slots ({spec.axon_slots}), got {spec.max_delay}")
    if spec.membrane_bits > 31 or spec.threshold_bits >= spec.membrane_bits + 1:
        raise bad("membrane_bits", "must be <= 31 and threshold_bits <= membrane_bits")
    if spec.bias_bits > spec.membrane_bits or spec.leak_bits > spec.membrane_bits:
        raise bad("bias_bits", "bias_bits and leak_bits must be <= membrane_bits")
    if spec.payload_bits > 8:
        raise bad("payload_bits", f"must be <= 8, got {spec.payload_bits}")
    if spec.mesh_x > 255 or spec.mesh_y > 255:
        raise bad("mesh_x", "mesh dimensions must be <= 255")


def load_spec(path_or_name: str | Path | None) -> ChipSpec:
    """Load a chip spec: a built-in name (``picore64``) or a ``.toml``/``.json`` file.

    Raises:
        SpecError: unreadable file, unknown key, wrong type, or a value out of range.
    """
    if path_or_name is None:
        return PICORE64
    if isinstance(path_or_name, str) and path_or_name in BUILTIN_SPECS:
        return BUILTIN_SPECS[path_or_name]
    path = Path(path_or_name)
    if not path.is_file():
        raise SpecError(f"chip spec '{path}' not found",
                        f"use one of {sorted(BUILTIN_SPECS)} or a .toml/.json file")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        elif path.suffix.lower() == ".toml":
            import tomllib
            data = tomllib.loads(path.read_text())
        else:
            raise SpecError(f"chip spec '{path}': unknown extension '{path.suffix}'",
                            "use .toml or .json")
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse error becomes a SpecError
        raise SpecError(f"chip spec '{path}' could not be parsed: {e}") from e
    if not isinstance(data, dict):
        raise SpecError(f"chip spec '{path}': top level must be a table/object")
    data = dict(data.get("chip", data))
    fields = {f.name: f for f in dataclasses.fields(ChipSpec)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"chip spec '{path}': unknown keys {unknown}",
                        f"known keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(PICORE64, k)
        if k == "weight_widths":
            if not isinstance(v, list) or not all(isinstance(x, int) for x in v):
                raise SpecError(f"chip spec '{path}': 'weight_widths' must be a list of ints")
            v = tuple(sorted(v))
        elif isinstance(default, bool) or not isinstance(v, type(default)):
            if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            else:
                raise SpecError(f"chip spec '{path}': '{k}' must be {type(default).__name__}, "
                                f"got {type(v).__name__} {v!r}")
        kwargs[k] = v
    spec = dataclasses.replace(PICORE64, **kwargs)
    _validate(spec, f"chip spec '{path}'")
    return spec
