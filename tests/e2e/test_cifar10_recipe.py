"""The CIFAR-10 recipe (examples/cifar10) end to end on a synthetic CIFAR-10 binary set: train a
very narrow VGG5 (BPTT + 4-bit QAT; and a QCFS ANN for conversion), then run the exact snnc /
snnrun commands the script prints: compile (--chips auto), run --check (bit-exact, and the chip's
accuracy equals the QAT integer model's), FGSM, mismatch."""

import importlib.util
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compiler.cli import cli as snnc_main
from frontends.datasets import CIFAR_RECORD, load_dataset
from runtime.cli import main_run as snnrun_main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--net", "vgg5", "--width", "0.0625", "--fc", "256", "--input-size", "16",
        "--epochs", "1", "--batch-size", "8", "-T", "2", "--threads", "1", "--quiet"]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"cifar10_{name}",
                                                  ROOT / "examples" / "cifar10" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = _load("synthetic").write(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin",
                                    train=40, test=16, seed=1)
    return f"cifar10:{root.parent}"          # the loader also finds DIR/cifar-10-batches-bin


def _cli(command: str):
    """Run one printed command in-process; returns the parsed --json output."""
    argv = shlex.split(command)
    main = {"snnc": snnc_main, "snnrun": snnrun_main}[argv[0]]
    r = CliRunner().invoke(main, argv[1:] + ["--json"])
    assert r.exit_code == 0, r.output[-3000:]
    return json.loads(r.output[r.output.index("{"):])


def test_synthetic_set_is_cifar10_binary(data):
    root = Path(data.split(":", 1)[1]) / "cifar-10-batches-bin"
    sizes = [(root / f"data_batch_{i}.bin").stat().st_size for i in range(1, 6)]
    assert all(s % CIFAR_RECORD == 0 for s in sizes) and sum(sizes) == 40 * CIFAR_RECORD
    tr, te = load_dataset(data, "train"), load_dataset(data, "test")
    assert tr.x.shape == (40, 3, 32, 32) and te.x.shape == (16, 3, 32, 32)
    assert set(tr.y.tolist()) == set(range(10))


def _shrink(cmd: str) -> str:
    """The printed evaluation commands at test size (one eps, one mismatch level, 2 chips)."""
    return (cmd.replace("--eps 1/255,2/255,4/255,8/255", "--eps 8/255")
               .replace("--mismatch 0.1,0.2,0.3 --samples 10", "--mismatch 0.2 --samples 2")
               .replace("--limit 500", "--limit 6"))


@pytest.mark.slow
def test_bptt_qat_recipe_compiles_runs_bit_exact_attacks_and_sweeps(data, tmp_path):
    train = _load("train")
    s = train.main(["--data", data, "--method", "snn", "--bits", "4", "--qat-epochs", "1",
                    "--out", str(tmp_path), *TINY])
    assert s["channels"] == [4, "P", 8, 8, "P"] and s["fc"] == 16 and s["input_size"] == 16
    (m,) = s["models"]
    assert Path(m["onnx"]).is_file() and m["bits"] == 4
    js = json.loads((tmp_path / "vgg5_snn.json").read_text())
    assert js["models"][0]["integer_accuracy"] == m["integer_accuracy"]
    comp, check, attack, sweep = m["commands"]
    assert "--chips auto" in comp and "--per-channel" in comp and "--bits 4" in comp

    rep = _cli(comp)
    assert rep["chips_needed"] == 1 and Path(m["onnx"]).with_suffix(".bin").is_file()
    run = _cli(check)
    assert run["bit_exact"] is True and run["n"] == 16
    assert run["timesteps"] == 2
    # the chip's accuracy IS the QAT integer model's (same quantization, bit-exact runtime)
    assert run["accuracy"] == pytest.approx(m["integer_accuracy"], abs=0)
    assert sum(r > 0 for r in run["layer_rates"].values()) >= 3, run["layer_rates"]

    att = _cli(_shrink(attack))
    assert att["attack"] == "fgsm" and att["n"] == 6
    (row,) = att["results"]
    assert row["eps_255"] == 8.0 and 0.0 <= row["adv_accuracy"] <= 1.0
    sw = _cli(_shrink(sweep))
    (lvl,) = sw["sweep"]
    assert lvl["kind"] == "mismatch" and lvl["level"] == 0.2 and lvl["n"] == 2
    assert len(lvl["accuracies"]) == 2


def test_ann_conversion_recipe_compiles_with_calib_and_runs_bit_exact(data, tmp_path):
    train = _load("train")
    s = train.main(["--data", data, "--method", "ann", "--act", "qcfs", "--qcfs-levels", "2",
                    "--out", str(tmp_path), *TINY])
    (m,) = s["models"]
    assert 0.0 <= m["ann_accuracy"] <= 1.0 and Path(m["onnx"]).is_file()
    comp, check = m["commands"][:2]
    assert f"--calib {data}" in comp and "--timesteps 2" in comp
    rep = _cli(comp)
    assert rep["chips_needed"] >= 1
    run = _cli(check)
    assert run["bit_exact"] is True and run["n"] == 16
    assert np.isfinite(run["accuracy"])
