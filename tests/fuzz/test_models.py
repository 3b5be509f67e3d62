"""Damaged model files (ONNX, NIR): every load ends in an SnnError or a valid graph."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from compiler.errors import SnnError
from frontends import load_model

ROOT = Path(__file__).parent.parent.parent
ONNX = (ROOT / "examples" / "digits" / "model.onnx").read_bytes()


@pytest.fixture(scope="module")
def nir_bytes(tmp_path_factory):
    from factories import make_mlp

    from frontends.nir import export_nir
    p = tmp_path_factory.mktemp("nir") / "m.nir"
    export_nir(make_mlp(), p, dt=1.0)
    return p.read_bytes()


def _damage(data: bytes, flips, cut) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        b[pos % len(b)] = val
    return bytes(b[:len(b) - cut % max(len(b), 1)] if cut else b)


def _load_clean(path: Path) -> None:
    try:
        g = load_model(path)
    except SnnError as e:
        assert str(e).strip()
    else:  # a flip that survived the parsers: still a well-formed graph
        assert g.input_name and g.output_name


flips = st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), max_size=6)


@FUZZ
@given(flips=flips, cut=st.integers(0, 400) | st.just(0))
def test_damaged_onnx(tmp_path_factory, flips, cut):
    p = tmp_path_factory.mktemp("onnx") / "m.onnx"
    p.write_bytes(_damage(ONNX, flips, cut))
    _load_clean(p)


@FUZZ
@given(flips=flips, cut=st.integers(0, 400) | st.just(0))
def test_damaged_nir(tmp_path_factory, nir_bytes, flips, cut):
    p = tmp_path_factory.mktemp("nir") / "m.nir"
    p.write_bytes(_damage(nir_bytes, flips, cut))
    _load_clean(p)
