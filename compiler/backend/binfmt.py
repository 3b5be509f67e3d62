"""chip.bin: the byte layout of a compiled chip image (format version 1.0).

Stage: backend, last step of the compiler and first step of the runtime. In: a dict of named numpy
arrays (plus a `meta` dict) and the SHA-256 of the target ChipSpec. Out: one file, `chip.bin`.
This module alone knows the byte layout; it knows nothing about graphs or passes. This docstring
is the format specification (`python -m compiler.backend.binfmt --markdown` prints it, and
`docs/binfmt.md` is generated from it).

## Overview

```
offset 0                  header               64 bytes
offset 64                 section table        64 bytes per section, in increasing kind order
offset 64 + 64*count      section data         each section at a 64-byte aligned offset,
                                               zero padding between sections and at the end
```

All integers are little-endian. The file length is a multiple of 64. Every byte of a valid file
is covered by a check: header and table by the header CRC32, section data by its section CRC32,
and every other byte (the gaps between sections and after the last one) must be zero. So flipping
any single byte makes `read()` fail with a `BinaryFormatError` subclass.

Writing is deterministic (no timestamps, sections in increasing kind order, zero padding, meta
JSON with sorted keys): the same input gives the same bytes, so golden files compare byte for
byte. Writing is atomic: a temporary file in the target directory is renamed over the target.
Nothing in the format or in this module uses pickle.

## Header (64 bytes, `HEADER_FMT = "<8sHHI32sI12x"`)

| offset | size | type      | field                                                            |
|-------:|-----:|-----------|------------------------------------------------------------------|
|      0 |    8 | bytes     | magic `b"\\x93SNNB\\r\\n\\x00"`                                      |
|      8 |    2 | u16       | format major version                                             |
|     10 |    2 | u16       | format minor version                                             |
|     12 |    4 | u32       | section count (number of section table entries)                  |
|     16 |   32 | bytes     | SHA-256 digest of the target ChipSpec (raw bytes, not hex)       |
|     48 |    4 | u32       | header CRC32 (see below)                                         |
|     52 |   12 | zero      | reserved, must be zero                                           |

The magic's non-ASCII first byte and its CR LF pair detect files mangled by text-mode transfers
(as in PNG and numpy's .npy). The header CRC32 (`zlib.crc32`) is computed over the 64 header bytes
with the CRC field set to zero, followed by the whole section table.

## Section table (64 bytes per entry, `SECTION_FMT = "<HHQQII4Q4x"`)

| offset | size | type      | field                                                            |
|-------:|-----:|-----------|------------------------------------------------------------------|
|      0 |    2 | u16       | kind: section id from the registry below                         |
|      2 |    2 | u16       | dtype code (table below)                                         |
|      4 |    8 | u64       | offset of the data from the start of the file, multiple of 64    |
|     12 |    8 | u64       | nbytes: length of the data, = itemsize * product(shape)          |
|     20 |    4 | u32       | CRC32 of the `nbytes` data bytes                                 |
|     24 |    4 | u32       | ndim, 0 to 4                                                     |
|     28 |   32 | 4 x u64   | shape: dims 0..ndim-1, unused dims zero                          |
|     60 |    4 | zero      | reserved, must be zero (covered by the header CRC)               |

Entries are sorted by strictly increasing kind (each kind at most once). The data of a section
is the C-order, little-endian bytes of the array, so
`np.frombuffer(buf, dtype, count, offset).reshape(shape)` reads it without a copy. Sections lie
after the table, do not overlap, and appear in the file in table order. A section of zero bytes
still has an aligned offset within the file.

## Dtype codes (`DTYPES`)

| code | dtype | | code | dtype |
|-----:|-------|-|-----:|-------|
|    1 | u8    | |    6 | i32   |
|    2 | i8    | |    7 | u64   |
|    3 | u16   | |    8 | i64   |
|    4 | i16   | |    9 | f32   |
|    5 | u32   | |   10 | f64   |

A known kind must be stored with the dtype its registry entry gives; any other code is an error.

## Sections (`SECTIONS`: name -> (kind, dtype, meaning))

| kind | name             | dtype | meaning                                                      |
|-----:|------------------|-------|--------------------------------------------------------------|
|    1 | meta             | u8    | UTF-8 JSON object, sorted keys (see Meta below)              |
|    2 | core_chip        | u16   | chip index of each core                                      |
|    3 | core_x           | u8    | x coordinate of each core on its chip's mesh                 |
|    4 | core_y           | u8    | y coordinate of each core on its chip's mesh                 |
|    5 | core_w           | u8    | weight width in bits of each core's crossbar                 |
|    6 | core_lcn         | u8    | fan-in extension exponent 0..6: 2**lcn row blocks per core   |
|    7 | core_layer       | u16   | index into meta['layers'] of each core's layer               |
|    8 | core_tick_start  | u16   | first tick each core integrates (pipeline depth - 1)         |
|    9 | core_neuron_base | u32   | prefix offsets of cores into neu_* (length cores+1)          |
|   10 | core_axon_base   | u32   | prefix offsets of cores into global axons (cores+1)          |
|   11 | core_xbar_base   | u64   | byte offset of each core's rows in xbar (cores+1)            |
|   12 | core_xbar_rows   | u16   | physical crossbar rows stored for each core                  |
|   13 | xbar             | u8    | packed crossbar bits of all cores (see Crossbar below)       |
|   14 | neu_th_pos       | u32   | positive firing threshold of each neuron                     |
|   15 | neu_th_neg       | u32   | negative threshold (magnitude) of each neuron                |
|   16 | neu_v_reset      | i32   | membrane potential each neuron is reset to                   |
|   17 | neu_v_init       | i32   | initial membrane potential of each neuron                    |
|   18 | neu_bias         | i32   | constant input added to each neuron every tick               |
|   19 | neu_leak         | i16   | leak of each neuron (meaning set by its leak mode)           |
|   20 | neu_shift        | u8    | leak shift amount of each neuron                             |
|   21 | neu_mode         | u8    | bits 0-1 reset mode, bit 2 negative mode, bits 3-4 leak mode |
|   22 | neu_route_base   | u32   | prefix offsets of neurons into rt_* (neurons+1)              |
|   23 | rt_chip          | u16   | destination chip of each neuron route entry                  |
|   24 | rt_x             | u8    | destination core x of each neuron route entry                |
|   25 | rt_y             | u8    | destination core y of each neuron route entry                |
|   26 | rt_axon          | u16   | destination axon of each neuron route entry                  |
|   27 | rt_delay         | u8    | delay in ticks of each neuron route entry                    |
|   28 | in_route_base    | u32   | prefix offsets of inputs into in_rt_* (inputs+1)             |
|   29 | in_rt_chip       | u16   | destination chip of each input route entry                   |
|   30 | in_rt_x          | u8    | destination core x of each input route entry                 |
|   31 | in_rt_y          | u8    | destination core y of each input route entry                 |
|   32 | in_rt_axon       | u16   | destination axon of each input route entry                   |
|   33 | in_rt_delay      | u8    | delay in ticks of each input route entry                     |
|   34 | neu_index        | u32   | index of each neuron within its layer                        |
|   48 | op_table         | i64   | per layer op: structure row (see Layer descriptors)          |
|   49 | op_weights       | i8    | integers of every op: parameter id = index here              |
|   50 | op_index         | u32   | CSR indptr + indices of sparse ops                           |
|   51 | op_info          | u8    | UTF-8 JSON list: per op its weight node and 'trained'        |

**Meta.** The `meta` section holds the UTF-8 bytes of one JSON object, written with sorted keys,
`separators=(",", ":")`, non-ASCII characters as UTF-8 (not `\\u` escapes) and no NaN or
Infinity (so any JSON parser reads it). Its content (compiler version, ChipSpec, layer table,
input and output description, ...) belongs to the compiler, not to this format.

**Crossbar.** `xbar` concatenates the cores' physical crossbar rows: core c occupies bytes
`core_xbar_base[c]:core_xbar_base[c+1]`, which hold `core_xbar_rows[c]` rows of `xbar_cols / 8`
bytes each (row-major), packed with `np.packbits(bits, axis=1, bitorder="little")`, so bit b of
byte k of a row is column 8k + b.

**Prefix tables.** A `*_base` table of length n + 1 gives element i the half-open range
`base[i]:base[i+1]` of its entries in the arrays it indexes. Arrays written by snnc are
one-dimensional.

**Layer descriptors** (kinds 48-51, optional; `compiler/backend/layerdesc.py`). One *op* per
(layer, source population): the integer operator whose unrolled [n_src, n] matrix is exactly that
layer's synapses from that source. `op_table` is i64 [ops, 24] with the columns `layer, source
(-1 = graph input), kind (1 conv, 2 dense, 3 sparse), w_off, w_len, c_in, h_in, w_in, pool_h,
pool_w, c_out, h_out, w_out, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
idx_off, idx_len` (1-D populations are (n, 1, 1)). Every op first sum-pools its source by
(pool_h, pool_w) (non-overlapping windows; conv and dense only), then: **conv** applies the
kernel `op_weights[w_off : w_off + w_len]` of shape [c_out, c_in / groups, kh, kw] with the given
stride, zero padding, dilation and groups; **dense** multiplies the flattened pooled source by
the matrix [n_pooled, c_out * h_out * w_out] stored there (row-major); **sparse** is the CSR
matrix whose `indptr` (n_src + 1 entries) and `indices` are `op_index[idx_off : idx_off +
idx_len]` and whose data are the op's weights. *Parameter id* p = an index into `op_weights`:
crossbar cell (axon, neuron) holds parameter p when the op of the axon's source maps that pair to
entry p. `op_info` (UTF-8 JSON list, one object per op) names the operator node the integers
came from (`node`) and whether they are that node's trained weight tensor element for element
(`trained`). The runtime loader checks that the ops reproduce every core's crossbar cell for
cell and refuses the image otherwise; an image without these sections runs on the tick engine.

No section is mandatory at this level; which ones a runnable image needs, and how they refer to
each other, is checked by the runtime loader (`runtime/image.py`).

## Versions and compatibility

`FORMAT_VERSION` is independent of the snnc package version.

- A different **major** version is incompatible: the reader refuses it (`FormatVersionError`).
- A higher **minor** version only adds section kinds. A reader skips kinds it does not know when
  the file's minor version is higher than its own; with the same or a lower minor version an
  unknown kind is an error. Skipped sections are still bounds- and CRC-checked.

| version | change                                                                         |
|---------|--------------------------------------------------------------------------------|
| 1.0     | initial format: header, 64-byte section table entries, kinds 1-34              |
| 1.1     | logical-layer descriptors, kinds 48-51 (op_table, op_weights, op_index, op_info) |

## Reading

`read(path)` / `read_bytes(buf)` check, in this order, before any array is returned:
the file exists and is readable; it is at least 64 bytes; the magic; the version; the section
table fits in the file; the header CRC; each table entry (known kind and order, known dtype code
matching the registry, ndim <= 4 and unused dims zero, nbytes = itemsize * product(shape),
64-byte alignment, within the file, after the table, no overlap, reserved bytes zero); the file
length; zero padding; each section's CRC; `meta` is a UTF-8 JSON object. Failures raise
`BadMagicError`, `FormatVersionError`, `ChecksumError` (with `.section`, `"header"` for the header
CRC) or `BinaryFormatError`, and every message names the file and the section. `read` refuses
anything but a regular file (`snnc inspect /dev/zero` fails at once) and a file larger than
`MAX_FILE_BYTES` (4 GiB) before reading it; META JSON nested too deeply for the
parser is a `BinaryFormatError`, not a crash.

## What a valid image guarantees to the kernels

Checksums only prove that a file is the one its writer wrote; a hostile or buggy writer can
recompute them. The runtime loader (`runtime/image.py` -> `runtime/validate.py`) therefore
checks, after the CRCs and before any table is built or any kernel runs, every rule below; a
file that breaks one is refused with a `BinaryFormatError` naming the section or META key, the
entry, the expected and the found value. The Numba kernels do no bounds checks of their own;
these guarantees are what makes every index they compute land inside its array. (Tests run the
kernels with `NUMBA_BOUNDSCHECK=1` on crafted files to check exactly that: `tests/fuzz/`.)

1. **Sections.** Every kind 2-34 is present (`meta` too) and one-dimensional.
2. **Chip spec.** `meta.spec` lists every ChipSpec field and passes the rules of `snnc --chip`
   files (`compiler.chip.spec_from_dict`, the same function `load_spec` uses): known keys, exact
   types (`true` is not an integer), positive finite numbers, weight widths a subset of
   {1, 2, 4, 8}, LCN <= 6, `max_delay < axon_slots <= 256`, axons per core
   (`xbar_rows << max_lcn`) <= 65536, `xbar_cols` a multiple of 8 and of
   `max(widths) << max_lcn`, <= 65536, mesh <= 255 x 255, `max_chips` <= 65535, membrane <= 31
   bits, threshold and bias <= membrane, leak <= min(membrane, 16), shift <= 5 bits,
   `mult_bits` = 12, payload <= 8 bits, cycle costs <= 2**20. Its SHA-256 equals the header's.
3. **META.** `board.chips` in 1..`max_chips` and `board.grid` = the compiler's grid for that
   many chips (`ceil(sqrt(chips))` columns); `input.shape` 1-8 positive dims whose product is
   `input.size`, `input.scale` finite > 0; `timesteps` in 1..65536; `encoding` a known
   encoding; `layers` a non-empty list, each with a unique name, `neurons` = product of
   `shape`, `bits` a chip width, `sources` naming the input or earlier layers (so the table is
   in topological order), `depth` = 1 + the largest source depth (input depth 0), `cores` =
   the cores whose `core_layer` is this layer; `output.layer` a layer, `output.neurons` its
   size, `output.global` and `output.scale` (finite > 0) one entry per output neuron;
   `latency` = depth(output layer) - 1; `quant`, `calibration`, `source`, `options` objects.
4. **Cores.** At least one core, at most `max_chips * mesh_x * mesh_y`; every per-core table
   has one entry per core; `core_neuron_base`, `core_axon_base`, `core_xbar_base` are prefix
   tables (start 0, non-decreasing, length cores + 1); the neuron tables have
   `core_neuron_base[-1]` entries and `xbar` has `core_xbar_base[-1]` bytes; `core_w` is a chip
   width equal to its layer's `bits`, `core_lcn` <= `max_lcn`; neurons per core <=
   `xbar_cols / (w << lcn)`, axons per core <= `xbar_rows << lcn`;
   `core_xbar_rows` = min(axons, `xbar_rows`) and each core holds exactly that many packed rows;
   `core_chip` < `board.chips`, `core_x` < `mesh_x`, `core_y` < `mesh_y`, no two cores on one
   (chip, x, y); `core_layer` < number of layers; `core_tick_start` = its layer's depth - 1
   (so every window [tick_start, tick_start + T) ends by tick T + latency).
5. **Neurons.** `neu_index` < its layer's size and every (layer, index) held by exactly one
   neuron (so `layer_neurons` is a permutation); registers in the chip's ranges: `th_pos` in
   1..2**threshold_bits - 1, `th_neg` in 0..same, `v_reset`, `v_init` in the membrane range,
   `bias` in the bias range, `shift` < 2**shift_bits, `neu_mode` reset mode 0-2, bits 5-7
   zero, ADD leaks in the leak range, MULT decays in 0..4095.
6. **Routes.** The axon count `core_axon_base[-1]` is at most the number of route entries
   (checked before anything of that size is allocated); `neu_route_base` and `in_route_base`
   are prefix tables over the neurons and `input.size` inputs ending at their entry counts;
   the five arrays of each route table have equal lengths; delays are in 1..`max_delay`
   (< `axon_slots`, so a spike never lands in the slot being read); every entry names a core of
   the image and an axon of that core, or (neuron routes only) the host (chip 0xFFFF, core
   (0, 0)) with an output index < `len(output.global)`; each core uses <= `route_entries`
   entries; every axon is fed by exactly one entry (so a slot's event list never outgrows the
   core's axon count); each delay equals depth(destination layer) - depth(source layer)
   (input depth 0; host routes 1), and each axon's source is among its layer's META `sources`,
   so the image computes what `compiler.reference` computes on `unmap()`.
7. **Output.** `output.global[k]` is neuron k of the output layer, and the host routes send
   each output neuron k to output k exactly once.
8. **Memory.** The kernel tables, one worker's workspace (`axon_slots` x axons event lists,
   board link counters) and one sample's buffers fit the memory budget (`SNNC_MEMORY_BUDGET`,
   default three quarters of physical memory); each run checks its own batch, timesteps and
   workers against it before allocating (`SimulationError`).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import secrets
import stat
import struct
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.errors import BadMagicError, BinaryFormatError, ChecksumError, FormatVersionError

__all__ = [
    "MAGIC", "FORMAT_VERSION", "HEADER_FMT", "HEADER_SIZE", "SECTION_FMT", "SECTION_SIZE",
    "ALIGN", "MAX_NDIM", "DTYPES", "SECTIONS", "ChipFile", "SectionInfo",
    "write", "to_bytes", "read", "read_bytes", "describe", "markdown",
]

log = logging.getLogger(__name__)

MAGIC = b"\x93SNNB\r\n\x00"
FORMAT_VERSION = (1, 1)

#: magic, major, minor, section count, ChipSpec sha256 (raw), header CRC32, 12 reserved bytes.
HEADER_FMT = "<8sHHI32sI12x"
HEADER_SIZE = struct.calcsize(HEADER_FMT)
#: Where the header CRC32 field sits inside the header (it is zeroed while computing the CRC).
HEADER_CRC_FMT = "<I"
HEADER_CRC_OFFSET = 48
#: kind, dtype code, offset, nbytes, crc32, ndim, 4 dims, 4 reserved bytes.
SECTION_FMT = "<HHQQII4Q4x"
SECTION_SIZE = struct.calcsize(SECTION_FMT)
ALIGN = 64
MAX_NDIM = 4
DIGEST_SIZE = 32
#: The largest file :func:`read` accepts (a 64-chip VGG is ~100 MB); checked before reading, and
#: reads stop there, so a device or pipe without an end cannot exhaust memory.
MAX_FILE_BYTES = 1 << 32
_NOT_IMAGE_HINT = "pass a chip.bin written by `snnc compile`"

DTYPES: dict[int, np.dtype] = {
    1: np.dtype("u1"), 2: np.dtype("i1"), 3: np.dtype("<u2"), 4: np.dtype("<i2"),
    5: np.dtype("<u4"), 6: np.dtype("<i4"), 7: np.dtype("<u8"), 8: np.dtype("<i8"),
    9: np.dtype("<f4"), 10: np.dtype("<f8"),
}
_CODES: dict[str, int] = {dt.str: code for code, dt in DTYPES.items()}

_u8, _u16, _u32, _u64 = np.dtype("u1"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<u8")
_i16, _i32 = np.dtype("<i2"), np.dtype("<i4")
_i8, _i64 = np.dtype("i1"), np.dtype("<i8")

SECTIONS: dict[str, tuple[int, np.dtype, str]] = {
    "meta": (1, _u8, "UTF-8 JSON object, sorted keys (see Meta below)"),
    "core_chip": (2, _u16, "chip index of each core"),
    "core_x": (3, _u8, "x coordinate of each core on its chip's mesh"),
    "core_y": (4, _u8, "y coordinate of each core on its chip's mesh"),
    "core_w": (5, _u8, "weight width in bits of each core's crossbar"),
    "core_lcn": (6, _u8, "fan-in extension exponent 0..6: 2**lcn row blocks per core"),
    "core_layer": (7, _u16, "index into meta['layers'] of each core's layer"),
    "core_tick_start": (8, _u16, "first tick each core integrates (pipeline depth - 1)"),
    "core_neuron_base": (9, _u32, "prefix offsets of cores into neu_* (length cores+1)"),
    "core_axon_base": (10, _u32, "prefix offsets of cores into global axons (cores+1)"),
    "core_xbar_base": (11, _u64, "byte offset of each core's rows in xbar (cores+1)"),
    "core_xbar_rows": (12, _u16, "physical crossbar rows stored for each core"),
    "xbar": (13, _u8, "packed crossbar bits of all cores (see Crossbar below)"),
    "neu_th_pos": (14, _u32, "positive firing threshold of each neuron"),
    "neu_th_neg": (15, _u32, "negative threshold (magnitude) of each neuron"),
    "neu_v_reset": (16, _i32, "membrane potential each neuron is reset to"),
    "neu_v_init": (17, _i32, "initial membrane potential of each neuron"),
    "neu_bias": (18, _i32, "constant input added to each neuron every tick"),
    "neu_leak": (19, _i16, "leak of each neuron (meaning set by its leak mode)"),
    "neu_shift": (20, _u8, "leak shift amount of each neuron"),
    "neu_mode": (21, _u8, "bits 0-1 reset mode, bit 2 negative mode, bits 3-4 leak mode"),
    "neu_route_base": (22, _u32, "prefix offsets of neurons into rt_* (neurons+1)"),
    "rt_chip": (23, _u16, "destination chip of each neuron route entry"),
    "rt_x": (24, _u8, "destination core x of each neuron route entry"),
    "rt_y": (25, _u8, "destination core y of each neuron route entry"),
    "rt_axon": (26, _u16, "destination axon of each neuron route entry"),
    "rt_delay": (27, _u8, "delay in ticks of each neuron route entry"),
    "in_route_base": (28, _u32, "prefix offsets of inputs into in_rt_* (inputs+1)"),
    "in_rt_chip": (29, _u16, "destination chip of each input route entry"),
    "in_rt_x": (30, _u8, "destination core x of each input route entry"),
    "in_rt_y": (31, _u8, "destination core y of each input route entry"),
    "in_rt_axon": (32, _u16, "destination axon of each input route entry"),
    "in_rt_delay": (33, _u8, "delay in ticks of each input route entry"),
    "neu_index": (34, _u32, "index of each neuron within its layer"),
    # logical-layer descriptors (format 1.1, compiler/backend/layerdesc.py)
    "op_table": (48, _i64, "per layer op: structure row (see Layer descriptors)"),
    "op_weights": (49, _i8, "integers of every op: parameter id = index here"),
    "op_index": (50, _u32, "CSR indptr + indices of sparse ops"),
    "op_info": (51, _u8, "UTF-8 JSON list: per op its weight node and 'trained'"),
}
KIND_NAMES: dict[int, str] = {kind: name for name, (kind, _, _) in SECTIONS.items()}

_CORRUPT_HINT = ("the file is damaged (truncated, edited, or mangled by a text-mode transfer); "
                 "copy it again in binary mode or recompile it with `snnc compile`")


@dataclass(frozen=True)
class SectionInfo:
    """One section table entry as read (for :func:`describe` and debugging)."""

    name: str            #: registry name, or ``"kind <k>"`` for a skipped unknown kind
    kind: int
    dtype: np.dtype | None   #: None for a skipped kind with a dtype code this reader lacks
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    crc32: int
    skipped: bool = False


@dataclass(frozen=True, eq=False)
class ChipFile:
    """A validated chip.bin.

    Attributes:
        version: (major, minor) format version stored in the file.
        spec_digest: SHA-256 of the target ChipSpec, lowercase hex.
        meta: the decoded ``meta`` JSON object (``{}`` when the file has no meta section).
        arrays: every other known section, name -> read-only ndarray (registry dtype, stored
            shape), in kind order. Views into the file's bytes, not copies.
        table: every section table entry, in file order (skipped unknown kinds included).
        source: the path read, or ``"<memory>"``.
    """

    version: tuple[int, int]
    spec_digest: str
    meta: dict
    arrays: dict[str, np.ndarray]
    table: tuple[SectionInfo, ...] = ()
    source: str = "<memory>"


# ------------------------------------------------------------------------------------------
# writing


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _meta_bytes(meta) -> np.ndarray:
    """``meta`` as a dict (serialised) or u8 array (validated) -> 1-D u8 array of JSON bytes."""
    if isinstance(meta, Mapping):
        try:
            raw = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:  # UnicodeEncodeError (lone surrogate) included
            raise ValueError(f"section 'meta': not JSON-serialisable ({e}); use plain int, "
                             "finite float, str, bool, None, list and dict values") from e
        return np.frombuffer(raw, np.uint8)
    if isinstance(meta, np.ndarray) and meta.dtype == _u8 and meta.ndim == 1:
        try:
            _decode_meta(meta.tobytes(), "<write>")
        except BinaryFormatError as e:
            raise ValueError(e.message) from e
        return meta
    raise ValueError(f"section 'meta': expected a dict (or a 1-D u8 array of JSON bytes), "
                     f"got {type(meta).__name__}")


def _checked(name: str, arr) -> np.ndarray:
    """Registry check of one section array -> C-contiguous little-endian array."""
    if name not in SECTIONS:
        raise ValueError(f"unknown section '{name}'; known sections: {', '.join(SECTIONS)}")
    if name == "meta":
        return _meta_bytes(arr)
    want = SECTIONS[name][1]
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"section '{name}': expected a numpy array of dtype {want}, got "
                         f"{type(arr).__name__}")
    # Same kind and width: only the byte order may differ; anything else is a caller bug that
    # a silent cast would hide (e.g. an int64 weight that does not fit in u8).
    if arr.dtype.kind != want.kind or arr.dtype.itemsize != want.itemsize:
        raise ValueError(f"section '{name}': dtype {arr.dtype} does not match the registry "
                         f"dtype {want}; cast it explicitly (after a range check)")
    if arr.ndim > MAX_NDIM:
        raise ValueError(f"section '{name}': {arr.ndim} dimensions > {MAX_NDIM}")
    return np.asarray(arr, dtype=want, order="C")  # keeps 0-d arrays 0-d


def _pack(items: list[tuple[int, int, np.ndarray]], digest: bytes,
          version: tuple[int, int] = FORMAT_VERSION) -> bytes:
    """Lay out ``(kind, dtype code, array)`` items (any kinds, any version) as file bytes.

    No registry checks: :func:`to_bytes` does those. Tests use this to build files a current
    writer never produces (unknown kinds, other versions) with valid checksums.
    """
    items = sorted(items, key=lambda t: t[0])
    table_end = HEADER_SIZE + SECTION_SIZE * len(items)
    cursor = _align(table_end)
    entries, blobs = [], []
    for kind, code, arr in items:
        shape = tuple(int(d) for d in np.shape(arr))
        # an unknown code (tests of newer minor versions) stores the array's bytes as they are
        data = np.asarray(arr, dtype=DTYPES.get(code), order="C").tobytes()
        dims = shape + (0,) * (MAX_NDIM - len(shape))
        entries.append(struct.pack(SECTION_FMT, kind, code, cursor, len(data),
                                   zlib.crc32(data), len(shape), *dims))
        blobs.append((cursor, data))
        cursor = _align(cursor + len(data))
    out = bytearray(cursor)
    table = b"".join(entries)
    out[HEADER_SIZE:table_end] = table
    for off, data in blobs:
        out[off:off + len(data)] = data
    header = bytearray(struct.pack(HEADER_FMT, MAGIC, version[0], version[1], len(items),
                                   digest, 0))
    crc = zlib.crc32(table, zlib.crc32(header))
    struct.pack_into(HEADER_CRC_FMT, header, HEADER_CRC_OFFSET, crc)
    out[:HEADER_SIZE] = header
    return bytes(out)


def _digest_bytes(spec_digest: str) -> bytes:
    try:
        raw = bytes.fromhex(spec_digest)
    except (TypeError, ValueError) as e:
        raise ValueError(f"spec_digest must be a hex string, got {spec_digest!r}") from e
    if len(raw) != DIGEST_SIZE:
        raise ValueError(f"spec_digest must be a SHA-256 ({2 * DIGEST_SIZE} hex digits), got "
                         f"{len(spec_digest)} characters")
    return raw


def to_bytes(sections: Mapping[str, np.ndarray | dict], spec_digest: str) -> bytes:
    """The exact bytes :func:`write` would write.

    Args:
        sections: registry name -> array of the registry dtype (byte order may differ; it is
            written little-endian); ``"meta"`` may be a dict (serialised as compact JSON with
            sorted keys) or a 1-D u8 array of such JSON bytes.
        spec_digest: SHA-256 of the target ChipSpec as 64 hex digits.

    Returns:
        The file content.

    Raises:
        ValueError: unknown section name, wrong dtype, more than 4 dimensions, meta not a JSON
            object, or a malformed digest.
    """
    digest = _digest_bytes(spec_digest)
    items = []
    for name, arr in sections.items():
        a = _checked(name, arr)
        kind, dtype, _ = SECTIONS[name]
        items.append((kind, _CODES[dtype.str], a))
    return _pack(items, digest)


def write(path: str | os.PathLike, sections: Mapping[str, np.ndarray | dict],
          spec_digest: str) -> None:
    """Write ``sections`` to ``path`` as chip.bin, deterministically and atomically.

    The bytes go to a temporary file in the same directory, which is fsynced and then renamed
    over ``path`` (``os.replace``). On any failure the temporary file is removed and ``path``
    is untouched (an existing file keeps its old content).

    Args:
        path: output file.
        sections: see :func:`to_bytes`.
        spec_digest: SHA-256 of the target ChipSpec as 64 hex digits.

    Raises:
        ValueError: see :func:`to_bytes`.
        OSError: the directory is missing or not writable.
    """
    path = Path(path)
    data = to_bytes(sections, spec_digest)
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path}: the folder "
                                f"'{path.parent}' does not exist", str(path))
    tmp = None
    try:
        # os.open with 0o666 lets the umask decide the final mode, as a plain open() would
        # (mkstemp would leave the output 0600).
        for _ in range(100):
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
                fd = os.open(tmp, flags, 0o666)
                break
            except FileExistsError:
                tmp = None
            except OSError as e:  # name the target, not our temporary file
                tmp = None
                raise OSError(e.errno, f"cannot write {path}: {e.strerror}", str(path)) from e
        else:  # pragma: no cover - 100 random 48-bit names all taken
            raise FileExistsError(f"could not create a temporary file next to {path}")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    log.debug("wrote %s (%d bytes, %d sections)", path, len(data), len(sections))


# ------------------------------------------------------------------------------------------
# reading


def _decode_meta(raw: bytes, src: str) -> dict:
    def bad(why: str) -> BinaryFormatError:
        return BinaryFormatError(f"{src}: section 'meta': {why}", _CORRUPT_HINT)

    def no_constant(c: str):
        raise ValueError(f"non-standard JSON constant {c}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"not valid UTF-8 ({e})") from e
    try:
        obj = json.loads(text, parse_constant=no_constant)
    except ValueError as e:
        raise bad(f"not valid JSON ({e})") from e
    except RecursionError as e:
        raise bad("JSON nested too deeply") from e
    if not isinstance(obj, dict):
        raise bad(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read(path: str | os.PathLike) -> ChipFile:
    """Read and validate a chip.bin file.

    Args:
        path: the file.

    Returns:
        The validated :class:`ChipFile`; its arrays are read-only views into the file's bytes.

    Raises:
        BinaryFormatError: the file is missing, unreadable, truncated or malformed;
            more precisely ``BadMagicError``, ``FormatVersionError`` or ``ChecksumError`` (whose
            ``section`` is ``"header"`` or the section name) for those checks.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(21, "is a directory")
            if not stat.S_ISREG(st.st_mode):  # /dev/zero, a pipe: no size, maybe no end
                raise BinaryFormatError(f"{os.fspath(path)}: not a regular file",
                                        _NOT_IMAGE_HINT)
            if st.st_size > MAX_FILE_BYTES:
                raise BinaryFormatError(
                    f"{os.fspath(path)}: file is {st.st_size} bytes, more than the "
                    f"{MAX_FILE_BYTES}-byte limit of a chip.bin", _NOT_IMAGE_HINT)
            buf = f.read(MAX_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
        if len(buf) > MAX_FILE_BYTES:
            raise BinaryFormatError(f"{os.fspath(path)}: more than {MAX_FILE_BYTES} bytes",
                                    _NOT_IMAGE_HINT)
    except OSError as e:
        raise BinaryFormatError(f"{os.fspath(path)}: cannot read chip.bin ({e.strerror or e})",
                                "check the path; create the file with `snnc compile`") from e
    return read_bytes(buf, source=os.fspath(path))


def read_bytes(buf: bytes | bytearray | memoryview, source: str = "<memory>") -> ChipFile:
    """Validate chip.bin content held in memory (see :func:`read`).

    ``buf`` is copied only if it is mutable, so the returned arrays can never change.
    ``source`` names the data in error messages.
    """
    buf = bytes(buf)
    src = source
    size = len(buf)

    def bad(what: str, hint: str = _CORRUPT_HINT) -> BinaryFormatError:
        return BinaryFormatError(f"{src}: {what}", hint)

    if size < HEADER_SIZE:
        raise bad(f"header: file is {size} bytes, shorter than the {HEADER_SIZE}-byte header "
                  "(truncated, or not a chip.bin file)")
    magic, major, minor, count, digest, stored_crc = struct.unpack_from(HEADER_FMT, buf, 0)
    if magic != MAGIC:
        raise BadMagicError(
            f"{src}: not a chip.bin file (bad magic): header starts with {magic!r}, expected "
            f"{MAGIC!r}",
            "pass a file written by `snnc compile` (not the model file); a file copied in text "
            "mode has its CR LF or high bytes changed, copy it again in binary mode")
    ours = FORMAT_VERSION
    if major != ours[0]:
        hint = ("this file is newer than this snnc: upgrade snnc, or recompile the model with "
                "this snnc" if major > ours[0] else
                "this file is older than this snnc: recompile the model with this snnc "
                "(`snnc compile`)")
        raise FormatVersionError(f"{src}: header: format version {major}.{minor} is not "
                                 f"supported (this snnc reads {ours[0]}.x, up to "
                                 f"{ours[0]}.{ours[1]})", hint)
    table_end = HEADER_SIZE + SECTION_SIZE * count
    if table_end > size:
        raise bad(f"section table: {count} entries need {table_end} bytes, file is {size} bytes")
    header = bytearray(buf[:HEADER_SIZE])
    struct.pack_into(HEADER_CRC_FMT, header, HEADER_CRC_OFFSET, 0)
    crc = zlib.crc32(memoryview(buf)[HEADER_SIZE:table_end], zlib.crc32(header))
    if crc != stored_crc:
        raise ChecksumError(f"{src}: header CRC32 mismatch (stored 0x{stored_crc:08x}, computed "
                            f"0x{crc:08x}; covers the header and section table)", "header",
                            _CORRUPT_HINT)

    # --- the section table ----------------------------------------------------------------
    infos: list[SectionInfo] = []
    prev_kind = 0
    for i in range(count):
        at = HEADER_SIZE + i * SECTION_SIZE
        kind, code, off, nbytes, scrc, ndim, *dims = struct.unpack_from(SECTION_FMT, buf, at)
        known = kind in KIND_NAMES
        name = KIND_NAMES.get(kind, f"kind {kind}")
        where = f"section table entry {i} (section '{name}')"
        if kind <= prev_kind:
            raise bad(f"{where}: kinds must be strictly increasing, got {kind} after {prev_kind}")
        prev_kind = kind
        if not known and minor <= ours[1]:
            raise bad(f"{where}: unknown section kind {kind} in a version {major}.{minor} file "
                      f"(this snnc knows kinds {min(KIND_NAMES)}-{max(KIND_NAMES)} of version "
                      f"{ours[0]}.{ours[1]})")
        if buf[at + SECTION_SIZE - 4:at + SECTION_SIZE] != b"\0\0\0\0":
            raise bad(f"{where}: reserved bytes are not zero")
        if ndim > MAX_NDIM:
            raise bad(f"{where}: ndim {ndim} > {MAX_NDIM}")
        if any(dims[ndim:]):
            raise bad(f"{where}: unused shape dims {dims[ndim:]} are not zero")
        shape = tuple(dims[:ndim])
        dtype = DTYPES.get(code)
        if known:
            want = SECTIONS[name][1]
            if dtype is None:
                raise bad(f"{where}: unknown dtype code {code} (known: {sorted(DTYPES)})")
            if dtype != want:
                raise bad(f"{where}: dtype {dtype} (code {code}), expected {want}")
        if dtype is not None and nbytes != dtype.itemsize * math.prod(shape):
            raise bad(f"{where}: nbytes {nbytes} != itemsize {dtype.itemsize} x shape {shape}")
        if off % ALIGN:
            raise bad(f"{where}: offset {off} is not a multiple of {ALIGN}")
        if off < table_end:
            raise bad(f"{where}: offset {off} lies inside the header/section table "
                      f"(ends at {table_end})")
        if off + nbytes > size:
            raise bad(f"{where}: data {off}..{off + nbytes} extends beyond the end of the file "
                      f"({size} bytes; truncated?)")
        infos.append(SectionInfo(name, kind, dtype, shape, off, nbytes, scrc, not known))

    # --- layout: no overlap, zero padding, exact length -------------------------------------
    end = table_end
    last = "section table"
    for s in infos:
        if s.offset < end:
            raise bad(f"section '{s.name}': data at {s.offset} overlaps {last} (ends at {end})")
        if buf.count(0, end, s.offset) != s.offset - end:
            raise bad(f"padding before section '{s.name}' (bytes {end}..{s.offset}) is not zero")
        end, last = s.offset + s.nbytes, f"section '{s.name}'"
    if size != _align(end):
        raise bad(f"file is {size} bytes, expected {_align(end)} (end of {last} rounded up to "
                  f"{ALIGN}); trailing or missing bytes")
    if buf.count(0, end, size) != size - end:
        raise bad(f"padding after {last} (bytes {end}..{size}) is not zero")

    # --- section checksums, then the arrays -------------------------------------------------
    view = memoryview(buf)
    for s in infos:
        crc = zlib.crc32(view[s.offset:s.offset + s.nbytes])
        if crc != s.crc32:
            raise ChecksumError(f"{src}: section '{s.name}': CRC32 mismatch (stored "
                                f"0x{s.crc32:08x}, computed 0x{crc:08x})", s.name,
                                _CORRUPT_HINT)
    meta: dict = {}
    arrays: dict[str, np.ndarray] = {}
    for s in infos:
        if s.skipped:
            log.debug("%s: skipping section kind %d of a newer minor version", src, s.kind)
            continue
        if s.name == "meta":
            meta = _decode_meta(buf[s.offset:s.offset + s.nbytes], src)
            continue
        assert s.dtype is not None
        count_ = s.nbytes // s.dtype.itemsize
        if count_:
            a = np.frombuffer(buf, s.dtype, count_, s.offset).reshape(s.shape)
        else:
            a = np.zeros(s.shape, s.dtype)
            a.flags.writeable = False
        arrays[s.name] = a
    return ChipFile((major, minor), digest.hex(), meta, arrays, tuple(infos), src)


# ------------------------------------------------------------------------------------------
# inspection


def describe(chipfile: ChipFile) -> str:
    """A human-readable table of a file's sections: name, dtype, shape, bytes, CRC32."""
    major, minor = chipfile.version
    lines = [f"{chipfile.source}: chip.bin format {major}.{minor}, spec sha256 "
             f"{chipfile.spec_digest}, {len(chipfile.table)} sections"]
    for s in chipfile.table:
        dt = "?" if s.dtype is None else s.dtype.name
        note = "  (skipped: unknown kind)" if s.skipped else ""
        lines.append(f"  {s.name:<17} {dt:<7} {str(s.shape):<14} {s.nbytes:>10} B  "
                     f"crc32 0x{s.crc32:08x}  @{s.offset}{note}")
    return "\n".join(lines)


def markdown() -> str:
    """This module's docstring (the format specification) as a Markdown document."""
    doc = (__doc__ or "").strip()
    title, _, body = doc.partition("\n")
    return (f"# {title}\n\n<!-- generated by `python -m compiler.backend.binfmt --markdown`; "
            f"edit compiler/backend/binfmt.py instead -->\n{body}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compiler.backend.binfmt",
                                description="chip.bin format specification and inspector")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--markdown", action="store_true", help="print the format spec as Markdown")
    g.add_argument("file", nargs="?", help="chip.bin to validate and describe")
    args = p.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    try:
        print(describe(read(args.file)))
    except BinaryFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
