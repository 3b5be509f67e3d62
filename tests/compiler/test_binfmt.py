"""chip.bin byte format (compiler/backend/binfmt.py): layout constants, round trips, determinism,
and that every kind of damage is refused with a precise BinaryFormatError subclass."""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.backend import binfmt
from compiler.errors import (
    BadMagicError,
    BinaryFormatError,
    ChecksumError,
    FormatVersionError,
)

DIGEST = hashlib.sha256(b"picore64").hexdigest()
ARRAY_NAMES = [n for n in binfmt.SECTIONS if n != "meta"]
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The registry the format promises (brief + neu_index): order = kind ids 1, 2, ...
EXPECTED = [
    ("meta", "u1"), ("core_chip", "<u2"), ("core_x", "u1"), ("core_y", "u1"), ("core_w", "u1"),
    ("core_lcn", "u1"), ("core_layer", "<u2"), ("core_tick_start", "<u2"),
    ("core_neuron_base", "<u4"), ("core_axon_base", "<u4"), ("core_xbar_base", "<u8"),
    ("core_xbar_rows", "<u2"), ("xbar", "u1"), ("neu_th_pos", "<u4"), ("neu_th_neg", "<u4"),
    ("neu_v_reset", "<i4"), ("neu_v_init", "<i4"), ("neu_bias", "<i4"), ("neu_leak", "<i2"),
    ("neu_shift", "u1"), ("neu_mode", "u1"), ("neu_route_base", "<u4"), ("rt_chip", "<u2"),
    ("rt_x", "u1"), ("rt_y", "u1"), ("rt_axon", "<u2"), ("rt_delay", "u1"),
    ("in_route_base", "<u4"), ("in_rt_chip", "<u2"), ("in_rt_x", "u1"), ("in_rt_y", "u1"),
    ("in_rt_axon", "<u2"), ("in_rt_delay", "u1"), ("neu_index", "<u4"),
]
# format 1.1: logical-layer descriptors (kinds 48-51)
EXPECTED_OPS = [("op_table", "<i8"), ("op_weights", "i1"), ("op_index", "<u4"), ("op_info", "u1")]


def sample_sections() -> dict:
    """A small image with every awkward case: meta with non-ASCII, a 2-D array, an empty array,
    odd byte counts (so there is padding between sections) and every registry integer width."""
    rng = np.random.default_rng(0)
    return {
        "meta": {"name": "net-é", "layers": [{"shape": [2, 3], "bits": 4}], "scale": 0.125},
        "core_chip": np.array([0, 1, 65535], np.uint16),
        "core_xbar_base": np.array([0, 8, 24, 2**40], np.uint64),
        "xbar": rng.integers(0, 256, (3, 7), dtype=np.uint8),
        "neu_v_reset": np.array([-(2**31), 0, 2**31 - 1], np.int32),
        "neu_leak": np.array([-3, 5, -32768], np.int16),
        "rt_x": np.zeros(0, np.uint8),
        "neu_index": np.arange(5, dtype=np.uint32),
    }


@pytest.fixture(scope="module")
def sample() -> bytes:
    return binfmt.to_bytes(sample_sections(), DIGEST)


def assert_same(sections: dict, cf: binfmt.ChipFile) -> None:
    assert cf.version == binfmt.FORMAT_VERSION
    assert cf.spec_digest == DIGEST
    assert cf.meta == sections.get("meta", {})
    assert set(cf.arrays) == set(sections) - {"meta"}
    for name, a in cf.arrays.items():
        want = sections[name]
        assert a.dtype == binfmt.SECTIONS[name][1]
        assert a.shape == want.shape
        np.testing.assert_array_equal(a, want)
        assert not a.flags.writeable


# --- layout constants ----------------------------------------------------------------------

