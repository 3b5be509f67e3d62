"""Checksum-valid hostile chip.bin files: each is refused naming its cause, or runs correctly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FUZZ
from corpus import CASES, base_sections, case_bytes, deep_meta_bytes, to_bytes
from hypothesis import given
from hypothesis import strategies as st
from runcheck import load_or_refuse, run_and_check

from compiler.backend import binfmt
from compiler.errors import BinaryFormatError, SimulationError

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
INT_SECTIONS = [k for k, (_, dt, _) in binfmt.SECTIONS.items() if k != "meta"]


def test_base_image_is_valid_and_bit_exact():
    sec, dig = base_sections()
    img, why = load_or_refuse(binfmt.to_bytes(sec, dig))
    assert why is None
    assert img.n_cores > 2 and len(set(img.a["core_chip"].tolist())) == 2
    run_and_check(img)


@pytest.mark.parametrize("name", sorted(CASES))
def test_crafted_file_refused_naming_the_cause(name):
    img, why = load_or_refuse(case_bytes(name))
    assert img is None, f"{name} was accepted"
    word = CASES[name][1] or "digest"
    assert word in why, why


def test_deeply_nested_meta_refused():
    with pytest.raises(BinaryFormatError, match="nested too deeply"):
        binfmt.read_bytes(deep_meta_bytes())


def test_memory_budget_refuses_before_allocating(monkeypatch):
    sec, dig = base_sections()
    monkeypatch.setenv("SNNC_MEMORY_BUDGET", "4K")
    img, why = load_or_refuse(binfmt.to_bytes(sec, dig))
    assert img is None and "memory budget" in why


def test_run_budget_checked_per_call(monkeypatch):
    sec, dig = base_sections()
    img, _ = load_or_refuse(binfmt.to_bytes(sec, dig))
    from runtime.engines.tick import run_payloads
    monkeypatch.setenv("SNNC_MEMORY_BUDGET", str(img.footprint["tables"] + 100_000))
    with pytest.raises(SimulationError, match="memory budget"):
        run_payloads(img, np.zeros((5000, 64, img.n_inputs), np.uint8), workers=1)


def _mutate_int(sec, name, pos, value):
    a = sec[name]
    if a.size == 0:
        return sec
    info = np.iinfo(a.dtype)
    b = a.copy().reshape(-1)
    b[pos % b.size] = min(max(value, info.min), info.max)
    sec[name] = b
    return sec


@FUZZ
@given(name=st.sampled_from(INT_SECTIONS), pos=st.integers(0, 10**6),
       value=st.one_of(st.integers(-2, 70), st.integers(-(2**31), 2**32),
                       st.sampled_from([0xFFFF, 0xFFFE, 2**32 - 1, 255, 65535, -1])))
def test_random_table_entry(name, pos, value):
    """One entry of one table set to a hostile value: refused, or a bit-exact run."""
    sec, _ = base_sections()
    img, why = load_or_refuse(to_bytes(_mutate_int(sec, name, pos, value)))
    if img is not None:
        run_and_check(img)
    else:
        assert why and "\n" not in why


def _leaves(d, path=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(d, list) and d and len(d) < 50:
        for i, v in enumerate(d):
            yield from _leaves(v, path + (i,))
    yield path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 2**32])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=5)


@FUZZ
@given(pick=st.integers(0, 10**6), value=json_values, digest_follows=st.booleans())
def test_random_meta_value(pick, value, digest_follows):
    """One META value replaced by arbitrary JSON: refused, or a bit-exact run."""
    sec, dig = base_sections()
    paths = [p for p in _leaves(sec["meta"]) if p]
    path = paths[pick % len(paths)]
    d = sec["meta"]
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    buf = to_bytes(sec) if digest_follows else binfmt.to_bytes(sec, dig)
    img, why = load_or_refuse(buf)
    if img is not None:
        run_and_check(img)


def _cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", kw.pop("code")] + args, capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)


SNNRUN = "import sys; sys.argv[0] = 'snnrun'; from runtime.cli import main; main()"
SNNC = "import sys; sys.argv[0] = 'snnc'; from compiler.cli import main; main()"


@pytest.mark.parametrize("case", ["core_layer_past_layers", "host_route_past_output",
                                  "spec_axon_slots_0"])
def test_cli_refuses_crafted_file_in_one_line(tmp_path, case):
    f = tmp_path / "c.bin"
    f.write_bytes(case_bytes(case))
    for code, args in ((SNNRUN, [str(f), "--limit", "3"]), (SNNC, ["inspect", str(f)])):
        r = _cli(args, code=code)
        assert r.returncode == 1, (r.returncode, r.stderr)
        first = r.stderr.strip().splitlines()[0]
        assert "error:" in first and str(f) in first and "Traceback" not in r.stderr, r.stderr


def test_inspect_dev_zero_fails_clean():
    r = _cli(["inspect", "/dev/zero"], code=SNNC)
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_kernels_with_bounds_checking(tmp_path, request):
    """NUMBA_BOUNDSCHECK=1: every corpus file and a batch of random mutations either is refused
    or runs through the kernels without an out-of-range index; bypassing the validator, the
    same mode catches the issue's out-of-bounds writes (the check can fail)."""
    cache = request.config.cache.mkdir("numba-boundscheck")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                                       str(HERE)]),
               NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(cache))
    n = 400 if os.environ.get("SNNC_FUZZ") == "long" else 40
    r = subprocess.run([sys.executable, str(HERE / "boundscheck.py"), str(n)],
                       capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["refused"] >= len(CASES) and out["ran"] >= 1
    assert out["bypass_caught"] == out["bypass_cases"] > 0
