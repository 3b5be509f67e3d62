"""QAT -> chip in one call (the training record), checkpoints that refuse another configuration,
every encoding for any native model (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from compiler.errors import SnnError
from frontends import load_model, native
from frontends.training import TrainConfig, Trainer
from frontends.training.qat import Quantizer
from frontends.training.trainer import CheckpointMismatchError


def _mlp(hidden=12):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), native.IF(),
                         nn.Linear(hidden, 10), native.IF())


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, n)


# --- 3. QAT -> chip ------------------------------------------------------------------------------
def test_qat_record_round_trip_and_compile_defaults(tmp_path):
    from compiler.cli import cli
    from runtime.image import load
    q = Quantizer(_mlp(), (1, 8, 8), bits=4, per_channel=True, clip="p99.9")
    q.export_onnx(tmp_path / "q.onnx", encoding="rate", timesteps=6)
    rec = load_model(tmp_path / "q.onnx").attrs["training"]
    assert rec == {"qat": True, "bits": 4, "per_channel": True, "clip": "p99.9",
                   "encoding": "rate", "timesteps": 6, "chip": "picore64"}
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "q.onnx"), "-o",
                                 str(tmp_path / "q.bin")])
    assert r.exit_code == 0, r.output
    assert "using the model's training record" in r.stderr
    img = load(tmp_path / "q.bin")
    assert {L["bits"] for L in img.layers} == {4}
    assert img.meta["timesteps"] == 6 and img.meta["encoding"] == "rate"
    assert img.meta["training"]["encoding"] == "rate"
    assert img.meta["options"]["per_channel"] is True and img.meta["options"]["clip"] == "p99.9"
    # an explicit option equal to the record is fine; a contradicting one is refused
    r = CliRunner().invoke(cli, ["compile", str(tmp_path / "q.onnx"), "-o",
                                 str(tmp_path / "q.bin"), "--bits", "4"])
    assert r.exit_code == 0, r.output
    for opt in (["--bits", "8"], ["--encoding", "direct"], ["--timesteps", "8"],
                ["--clip", "max"]):
        r = CliRunner().invoke(cli, ["compile", str(tmp_path / "q.onnx"), "-o",
                                     str(tmp_path / "x.bin")] + opt)
        assert r.exit_code != 0 and isinstance(r.exception, SnnError), opt
        assert f"{opt[0]} {opt[1]} conflicts with q.onnx" in str(r.exception)
        assert "drop " + opt[0] in r.exception.hint


def test_quantizer_compile_returns_a_runnable_program_bit_exact_with_qat():
    import snnc
    q = Quantizer(_mlp(), (1, 8, 8), bits=2)
    prog = q.compile(timesteps=5)
    assert prog.options["bits"] == 2 and prog.graph.attrs["training"]["bits"] == 2
    x, _ = _data(16)
    res = snnc.run(prog, x)
    np.testing.assert_array_equal(res.predictions, q.run_int(torch.as_tensor(x), 5).predictions)
    with pytest.raises(SnnError, match="--bits 8 conflicts"):
        q.compile(bits=8)
    # snnc.compile on the exported file takes the record too
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        q.export_onnx(Path(d) / "q.onnx", timesteps=5)
        p2 = snnc.compile(Path(d) / "q.onnx")
        assert p2.options["bits"] == 2 and p2.options["timesteps"] == 5
        with pytest.raises(SnnError, match="conflicts"):
            snnc.compile(Path(d) / "q.onnx", bits=4)


def test_trainer_export_carries_the_record(tmp_path):
    x, y = _data()
    tr = Trainer(_mlp(), TrainConfig(epochs=1, timesteps=4, encoding="latency", progress=False))
    tr.fit(x, y)
    tr.export_onnx(tmp_path / "m.onnx", input_shape=(1, 8, 8))
    assert load_model(tmp_path / "m.onnx").attrs["training"] == {"encoding": "latency",
                                                                 "timesteps": 4}


# --- 1. every encoding for any native model ------------------------------------------------------
@pytest.mark.parametrize("enc", ["phase", "latency"])
def test_any_native_model_trains_with_chip_encodings(enc):
    from compiler.encoding import encode
    x, y = _data()
    tr = Trainer(_mlp(), TrainConfig(epochs=1, timesteps=4, encoding=enc, progress=False))
    xe = tr.encode(torch.as_tensor(x[:3]))
    ref = encode(enc, x[:3].reshape(3, -1).astype(np.float64), 4, seed=0) / 255
    np.testing.assert_array_equal(xe.reshape(4, 3, -1).numpy(), ref.astype(np.float32))
    h = tr.fit(x, y)
    assert h.epochs_done == 1 and np.isfinite(h.loss[0])


# --- 4. checkpoints ------------------------------------------------------------------------------
def test_checkpoint_refuses_another_configuration_or_model(tmp_path):
    x, y = _data()
    ck = str(tmp_path / "ck.pt")
    cfg = dict(epochs=1, timesteps=3, checkpoint=ck, progress=False)
    Trainer(_mlp(), TrainConfig(**cfg)).fit(x, y)
    with pytest.raises(CheckpointMismatchError, match=r"lr: 0.003 -> 0.01") as e:
        Trainer(_mlp(), TrainConfig(lr=0.01, **cfg)).fit(x, y)
    assert "--resume force" in e.value.hint
    # the same configuration resumes (nothing left to train); more epochs continue
    assert Trainer(_mlp(), TrainConfig(**cfg)).fit(x, y).epochs_done == 1
    assert Trainer(_mlp(), TrainConfig(**dict(cfg, epochs=2))).fit(x, y).epochs_done == 2
    h = Trainer(_mlp(), TrainConfig(lr=0.01, resume="force", **dict(cfg, epochs=2))).fit(x, y)
    assert h.epochs_done == 2
    with pytest.raises(CheckpointMismatchError, match="another model") as e:
        Trainer(_mlp(hidden=20), TrainConfig(**cfg)).fit(x, y)
    assert "1.weight: checkpoint [12, 64] vs model [20, 64]" in str(e.value)
    with pytest.raises(CheckpointMismatchError, match="another model"):
        Trainer(_mlp(hidden=20), TrainConfig(resume="force", **cfg)).fit(x, y)
    # resume=False retrains from scratch
    assert Trainer(_mlp(hidden=20), TrainConfig(**dict(cfg, resume=False))).fit(
        x, y).epochs_done == 1


@pytest.mark.slow
def test_digits_example_refuses_a_changed_lr(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "digits_train", Path(__file__).parents[2] / "examples" / "digits" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ck, out = tmp_path / "ck.pt", tmp_path / "m.onnx"
    args = ["--epochs", "1", "--timesteps", "2", "--batch", "256", "--checkpoint", str(ck),
            "-o", str(out), "-q"]
    mod.main(args)
    assert load_model(out).attrs["training"] == {"encoding": "direct", "timesteps": 2}
    assert mod.main(args + ["--lr", "0.01"]) == 2
    mod.main(args + ["--lr", "0.01", "--resume", "force"])