def test_struct_sizes():
    assert struct.calcsize(binfmt.HEADER_FMT) == binfmt.HEADER_SIZE == 64
    assert struct.calcsize(binfmt.SECTION_FMT) == binfmt.SECTION_SIZE == 64
    assert struct.calcsize(binfmt.HEADER_CRC_FMT) == 4
    # the CRC field follows magic, major, minor, count and the digest
    assert struct.calcsize("<8sHHI32s") == binfmt.HEADER_CRC_OFFSET
    assert struct.calcsize("<HHQQI") == 24  # kind, dtype, offset, nbytes, crc32
    assert binfmt.ALIGN == 64 and binfmt.SECTION_SIZE % binfmt.ALIGN == 0
    assert len(binfmt.MAGIC) == 8 and binfmt.MAGIC == b"\x93SNNB\r\n\x00"
    assert binfmt.FORMAT_VERSION == (1, 1)   # 1.1: logical-layer descriptors (op_*)


def test_registry():
    assert [(n, dt) for n, (_, dt, _) in binfmt.SECTIONS.items()] == [
        (n, np.dtype(d)) for n, d in EXPECTED + EXPECTED_OPS]
    assert [k for k, _, _ in binfmt.SECTIONS.values()] == (list(range(1, len(EXPECTED) + 1))
                                                           + [48, 49, 50, 51])
    codes = {dt.str for dt in binfmt.DTYPES.values()}
    for name, (_, dt, desc) in binfmt.SECTIONS.items():
        assert dt.str in codes, name
        assert desc and "\n" not in desc, name


def test_docstring_is_the_spec():
    doc = binfmt.__doc__
    for name, (kind, dt, desc) in binfmt.SECTIONS.items():
        short = f"{dt.kind}{8 * dt.itemsize}"
        row = rf"\|\s*{kind}\s*\|\s*{name}\s*\|\s*{short}\s*\|\s*{re.escape(desc)}\s*\|"
        assert re.search(row, doc), f"docstring table row for {name!r} is out of date"
    for fmt in (binfmt.HEADER_FMT, binfmt.SECTION_FMT):
        assert f'"{fmt}"' in doc


def test_markdown_and_docs_in_sync(capsys):
    assert binfmt.main(["--markdown"]) == 0
    out = capsys.readouterr().out
    assert out == binfmt.markdown() and out.startswith("# chip.bin")
    doc = Path(__file__).resolve().parents[2] / "docs" / "binfmt.md"
    if doc.exists():
        assert doc.read_text(encoding="utf-8") == out, (
            "regenerate: python -m compiler.backend.binfmt --markdown > docs/binfmt.md")


# --- round trip and determinism ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=10)


