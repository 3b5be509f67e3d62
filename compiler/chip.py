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


#: Upper bounds that keep every derived table of an image inside the integer widths the byte
#: format and the runtime kernels use (chip.bin stores axon indices as u16, delays as u8, chip
#: indices as u16 with 0xFFFF meaning the host; the kernels accumulate in int32).
MAX_AXONS_PER_CORE = 1 << 16
MAX_SPEC_FILE_BYTES = 1 << 20
#: The most input steps an image's META default, `--timesteps` or a run may ask for.
MAX_TIMESTEPS = 1 << 16
MAX_XBAR_COLS = 1 << 16
MAX_AXON_SLOTS = 256
MAX_CYCLE_COST = 1 << 20
_CYCLE_FIELDS = ("event_cycles", "cols_per_cycle", "neurons_per_cycle", "packet_cycles",
                 "hop_cycles", "interchip_hop_cycles")


def validate_spec(spec: ChipSpec, where: str) -> None:
    """Check every field of ``spec`` against chip.md and the runtime's integer widths.

    The one rule set for chip specs: :func:`load_spec` applies it to user files and the runtime
    loader (``runtime/validate.py``) to the spec embedded in a chip.bin.

    Raises:
        SpecError: naming ``where`` and the field.
    """
    def bad(field: str, why: str) -> SpecError:
        return SpecError(f"{where}: field '{field}' {why}",
                         "fix the value or remove the key to use the picore64 default")

    for f in dataclasses.fields(ChipSpec):
        v = getattr(spec, f.name)
        default = getattr(PICORE64, f.name)
        if f.name == "name":
            if not isinstance(v, str) or not v or len(v) > 64:
                raise bad(f.name, f"must be a non-empty string of at most 64 characters, got "
                                  f"{v!r:.80}")
            continue
        if f.name == "weight_widths":
            if not isinstance(v, tuple) or not all(
                    isinstance(w, int) and not isinstance(w, bool) for w in v):
                raise bad(f.name, f"must be a list of integers, got {v!r:.80}")
            continue
        if isinstance(v, bool) or not isinstance(v, type(default)):
            raise bad(f.name, f"must be {type(default).__name__}, got {type(v).__name__} "
                              f"{v!r:.80}")
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(f.name, f"must be a finite number, got {v}")
        if v <= 0 and f.name != "max_lcn":
            raise bad(f.name, f"must be positive, got {v}")
    ww = spec.weight_widths
    if not ww or any(w not in (1, 2, 4, 8) for w in ww) or len(set(ww)) != len(ww):
        raise bad("weight_widths",
                  f"must be a non-empty subset of [1, 2, 4, 8] without repeats, got {list(ww)}")
    if spec.max_lcn < 0 or spec.max_lcn > 6:
        raise bad("max_lcn", f"must be in 0..6, got {spec.max_lcn}")
    if spec.xbar_cols > MAX_XBAR_COLS:
        raise bad("xbar_cols", f"must be <= {MAX_XBAR_COLS}, got {spec.xbar_cols}")
    if spec.xbar_cols % (1 << spec.max_lcn):
        # the core is read as 2**LCN column blocks; a (w, LCN) pair leaving no whole neuron
        # (xbar_cols < w * 2**LCN) is simply never chosen by the partitioner
        raise bad("xbar_cols", "must be divisible by 2**max_lcn")
    if spec.xbar_cols % 8:
        raise bad("xbar_cols", "must be a multiple of 8 (rows are stored as packed bytes)")
    if spec.xbar_rows > 0xFFFF or spec.xbar_rows << spec.max_lcn > MAX_AXONS_PER_CORE:
        raise bad("xbar_rows", f"xbar_rows * 2**max_lcn (axons per core) must be <= "
                               f"{MAX_AXONS_PER_CORE} (axon indices are 16-bit), got "
                               f"{spec.xbar_rows} * 2**{spec.max_lcn}")
    if spec.axon_slots > MAX_AXON_SLOTS:
        raise bad("axon_slots", f"must be <= {MAX_AXON_SLOTS}, got {spec.axon_slots}")
    if spec.max_delay >= spec.axon_slots:
        raise bad("max_delay", f"must be < axon_slots ({spec.axon_slots}), got {spec.max_delay}")
    if spec.max_chips > 0xFFFF:
        raise bad("max_chips", f"must be <= {0xFFFF} (chip 0xFFFF means the host), got "
                               f"{spec.max_chips}")
    if spec.mesh_x > 255 or spec.mesh_y > 255:
        raise bad("mesh_x" if spec.mesh_x > 255 else "mesh_y", "mesh dimensions must be <= 255")
    if spec.membrane_bits > 31:
        raise bad("membrane_bits", f"must be <= 31 (v_reset and v_init are int32), got "
                                   f"{spec.membrane_bits}")
    if spec.threshold_bits > spec.membrane_bits:
        raise bad("threshold_bits", f"must be <= membrane_bits ({spec.membrane_bits}), got "
                                    f"{spec.threshold_bits}")
    if spec.bias_bits > spec.membrane_bits:
        raise bad("bias_bits", f"must be <= membrane_bits ({spec.membrane_bits}), got "
                               f"{spec.bias_bits}")
    if spec.leak_bits > min(spec.membrane_bits, 16):
        raise bad("leak_bits", f"must be <= membrane_bits and <= 16 (the leak register is "
                               f"int16), got {spec.leak_bits}")
    if spec.shift_bits > 5:
        raise bad("shift_bits", f"must be <= 5 (shift amounts up to 31 for a <= 31-bit "
                                f"membrane), got {spec.shift_bits}")
    if spec.mult_bits != 12:
        raise bad("mult_bits", f"must be 12 (chip.md's MULT leak is (|V| * (4096 - d)) >> 12), "
                               f"got {spec.mult_bits}")
    if spec.payload_bits > 8:
        raise bad("payload_bits", f"must be <= 8, got {spec.payload_bits}")
    for k in _CYCLE_FIELDS:
        if getattr(spec, k) > MAX_CYCLE_COST:
            raise bad(k, f"must be <= {MAX_CYCLE_COST} cycles, got {getattr(spec, k)}")


