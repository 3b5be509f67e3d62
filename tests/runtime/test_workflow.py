"""The researcher's workflow (issue 16): honest results, provenance, progress on non-terminals,
NIR options wherever a model file is accepted, figures, the smaller CLI contracts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from compiler.backend.emit import file_sha256


@pytest.fixture(scope="module")
def chance_chip(tmp_path_factory):
    """A random (untrained) 64-16-10 network: its digits accuracy is at chance (6.7 %)."""
    from factories import make_mlp

    from frontends.onnx import export_onnx
    d = tmp_path_factory.mktemp("chance")
    export_onnx(make_mlp(sizes=(64, 16, 10), seed=1), d / "m.onnx")
    from compiler.cli import cli
    r = CliRunner().invoke(cli, ["compile", str(d / "m.onnx"), "-o", str(d / "c.bin")])
    assert r.exit_code == 0, r.output
    return d


def _run(args):
    from runtime.cli import main_run
    return CliRunner().invoke(main_run, [str(a) for a in args])


# --- 1. honest results ---------------------------------------------------------------------------
def test_chance_level_run_warns_in_json_and_console(chance_chip):
    chip = chance_chip / "c.bin"
    r = _run([chip, "--limit", "40", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["accuracy"] < 0.15
    assert any("chance" in w for w in out["warnings"])
    r = _run([chip, "--limit", "40"])
    assert r.exit_code == 0 and "warning: accuracy" in r.output and "chance" in r.output


def test_attack_with_another_encoding_warns(chance_chip):
    r = _run([chance_chip / "c.bin", "--limit", "8", "--attack", "fgsm", "--eps", "8/255",
              "--encoding", "phase", "--json"])
    assert r.exit_code == 0, r.output
    w = json.loads(r.output)["warnings"]
    assert any("'phase' differs from the one the model was compiled for ('direct')" in m
               for m in w)
    assert any("chance" in m for m in w)


def test_one_bit_weights_that_dropped_negatives_warn(chance_chip, tmp_path):
    from compiler.cli import cli
    r = CliRunner().invoke(cli, ["compile", str(chance_chip / "m.onnx"), "-o",
                                 str(tmp_path / "b1.bin"), "--bits", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert any("negative weights became 0" in w for w in json.loads(r.output)["warnings"])
    r = _run([tmp_path / "b1.bin", "--limit", "10", "--json"])
    assert any("1-bit weights are unsigned" in w for w in json.loads(r.output)["warnings"])


def test_honesty_checks():
    from runtime.lab import honesty
    assert honesty.chance_level(0.15, 10, 40) and not honesty.chance_level(0.5, 10, 40)
    assert honesty.chance_level(0.14, 10, 10_000) and not honesty.chance_level(0.16, 10, 10_000)
    assert not honesty.chance_level(float("nan"), 10, 40)


def test_compare_marks_cells_instead_of_losses(chance_chip):
    from runtime.image import load
    from runtime.lab.honesty import compare_marks
    from runtime.reports.compare import tables
    img = load(chance_chip / "c.bin")
    recs = []
    for enc, clean in (("direct", 0.9), ("phase", 0.9), ("rate", 0.11)):
        for lvl, model in (("hardware", "8-bit"), ("algorithm", "float")):
            recs.append({"encoding": enc, "attack": "fgsm", "eps": 8 / 255, "model": model,
                         "level": lvl, "clean_accuracy": clean, "adv_accuracy": clean - 0.1,
                         "accuracy_loss": 0.1})
    marks = compare_marks(recs, lambda e: {"8-bit": img}, n=100)
    assert marks[("phase", "8-bit")] == "untrained encoding"
    assert "chance" in marks[("rate", "8-bit")] and ("direct", "8-bit") not in marks
    t = tables({"records": recs}, [8 / 255], ["8-bit"], ["direct", "phase", "rate"], ["fgsm"],
               "atan", marks=marks)["encodings_fgsm"]
    rows = {ln.split("|")[1].strip(): ln for ln in t.splitlines() if ln.startswith("| ")}
    assert "10.0" in rows["direct"] and "n/a" not in rows["direct"]
    assert "n/a" in rows["phase"] and "untrained encoding" in rows["phase"]


# --- 6. provenance -------------------------------------------------------------------------------
PROV_KEYS = {"snnc_version", "command", "image", "model", "seeds", "engine", "machine"}


def _check_prov(p, chip):
    from snnc import __version__
    assert PROV_KEYS <= set(p)
    assert p["snnc_version"] == __version__
    assert p["image"]["sha256"] == file_sha256(chip) and p["image"]["path"] == str(chip)
    assert p["model"]["path"] == "m.onnx" and len(p["model"]["sha256"]) == 64
    assert {"host", "platform", "python", "numpy", "cpu_count"} <= set(p["machine"])


def test_provenance_in_every_report(chance_chip, tmp_path):
    chip = chance_chip / "c.bin"
    r = _run([chip, "--limit", "10", "--report", tmp_path / "run"])
    assert r.exit_code == 0, r.output
    _check_prov(json.loads((tmp_path / "run" / "report.json").read_text())["provenance"], chip)
    assert "## Provenance" in (tmp_path / "run" / "report.md").read_text()
    r = _run([chip, "--limit", "10", "--mismatch", "0.1", "--samples", "2", "--report",
              tmp_path / "noise"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "noise" / "robustness.json").read_text())
    _check_prov(res["provenance"], chip)
    assert "## Provenance" in (tmp_path / "noise" / "robustness.md").read_text()
    r = _run([chip, "--limit", "6", "--attack", "fgsm", "--eps", "8/255", "--report",
              tmp_path / "att"])
    assert r.exit_code == 0, r.output
    _check_prov(json.loads((tmp_path / "att" / "attack.json").read_text())["provenance"], chip)
    assert "## Provenance" in (tmp_path / "att" / "attack.md").read_text()


# --- 2. progress ---------------------------------------------------------------------------------
def test_progress_lines_on_a_non_terminal(monkeypatch):
    from compiler import progress
    monkeypatch.delenv("SNNC_QUIET", raising=False)
    monkeypatch.setenv("SNNC_PROGRESS_INTERVAL", "0")
    s = io.StringIO()
    with progress.bar(3, "work", unit="chip", stream=s) as pb:
        for _ in range(3):
            pb.update(1)
    lines = s.getvalue().splitlines()
    assert len(lines) >= 3 and lines[-1].startswith("work: 3/3 chip (100%)")
    progress.set_quiet(True)
    s = io.StringIO()
    with progress.bar(3, "work", stream=s) as pb:
        pb.update(3)
    assert s.getvalue() == ""
    progress.set_quiet(False)


def test_cli_progress_and_quiet(chance_chip, tmp_path, monkeypatch):
    from compiler.cli import cli
    monkeypatch.delenv("SNNC_QUIET", raising=False)
    monkeypatch.setenv("SNNC_PROGRESS_INTERVAL", "0")
    r = CliRunner().invoke(cli, ["compile", str(chance_chip / "m.onnx"), "-o",
                                 str(tmp_path / "c.bin")])
    assert r.exit_code == 0, r.output
    verify = ["verify", str(chance_chip / "m.onnx"), str(tmp_path / "c.bin"), "--limit", "8"]
    r = CliRunner().invoke(cli, verify)
    assert r.exit_code == 0 and "verify: 8/8 sample (100%)" in r.stderr
    r = CliRunner().invoke(cli, ["--quiet"] + verify)
    assert r.exit_code == 0 and "verify:" not in r.stderr
    r = _run([tmp_path / "c.bin", "--limit", "8", "--attack", "fgsm", "--eps", "8/255"])
    assert r.exit_code == 0 and "fgsm (hardware): 8/8 sample" in r.stderr
    r = _run([tmp_path / "c.bin", "--limit", "8", "--mismatch", "0.1", "--samples", "2", "-q"])
    assert r.exit_code == 0 and "mismatch:" not in r.stderr


# --- 5. NIR options wherever a model file is accepted --------------------------------------------
@pytest.fixture(scope="module")
def foreign_nir(tmp_path_factory):
    """A NIR file from 'another framework' (no snnc metadata): needs --nir-convention."""
    nir = pytest.importorskip("nir")
    rng = np.random.default_rng(3)
    n = 10
    g = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([1, 8, 8])}),
               "flat": nir.Flatten(input_type={"input": np.array([1, 8, 8])}, start_dim=0),
               "fc": nir.Affine(rng.normal(0, 0.3, (n, 64)), rng.normal(0.1, 0.05, n)),
               "lif": nir.LIF(tau=np.full(n, 0.02), r=np.ones(n), v_leak=np.zeros(n),
                              v_threshold=np.ones(n), v_reset=np.zeros(n)),
               "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "flat"), ("flat", "fc"), ("fc", "lif"), ("lif", "output")])
    d = tmp_path_factory.mktemp("nir")
    nir.write(str(d / "f.nir"), g)
    return d


def test_nir_options_on_verify_and_source(foreign_nir):
    from compiler.cli import cli
    p, chip = foreign_nir / "f.nir", foreign_nir / "f.bin"
    opts = ["--nir-convention", "norse", "--dt", "0.001"]
    r = CliRunner().invoke(cli, ["compile", str(p), "-o", str(chip)] + opts)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["verify", str(p), str(chip), "--limit", "10", "--json"])
    assert r.exit_code != 0 and "--nir-convention" in str(r.exception)
    r = CliRunner().invoke(cli, ["verify", str(p), str(chip), "--limit", "10", "--json"] + opts)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["bit_exact"] and out["provenance"]["model_file"]["path"] == str(p)
    r = _run([chip, "--limit", "6", "--attack", "fgsm", "--eps", "8/255", "--source", p,
              "--json"])
    assert r.exit_code != 0
    r = _run([chip, "--limit", "6", "--attack", "fgsm", "--eps", "8/255", "--source", p,
              "--json"] + opts)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["level"] == "transfer"


# --- 7. figures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["svg", "pdf"])
def test_noise_figures_as_distributions_in_any_format(tmp_path, fmt):
    from runtime.reports.noise import plot_report
    rng = np.random.default_rng(0)
    rows = [{"kind": "dead-cores", "level": k, "label": str(k), "mean": 0.5, "std": 0.4,
             "min": 0.1, "n": 20, "accuracies": list(rng.choice([0.1, 0.95], 20))}
            for k in (1, 2, 4)]
    res = {"clean_accuracy": 0.96, "sweep": rows, "data": "digits", "n_test": 50,
           "timesteps": 8, "encoding": "direct", "seed": 0, "classes": 10}
    files = plot_report(tmp_path, res, fmt=fmt)
    assert files == [str(tmp_path / f"sweep_dead-cores.{fmt}")]
    head = (tmp_path / f"sweep_dead-cores.{fmt}").read_bytes()[:5]
    assert head == (b"%PDF-" if fmt == "pdf" else b"<?xml")


# --- 8. smaller items ----------------------------------------------------------------------------
def test_cli_contracts(chance_chip, tmp_path):
    chip = chance_chip / "c.bin"
    r = _run([chip, "--limit", "5", "--mismatch", "30"])
    assert r.exit_code != 0 and "0.3 for 30 %" in r.output
    r = _run([chip, "--limit", "5", "--attack", "fgsm", "--plots"])
    assert r.exit_code != 0 and "--plots needs --report" in r.output
    r = _run([chip, "--limit", "5", "--mismatch", "0.1", "--plots"])
    assert r.exit_code != 0 and "--plots needs --report" in r.output
    from runtime.cli import main_run
    samples = [p for p in main_run.params if p.name == "samples"][0]
    assert samples.default == 100
    from compiler.errors import DatasetError
    from frontends.datasets import load_dataset
    with pytest.raises(DatasetError, match="needs a directory: mnist:DIR"):
        load_dataset("mnist", "test")
    from compiler.cli import cli
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "nope.onnx"), "-o",
                                 str(tmp_path / "x.bin")])
    assert r.exit_code != 0 and r.exception.hint


def test_compare_marks_provenance_and_figures(tmp_path):
    from pathlib import Path

    from runtime.cli.compare import compare_cmd
    model = Path(__file__).parents[2] / "examples" / "digits" / "model.onnx"
    r = CliRunner().invoke(compare_cmd, [
        "--model", str(model), "--bits", "8", "--limit", "12", "--encodings", "direct,phase",
        "--attacks", "fgsm", "--eps", "8/255", "--surrogates", "", "--pgd-steps", "",
        "--no-sda", "--report", str(tmp_path), "--plots", "--format", "svg", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {(m["encoding"], m["model"]) for m in out["marks"]} == {("phase", "float"),
                                                                   ("phase", "8-bit")}
    assert all("untrained encoding" in m["why"] for m in out["marks"])
    assert "| phase | 8-bit |" in out["tables"]["quantization_fgsm"]
    row = [ln for ln in out["tables"]["quantization_fgsm"].splitlines()
           if ln.startswith("| phase | 8-bit |")][0]
    assert "n/a" in row
    assert out["provenance"]["model_file"]["sha256"] == file_sha256(model)
    assert sorted(Path(f).name for f in out["figures"]) == [
        "accuracy_vs_eps_fgsm.svg", "levels_fgsm.svg", "quantization_fgsm.svg"]
    assert "## Provenance" in (tmp_path / "compare.md").read_text()


def test_image_labels_stay_unique():
    from runtime.cli.compare import _image_labels
    assert _image_labels(["a/x.bin", "b/y.bin"]) == ["x", "y"]
    assert _image_labels(["a/chip.bin", "b/chip.bin"]) == ["a/chip.bin", "b/chip.bin"]