@st.composite
def section_dicts(draw) -> dict:
    names = draw(st.lists(st.sampled_from(ARRAY_NAMES), unique=True, max_size=6))
    out: dict = {}
    for name in names:
        dt = binfmt.SECTIONS[name][1]
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
        out[name] = draw(hnp.arrays(dt, shape))
    if draw(st.booleans()):
        out["meta"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
    return out


@FAST
@given(section_dicts())
def test_round_trip(sections):
    buf = binfmt.to_bytes(sections, DIGEST)
    assert len(buf) % binfmt.ALIGN == 0
    cf = binfmt.read_bytes(buf)
    assert_same(sections, cf)
    for s in cf.table:
        assert s.offset % binfmt.ALIGN == 0
    assert [s.kind for s in cf.table] == sorted(s.kind for s in cf.table)
    # deterministic: the same input, in any dict order, gives the same bytes
    assert binfmt.to_bytes(dict(reversed(list(sections.items()))), DIGEST) == buf


def test_write_read_file(tmp_path, sample):
    p = tmp_path / "chip.bin"
    binfmt.write(p, sample_sections(), DIGEST)
    assert p.read_bytes() == sample
    first = p.read_bytes()
    binfmt.write(str(p), sample_sections(), DIGEST)  # overwrite, str path
    assert p.read_bytes() == first
    assert os.listdir(tmp_path) == ["chip.bin"]
    cf = binfmt.read(p)
    assert_same(sample_sections(), cf)
    assert cf.source == str(p)


def test_arrays_are_zero_copy_aligned_views(sample):
    cf = binfmt.read_bytes(sample)
    for s in cf.table:
        assert s.offset % 64 == 0
        if s.name != "meta" and s.nbytes:
            a = cf.arrays[s.name]
            assert not a.flags.owndata and a.flags.c_contiguous and a.flags.aligned
    with pytest.raises(ValueError):
        cf.arrays["neu_leak"][0] = 1


def test_read_bytes_is_isolated_from_a_mutable_buffer(sample):
    buf = bytearray(sample)
    cf = binfmt.read_bytes(buf)
    buf[:] = bytes(len(buf))
    assert_same(sample_sections(), cf)


def test_byte_order_is_normalised():
    le = np.array([1, 2, 258], "<u2")
    a = binfmt.to_bytes({"core_chip": le}, DIGEST)
    b = binfmt.to_bytes({"core_chip": le.astype(">u2")}, DIGEST)
    assert a == b


def test_describe(sample):
    text = binfmt.describe(binfmt.read_bytes(sample))
    lines = text.splitlines()
    assert len(lines) == 1 + len(sample_sections())
    assert "%d.%d" % binfmt.FORMAT_VERSION in lines[0] and DIGEST in lines[0]
    assert re.search(r"xbar\s+uint8\s+\(3, 7\)\s+21 B\s+crc32 0x[0-9a-f]{8}", text)


def test_cli_describe(tmp_path, capsys, sample):
    p = tmp_path / "chip.bin"
    p.write_bytes(sample)
    assert binfmt.main([str(p)]) == 0
    assert "neu_index" in capsys.readouterr().out
    p.write_bytes(sample[:-1])
    assert binfmt.main([str(p)]) == 1
    assert str(p) in capsys.readouterr().err


# --- every byte is covered -----------------------------------------------------------------

def section_at(cf: binfmt.ChipFile, pos: int) -> str | None:
    for s in cf.table:
        if s.offset <= pos < s.offset + s.nbytes:
            return s.name
    return None


def expected_error(cf: binfmt.ChipFile, pos: int):
    """(exception class, ChecksumError section or None, message fragment) for damage at pos."""
    table_end = binfmt.HEADER_SIZE + binfmt.SECTION_SIZE * len(cf.table)
    owner = section_at(cf, pos)
    if pos < 8:
        return BadMagicError, None, "bad magic"
    if pos < 10:
        return FormatVersionError, None, "format version"
    if pos < 12 or 16 <= pos < table_end:  # minor, digest, CRC, reserved, table
        return ChecksumError, "header", "header CRC32"
    if pos < 16:  # section count: the table moves, so either bounds or the header CRC fail
        return BinaryFormatError, None, ""
    if owner is not None:
        return ChecksumError, owner, f"'{owner}': CRC32"
    return BinaryFormatError, None, "padding"


def test_flipping_any_bit_is_detected_precisely(sample):
    cf = binfmt.read_bytes(sample)
    for pos in range(len(sample)):
        cls, section, fragment = expected_error(cf, pos)
        for bit in range(8):
            bad = bytearray(sample)
            bad[pos] ^= 1 << bit
            with pytest.raises(cls, match=re.escape(fragment) or None) as ei:
                binfmt.read_bytes(bad)
            if section is not None:
                assert ei.value.section == section, pos


@FAST
@given(section_dicts(), st.data())
def test_flipping_any_byte_of_any_file_is_detected(sections, data):
    buf = binfmt.to_bytes(sections, DIGEST)
    pos = data.draw(st.integers(0, len(buf) - 1), label="pos")
    xor = data.draw(st.integers(1, 255), label="xor")
    bad = bytearray(buf)
    bad[pos] ^= xor
    cls, section, fragment = expected_error(binfmt.read_bytes(buf), pos)
    with pytest.raises(cls, match=re.escape(fragment) or None) as ei:
        binfmt.read_bytes(bad)
    if section is not None:
        assert ei.value.section == section


def test_error_messages_name_file_and_section(tmp_path, sample):
    cf = binfmt.read_bytes(sample)
    xbar = next(s for s in cf.table if s.name == "xbar")
    bad = bytearray(sample)
    bad[xbar.offset + 3] ^= 0x10
    p = tmp_path / "chip.bin"
    p.write_bytes(bytes(bad))
    with pytest.raises(ChecksumError) as ei:
        binfmt.read(p)
    assert ei.value.section == "xbar"
    assert str(p) in str(ei.value) and "'xbar'" in str(ei.value) and ei.value.hint
    bad = bytearray(sample)
    bad[binfmt.HEADER_SIZE + 5] ^= 1  # section table
    with pytest.raises(ChecksumError) as ei:
        binfmt.read_bytes(bad, source="x.bin")
    assert ei.value.section == "header" and "x.bin" in str(ei.value)


def test_nonzero_padding_is_refused(sample):
    cf = binfmt.read_bytes(sample)
    ends = [s.offset + s.nbytes for s in cf.table]
    gaps = [e for e in ends if e % 64]
    assert gaps, "sample must have padding"
    for e in gaps:
        bad = bytearray(sample)
        bad[e] = 1
        with pytest.raises(BinaryFormatError, match="padding"):
            binfmt.read_bytes(bad)


# --- truncation, magic, version, kinds -----------------------------------------------------

def test_truncated_or_extended_file(sample):
    for n in range(len(sample)):
        with pytest.raises(BinaryFormatError):
            binfmt.read_bytes(sample[:n])
    with pytest.raises(BinaryFormatError, match="header"):
        binfmt.read_bytes(sample[:63])
    last = binfmt.read_bytes(sample).table[-1]
    with pytest.raises(BinaryFormatError, match="'neu_index'.*beyond the end"):
        binfmt.read_bytes(sample[:last.offset + last.nbytes - 1])
    with pytest.raises(BinaryFormatError, match="expected 1088"):
        binfmt.read_bytes(sample[:-1])
    for extra in (b"\0", bytes(64), b"x" * 64):
        with pytest.raises(BinaryFormatError):
            binfmt.read_bytes(sample + extra)


def test_bad_magic(tmp_path, sample):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(100))
    with pytest.raises(BadMagicError, match=r"not a chip.bin file \(bad magic\)") as ei:
        binfmt.read(p)
    assert str(p) in str(ei.value) and ei.value.hint
    # a text-mode transfer turns CR LF into LF
    with pytest.raises(BadMagicError):
        binfmt.read_bytes(sample.replace(b"\r\n", b"\n", 1))