def spec_from_dict(data, where: str, *, complete: bool = False) -> ChipSpec:
    """Build a validated :class:`ChipSpec` from a parsed TOML/JSON mapping.

    Missing keys take PICORE64's value unless ``complete`` (a chip.bin's META must list every
    field: its digest covers all of them). Unknown keys, wrong types (``true`` is not an
    integer) and out-of-range values raise :class:`SpecError` naming ``where``.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a chip spec must be a table/object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(ChipSpec)}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        raise SpecError(f"{where}: unknown keys {unknown[:10]}",
                        f"known keys: {', '.join(sorted(fields))}")
    missing = sorted(set(fields) - set(data))
    if complete and missing:
        raise SpecError(f"{where}: missing keys {missing}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(PICORE64, k)
        if k == "weight_widths":
            if not isinstance(v, (list, tuple)) or not all(
                    isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise SpecError(f"{where}: 'weight_widths' must be a list of ints, got "
                                f"{v!r:.80}")
            v = tuple(sorted(v))
        elif isinstance(v, bool) or not isinstance(v, type(default)):
            if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            else:
                raise SpecError(f"{where}: '{k}' must be {type(default).__name__}, "
                                f"got {type(v).__name__} {v!r:.80}")
        kwargs[k] = v
    spec = dataclasses.replace(PICORE64, **kwargs)
    validate_spec(spec, where)
    return spec


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
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_FILE_BYTES + 1)
        if len(raw) > MAX_SPEC_FILE_BYTES:
            raise SpecError(f"chip spec '{path}' is larger than {MAX_SPEC_FILE_BYTES} bytes",
                            "a chip spec is a short TOML/JSON table; check the path")
        text = raw.decode("utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            raise SpecError(f"chip spec '{path}': unknown extension '{path.suffix}'",
                            "use .toml or .json")
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse error becomes a SpecError
        raise SpecError(f"chip spec '{path}' could not be parsed: {e}") from e
    if not isinstance(data, dict):
        raise SpecError(f"chip spec '{path}': top level must be a table/object")
    data = data.get("chip", data)
    return spec_from_dict(data, f"chip spec '{path}'")
