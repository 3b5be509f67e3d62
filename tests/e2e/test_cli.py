"""The user-facing commands end to end: clean errors, no tracebacks, nothing partially written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.backend import binfmt
from compiler.errors import BinaryFormatError
from runtime.image import load

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(cmd, *args, ok=True):
    p = subprocess.run([str(BIN / cmd), *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    if ok:
        assert p.returncode == 0, p.stderr[-2000:]
    return p


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    from factories import make_mlp

    from frontends.onnx import export_onnx
    d = tmp_path_factory.mktemp("m")
    g = make_mlp(sizes=(64, 20, 10), seed=3)
    path = d / "mlp.onnx"
    export_onnx(g, path)
    return path


@pytest.fixture(scope="module")
def chip(mlp_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "chip.bin"
    run("snnc", "compile", mlp_onnx, "-o", out, "--bits", "4", "--calib", "digits",
        "--calib-limit", "64")
    return out


def test_inspect_json_keys(chip):
    d = json.loads(run("snnc", "inspect", chip, "--json").stdout)
    assert {"cores_used", "chips", "latency_ticks", "per_core"} <= set(d)
    assert {"neurons", "axons", "synapse_bits", "route_entries", "weight_bits", "lcn"} <= set(
        d["per_core"][0])
    assert d["per_core"][0]["weight_bits"] == 4
    assert "core" in run("snnc", "inspect", chip).stdout


def test_snnrun_check_json(chip):
    d = json.loads(run("snnrun", chip, "--data", "digits", "--limit", "40", "--check",
                       "--json").stdout)
    for k in ("accuracy", "n", "timesteps", "encoding", "sops_per_sample",
              "energy_uj_per_sample", "latency_us_per_sample", "layer_rates", "samples_per_s",
              "bit_exact"):
        assert k in d
    assert d["bit_exact"] is True and d["n"] == 40


@pytest.mark.parametrize("enc", ["rate", "phase", "latency"])
def test_snnrun_encodings_bit_exact(chip, enc):
    d = json.loads(run("snnrun", chip, "--limit", "20", "--encoding", enc, "-T", "5", "--check",
                       "--json").stdout)
    assert d["bit_exact"] and d["encoding"] == enc and d["timesteps"] == 5


def test_snnrun_report_and_plots(chip, tmp_path):
    run("snnrun", chip, "--limit", "10", "--report", tmp_path, "--plots",
        "--save-predictions", tmp_path / "p.npy")
    names = {p.name for p in tmp_path.iterdir()}
    assert {"report.json", "report.md", "layer_rates.png", "link_load.png",
            "core_activity_chip0.png", "p.npy"} <= names
    assert np.load(tmp_path / "p.npy").shape == (10,)


def test_verify_json(mlp_onnx, chip):
    d = json.loads(run("snnc", "verify", mlp_onnx, chip, "--limit", "40", "--json").stdout)
    assert {"float_accuracy", "quantized_accuracy", "agreement", "runtime_accuracy",
            "bit_exact"} <= set(d)
    assert d["bit_exact"] is True


def test_dump_and_stop_after(mlp_onnx, tmp_path):
    p = run("snnc", "compile", mlp_onnx, "--stop-after", "quantize", "--dump-after", "lower")
    assert "// stage: lowered" in p.stdout
    run("snnc", "compile", mlp_onnx, "-o", tmp_path / "c.bin", "--dump-after", "route",
        "--dump-dir", tmp_path)
    assert (tmp_path / "after-route.txt").read_text().startswith("// stage: routed")
    est = json.loads(run("snnc", "compile", mlp_onnx, "--estimate", "--json").stdout)
    assert est["cores_used"] >= 2 and est["chips_needed"] == 1
    assert est["estimate"]["chips"] == 1 and set(est["estimate"]["layers"]) == set(
        est["partition"])
    text = run("snnc", "compile", mlp_onnx, "--estimate").stdout
    # the fast per-layer estimate is printed before the tiling's exact table
    assert text.index("estimate (before tiling)") < text.index("partitioned:")
    assert "limited by" in text and "ceil(n/npc)" in text


def test_inspect_reports_cores_vs_ceil_sum(chip):
    d = json.loads(run("snnc", "inspect", chip, "--json").stdout)
    assert d["cores_lower_bound"] == sum(L["cores_lower_bound"] for L in d["layers"])
    assert d["cores_used"] >= d["cores_lower_bound"] and d["cores_ratio"] >= 1.0
    assert "vs sum of ceil(neurons / neurons-per-core)" in run("snnc", "inspect", chip).stdout


@pytest.mark.parametrize("args,needle", [
    (["compile", "nope.onnx", "-o", "x.bin"], "not found"),
    (["compile", "{m}", "-o", "{o}", "--bits", "3"], "3-bit"),
    (["compile", "{m}", "-o", "{o}", "--chip", "nope.toml"], "chip spec"),
    (["compile", "{m}", "-o", "{o}", "--stop-after", "nope"], "unknown pass"),
    (["inspect", "{m}"], "bad magic"),
])
def test_clean_errors(mlp_onnx, tmp_path, args, needle):
    out = tmp_path / "out.bin"
    args = [a.format(m=mlp_onnx, o=out) for a in args]
    p = run("snnc", *args, ok=False)
    assert p.returncode != 0
    assert needle in (p.stderr + p.stdout).lower()
    assert "Traceback" not in p.stderr
    assert not out.exists()


def test_corrupted_binary_refused_by_every_reader(chip, tmp_path, mlp_onnx):
    bad = tmp_path / "bad.bin"
    data = bytearray(chip.read_bytes())
    data[len(data) // 2] ^= 0xA5
    bad.write_bytes(bytes(data))
    for cmd, args in (("snnc", ["inspect", bad]), ("snnrun", [bad, "--limit", "5"]),
                      ("snnc", ["verify", mlp_onnx, bad, "--limit", "5"])):
        p = run(cmd, *args, ok=False)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        assert "checksum" in p.stderr.lower() or "crc" in p.stderr.lower()


@settings(max_examples=40, deadline=None)
@given(pos=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255))
def test_any_flipped_byte_fails_load(chip, pos, xor):
    data = bytearray(chip.read_bytes())
    i = int(pos * len(data))
    data[i] ^= xor
    with pytest.raises(BinaryFormatError):
        from runtime.image import ChipImage
        ChipImage(binfmt.read_bytes(bytes(data)))


def test_compile_is_deterministic(mlp_onnx, tmp_path):
    for i in (1, 2):
        run("snnc", "compile", mlp_onnx, "-o", tmp_path / f"{i}.bin", "--calib", "digits",
            "--calib-limit", "32")
    assert (tmp_path / "1.bin").read_bytes() == (tmp_path / "2.bin").read_bytes()


def test_debug_shows_traceback(tmp_path):
    p = run("snnc", "--debug", "inspect", tmp_path / "missing.bin", ok=False)
    assert p.returncode != 0


def test_load_validates_semantics(chip, tmp_path):
    """A checksum-valid file whose routes point nowhere is refused with a clear message."""
    f = binfmt.read(chip)
    arrays = {k: np.array(v) for k, v in f.arrays.items()}
    arrays["rt_x"] = (arrays["rt_x"] + 7).astype(np.uint8)   # off the populated cores
    arrays["meta"] = f.meta
    p = tmp_path / "forged.bin"
    binfmt.write(p, arrays, f.spec_digest)
    with pytest.raises(BinaryFormatError, match="route entry|outside|holds no core"):
        load(p)
    assert os.path.exists(p)