def packed(version=binfmt.FORMAT_VERSION, extra=()):
    items = [(1, 1, np.frombuffer(b'{"a":1}', np.uint8)), (13, 1, np.arange(5, dtype=np.uint8))]
    return binfmt._pack(items + list(extra), bytes.fromhex(DIGEST), version)


def test_packed_helper_matches_writer():
    assert packed() == binfmt.to_bytes({"meta": {"a": 1}, "xbar": np.arange(5, dtype=np.uint8)},
                                       DIGEST)


@pytest.mark.parametrize("version, hint", [((2, 0), "upgrade snnc"), ((0, 9), "recompile")])
def test_other_major_version(version, hint):
    buf = packed(version)
    with pytest.raises(FormatVersionError) as ei:
        binfmt.read_bytes(buf)
    msg = str(ei.value)
    assert f"{version[0]}.{version[1]}" in msg and "1.x" in msg and hint in msg
    # the version is checked before the header CRC
    bad = bytearray(buf)
    bad[binfmt.HEADER_CRC_OFFSET] ^= 1
    with pytest.raises(FormatVersionError):
        binfmt.read_bytes(bad)


def test_unknown_kind_same_minor_is_an_error():
    buf = packed(extra=[(500, 1, np.zeros(3, np.uint8))])
    with pytest.raises(BinaryFormatError, match="unknown section kind 500") as ei:
        binfmt.read_bytes(buf)
    assert type(ei.value) is BinaryFormatError


