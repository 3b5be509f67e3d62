"""Train the bundled example: a small convolutional SNN on scikit-learn's 8x8 digits.

    .venv/bin/python examples/digits/train.py            # writes examples/digits/model.onnx

Model (native IF neurons, soft reset, threshold 1):
    Conv2d(1, 16, 3, padding=1) -> IF -> AvgPool2d(2) -> Conv2d(16, 32, 3, padding=1) -> IF
    -> AvgPool2d(2) -> Flatten -> Linear(128, 10) -> IF (output layer)
Direct encoding (the same image at each of T = 8 steps), BPTT through the surrogate (atan)
gradient, Adam with weight decay, cross-entropy on the output score
``count * v_threshold + v_final`` (frontends.native.run_scores), all through
``frontends.training.trainer.Trainer`` (docs/training.md). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runnable from anywhere without installing the package
    sys.path.insert(0, str(ROOT))

from compiler.errors import SnnError  # noqa: E402
from frontends import native  # noqa: E402
from frontends.datasets import load_dataset  # noqa: E402
from frontends.onnx import export_onnx, import_onnx  # noqa: E402
from frontends.training.trainer import TrainConfig, Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent


def build_model() -> nn.Sequential:
    # named stages: the names become the IR/ONNX node names and the layer names on the chip
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("if1", native.IF()),
        ("pool1", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("if2", native.IF()),
        ("pool2", nn.AvgPool2d(2)),
        ("flat", nn.Flatten()),
        ("fc", nn.Linear(32 * 2 * 2, 10)), ("out", native.IF()),
    ]))


def train(epochs: int = 40, T: int = 8, batch: int = 32, lr: float = 3e-3,
          weight_decay: float = 1e-4, seed: int = 0, out: Path = HERE / "model.onnx",
          checkpoint: Path | None = None, device: str | None = None,
          resume: bool | str = True, threads: int = 1) -> dict:
    torch.manual_seed(seed)          # the initial weights
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = build_model()
    # quantize_input=False: the bundled model.onnx was trained on the raw x in [0, 1]
    cfg = TrainConfig(epochs=epochs, timesteps=T, batch_size=batch, lr=lr,
                      weight_decay=weight_decay, seed=seed, quantize_input=False,
                      checkpoint=str(checkpoint) if checkpoint else None, device=device,
                      resume=resume, threads=threads)
    trainer = Trainer(model, cfg)
    t0 = time.perf_counter()
    trainer.fit(tr.x, tr.y)
    train_s = time.perf_counter() - t0
    acc_tr, acc_te = trainer.evaluate(tr.x, tr.y), trainer.evaluate(te.x, te.y)
    model = model.cpu()
    export_onnx(model, out, input_shape=tr.shape, training=trainer.training_record())
    g = import_onnx(out)  # the file must read back
    return {"train_accuracy": acc_tr, "test_accuracy": acc_te, "train_seconds": train_s,
            "epochs": epochs, "timesteps": T, "onnx": str(out), "nodes": len(g),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "test_samples": len(te), "seed": seed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", type=Path, default=HERE / "model.onnx")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint written every epoch; a rerun with the same settings resumes "
                        "from it (other settings: an error, see --resume)")
    p.add_argument("--resume", choices=["auto", "force", "no"], default="auto",
                   help="auto: resume a checkpoint of the same configuration and model, refuse "
                        "another; force: resume despite changed hyper-parameters; no: retrain")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for this small model on 2 cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    a = p.parse_args(argv)
    if a.quiet:
        from compiler.progress import set_quiet
        set_quiet(True)
    resume = {"auto": True, "force": "force", "no": False}[a.resume]
    try:
        r = train(a.epochs, a.timesteps, a.batch, a.lr, a.weight_decay, a.seed, a.out,
                  a.checkpoint, a.device, resume, a.threads)
    except SnnError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    print(f"float train accuracy {r['train_accuracy']:.4f}, test accuracy "
          f"{r['test_accuracy']:.4f} ({r['test_samples']} digits test images, T={r['timesteps']})")
    print(f"trained {r['epochs']} epochs in {r['train_seconds']:.1f} s; "
          f"{r['parameters']} parameters; wrote {r['onnx']}")
    return 0 if r["test_accuracy"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
