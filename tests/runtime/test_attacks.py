"""Adversarial attacks: conventions, evaluation on the runtime, SDA, metrics, CLI contract."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from factories import make_convnet, make_mlp

from compiler.chip import PICORE64
from frontends import compile_model
from runtime.engines.tick import run_payloads
from runtime.image import from_sections
from runtime.lab import evaluate as ev
from runtime.lab.attacks import (
    SweepConfig,
    Target,
    attack_sweep,
    events_to_payloads,
    fgsm,
    generate,
    pgd,
    run_images,
    sda,
    sda_metrics,
)
from runtime.lab.twin import Twin, encode_payloads, torch_threads


@pytest.fixture(scope="module")
def net():
    prog = compile_model(make_convnet(seed=1), PICORE64, bits=8)
    img = from_sections(prog.sections(), prog.spec.digest())
    rng = np.random.default_rng(0)
    x = rng.random((24, 1, 8, 8))
    y = run_images(img, x, "direct", 6).predictions     # labels = clean predictions
    return prog, img, x, y


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_fgsm_pgd_conventions(net):
    _, img, x, y = net
    tg = Target(Twin(img), "direct", 6)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    eps = 16 / 255
    for adv in (fgsm(tg, xt, yt, eps), pgd(tg, xt, yt, eps, steps=3, seed=1)):
        assert adv.min() >= 0 and adv.max() <= 1
        assert float((adv - xt).abs().max()) <= eps + 1e-12
    # FGSM moves every unclipped pixel by exactly eps
    a = fgsm(tg, xt, yt, eps)
    d = (a - xt).abs()
    inside = (xt > eps) & (xt < 1 - eps)
    assert torch.all(torch.isclose(d[inside], torch.tensor(eps, dtype=d.dtype)) | (d[inside] == 0))


def test_pgd_first_step_fgsm_never_weaker(net):
    """PGD with alpha = eps, no random start and keep-best starts at the FGSM point: on a
    deterministic encoding (twin == chip) it fools at least as many samples as FGSM."""
    _, img, x, y = net
    tg = Target(Twin(img), "direct", 6)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    eps = 24 / 255
    xf = fgsm(tg, xt, yt, eps)
    xp = pgd(tg, xt, yt, eps, alpha=eps, steps=4, random_start=False)
    af = run_images(img, xf.numpy(), "direct", 6).accuracy(y)
    ap = run_images(img, xp.numpy(), "direct", 6).accuracy(y)
    assert ap <= af


def test_twin_predictions_match_chip_on_adversarial_examples(net):
    _, img, x, y = net
    tw = Twin(img)
    xa = generate(Target(tw, "direct", 6), x, y, "fgsm", 32 / 255)
    with torch.no_grad():
        pt = tw(encode_payloads(torch.as_tensor(xa), "direct", 6)).argmax(1).numpy()
    np.testing.assert_array_equal(pt, run_images(img, xa, "direct", 6).predictions)


@pytest.mark.parametrize("encoding", ["direct", "rate"])
def test_attack_sweep_evaluates_on_runtime(net, encoding):
    _, img, x, y = net
    cfg = SweepConfig("fgsm", (0.0, 64 / 255), encoding, 6, "atan", eot=2, seed=3)
    out = attack_sweep(img, x, y, cfg)
    r0, r1 = out["results"]
    clean = run_images(img, x, encoding, 6, seed=3).accuracy(y)
    assert r0["clean_accuracy"] == r1["clean_accuracy"] == clean
    assert r0["adv_accuracy"] == clean and r0["l0"] == 0
    assert r1["adv_accuracy"] < clean       # a strong attack works
    assert math.isclose(r1["accuracy_loss"], clean - r1["adv_accuracy"])
    assert math.isclose(r1["asr"], (clean - r1["adv_accuracy"]) / clean)
    for k in ("spike_activity_change", "nsr", "nsr_db", "nsr_per_layer", "linf", "l2"):
        assert k in r1
    assert out["eot"] == (2 if encoding == "rate" else 1)


def test_algorithm_level_transfer(net):
    prog, img, x, y = net
    cfg = SweepConfig("pgd", (32 / 255,), "direct", 6, "atan", steps=2)
    out = attack_sweep(img, x, y, cfg, source_graph=prog.float_graph)
    r = out["results"][0]
    assert out["level"] == "algorithm"
    assert 0 <= r["source_adv_accuracy"] <= 1 and 0 <= r["adv_accuracy"] <= 1


def test_sda_binary_events(net):
    _, img, _, _ = net
    rng = np.random.default_rng(2)
    evs = (rng.random((6, 6, 1, 8, 8)) < 0.3).astype(np.uint8)
    y = run_payloads(img, events_to_payloads(evs)).predictions
    res = sda(img, evs, y, Twin(img, surrogate="pdsg"), k_init=8, iters=30, seed=0)
    flat = evs.reshape(6, 6, -1)
    assert set(np.unique(res.x_adv)) <= {0, 1}
    pred = run_payloads(img, events_to_payloads(res.x_adv)).predictions
    for b in range(6):
        l0 = int(np.count_nonzero(res.x_adv[b] != flat[b]))
        if res.success[b]:
            assert pred[b] != y[b] and l0 == res.l0[b] > 0
        else:
            assert l0 == 0
    assert res.success.sum() >= 3
    m = sda_metrics(img, evs, y, res)
    assert m["sda_success_rate"] == res.success.sum() / res.attacked.sum()
    assert m["l0_mean"] == pytest.approx(res.l0[res.success].mean())


def test_metrics_definitions():
    assert ev.asr(0.8, 0.2) == pytest.approx(0.75)
    assert ev.asr(0.0, 0.0) == 0.0
    assert ev.flip_rate([0, 1, 2, 3], [0, 0, 0, 3], [0, 1, 2, 0]) == pytest.approx(2 / 3)
    s = ev.spike_activity_change(np.array([[10, 0, 4]]), np.array([[5, 3, 6]]), ["a", "b", "c"])
    assert s["per_layer"]["a"] == -0.5 and math.isnan(s["per_layer"]["b"])
    assert s["mean_abs"] == pytest.approx(0.5)
    r0 = {"l": np.array([[1.0, 0.0], [0.0, 1.0]])}
    r1 = {"l": np.array([[1.0, 1.0], [0.0, 1.0]])}
    n = ev.nsr(r0, r1)
    assert n["per_layer"]["l"]["nsr"] == pytest.approx(0.5)
    assert n["mean_db"] == pytest.approx(10 * math.log10(0.5))
    p = ev.perturbation_norms(np.zeros((2, 4)), np.array([[0, 0.5, 0, 0], [0.1, 0.1, 0, 0]]))
    assert p["l0"] == 1.5 and p["linf"] == pytest.approx(0.3)
    assert p["l2"] == pytest.approx((0.5 + math.sqrt(0.02)) / 2)


def _chip(tmp_path):
    prog = compile_model(make_mlp((64, 40, 10), seed=2), PICORE64, bits=8)
    path = tmp_path / "chip.bin"
    prog.write(path)
    return str(path)


def test_cli_attack_json_contract(tmp_path):
    from runtime.cli import main_run
    chip = _chip(tmp_path)
    r = CliRunner().invoke(main_run, [chip, "--data", "digits", "--limit", "12", "--attack",
                                      "fgsm", "--eps", "8/255,16/255", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    for k in ("attack", "encoding", "surrogate", "results"):
        assert k in out
    assert [x["eps"] for x in out["results"]] == pytest.approx([8 / 255, 16 / 255])
    for res in out["results"]:
        for k in ("eps", "clean_accuracy", "adv_accuracy", "accuracy_loss", "asr",
                  "spike_activity_change", "nsr"):
            assert k in res
    r = CliRunner().invoke(main_run, [chip, "--data", "digits", "--limit", "4", "--attack",
                                      "pgd", "--steps", "2", "--eps", "8/255", "--report",
                                      str(tmp_path / "rep"), "--plots"])
    assert r.exit_code == 0, r.output
    assert "PGD" in r.output and (tmp_path / "rep" / "accuracy_vs_eps.png").exists()
    r = CliRunner().invoke(main_run, [chip, "--data", "digits", "--limit", "3", "--attack",
                                      "sda", "--steps", "2", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)["results"][0]
    assert "sda_success_rate" in res and "l0_mean" in res
    small = tmp_path / "small.bin"
    compile_model(make_convnet(seed=1), PICORE64, bits=8).write(small)   # 5 outputs
    r = CliRunner().invoke(main_run, [str(small), "--data", "digits", "--limit", "12",
                                      "--attack", "fgsm"])
    # digits labels 0..9 against 5 output classes: refused before any attack runs
    assert r.exit_code != 0 and "5 output classes" in str(r.exception)


def test_cli_compare(tmp_path):
    from runtime.cli import SUBCOMMANDS
    chip = _chip(tmp_path)
    r = CliRunner().invoke(SUBCOMMANDS["compare"], [
        "--images", chip, "--limit", "8", "--encodings", "direct,rate", "--attacks", "fgsm",
        "--eps", "16/255", "--surrogates", "atan,pdsg", "--pgd-steps", "2", "--no-sda",
        "--json", "--markdown", str(tmp_path / "t.md")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert {"encodings_fgsm", "quantization_fgsm", "levels_fgsm", "surrogates",
            "steps"} <= set(out["tables"])
    assert (tmp_path / "t.md").read_text().count("|") > 10