def test_unknown_kind_higher_minor_is_skipped_but_checked():
    future = np.arange(6, dtype=np.uint16)
    buf = packed((1, 3), extra=[(500, 3, future), (600, 99, np.zeros(2, np.uint8))])
    cf = binfmt.read_bytes(buf)
    assert cf.version == (1, 3) and cf.meta == {"a": 1} and set(cf.arrays) == {"xbar"}
    skipped = [s for s in cf.table if s.skipped]
    assert [s.kind for s in skipped] == [500, 600]
    assert "skipped" in binfmt.describe(cf)
    bad = bytearray(buf)
    bad[skipped[0].offset] ^= 1
    with pytest.raises(ChecksumError) as ei:
        binfmt.read_bytes(bad)
    assert ei.value.section == "kind 500"


def test_known_kind_with_wrong_dtype_code_is_refused():
    buf = binfmt._pack([(13, 3, np.arange(4, dtype=np.uint16))], bytes.fromhex(DIGEST))
    with pytest.raises(BinaryFormatError, match="'xbar'.*dtype"):
        binfmt.read_bytes(buf)


def test_bad_meta_is_refused():
    for raw in (b"\xff\xfe", b"[1, 2]", b"{", b'{"x": NaN}'):
        buf = binfmt._pack([(1, 1, np.frombuffer(raw, np.uint8))], bytes.fromhex(DIGEST))
        with pytest.raises(BinaryFormatError, match="'meta'"):
            binfmt.read_bytes(buf)


def test_file_not_found_and_directory(tmp_path):
    missing = tmp_path / "nope" / "chip.bin"
    with pytest.raises(BinaryFormatError, match=re.escape(str(missing))):
        binfmt.read(missing)
    with pytest.raises(BinaryFormatError, match=re.escape(str(tmp_path))):
        binfmt.read(tmp_path)


# --- writer validation and atomicity -------------------------------------------------------

@pytest.mark.parametrize("sections, match", [
    ({"xbar": np.zeros(3, np.int64)}, "dtype"),
    ({"neu_leak": np.zeros(3, np.uint16)}, "dtype"),   # same width, wrong signedness
    ({"neu_th_pos": np.zeros(3, np.float32)}, "dtype"),
    ({"xbar": [1, 2, 3]}, "numpy array"),
    ({"weights": np.zeros(3, np.uint8)}, "unknown section 'weights'"),
    ({"xbar": np.zeros((1,) * 5, np.uint8)}, "dimensions"),
    ({"meta": {"x": float("nan")}}, "meta"),
    ({"meta": {"x": np.int64(3)}}, "meta"),
    ({"meta": [1, 2]}, "meta"),
    ({"meta": np.frombuffer(b"[1]", np.uint8)}, "meta"),
])
def test_write_refuses_bad_sections_and_leaves_nothing(tmp_path, sections, match):
    p = tmp_path / "chip.bin"
    with pytest.raises(ValueError, match=match):
        binfmt.write(p, sections, DIGEST)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("digest", ["abc", DIGEST[:-2], "zz" * 32, DIGEST + "00"])
def test_write_refuses_bad_digest(digest):
    with pytest.raises(ValueError, match="spec_digest"):
        binfmt.to_bytes({}, digest)


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch, fail):
    p = tmp_path / "chip.bin"
    p.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(binfmt.os, fail, boom)
    with pytest.raises(OSError, match="disk full"):
        binfmt.write(p, sample_sections(), DIGEST)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["chip.bin"] and p.read_bytes() == b"old"


def test_empty_image():
    buf = binfmt.to_bytes({}, DIGEST)
    assert len(buf) == 64
    cf = binfmt.read_bytes(buf)
    assert cf.meta == {} and cf.arrays == {} and cf.table == ()


def test_large_section_sizes_are_exact():
    # nbytes is checked against itemsize * prod(shape) with Python ints (no overflow)
    a = np.zeros((3, 0, 2), np.uint64)
    cf = binfmt.read_bytes(binfmt.to_bytes({"core_xbar_base": a}, DIGEST))
    assert cf.arrays["core_xbar_base"].shape == (3, 0, 2)
    assert math.prod(cf.table[0].shape) == 0
