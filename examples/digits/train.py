"""Train the bundled example: a small convolutional SNN on scikit-learn's 8x8 digits.

    .venv/bin/python examples/digits/train.py            # writes examples/digits/model.onnx

Model (native IF neurons, soft reset, threshold 1):
    Conv2d(1, 16, 3, padding=1) -> IF -> AvgPool2d(2) -> Conv2d(16, 32, 3, padding=1) -> IF
    -> AvgPool2d(2) -> Flatten -> Linear(128, 10) -> IF (output layer)
Direct encoding (the same image at each of T = 8 steps), BPTT through the surrogate (atan)
gradient, Adam with weight decay, cross-entropy on the output score
``count * v_threshold + v_final`` (frontends.native.run_scores). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runnable from anywhere without installing the package
    sys.path.insert(0, str(ROOT))

from frontends import native  # noqa: E402
from frontends.datasets import load_dataset  # noqa: E402
from frontends.onnx_io import export_onnx, import_onnx  # noqa: E402

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


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int, batch: int = 512
             ) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        scores = native.run_scores(model, native.direct(x[i:i + batch], T))
        correct += int((scores.argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


def train(epochs: int = 40, T: int = 8, batch: int = 32, lr: float = 3e-3,
          weight_decay: float = 1e-4, seed: int = 0, out: Path = HERE / "model.onnx") -> dict:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    xtr, ytr = torch.from_numpy(tr.x), torch.from_numpy(tr.y)
    xte, yte = torch.from_numpy(te.x), torch.from_numpy(te.y)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc="train", unit="epoch")
    for _ in bar:
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total, n = 0.0, 0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            scores = native.run_scores(model, native.direct(xtr[idx], T))
            loss = F.cross_entropy(scores, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        sched.step()
        bar.set_postfix(loss=f"{total / n:.4f}")
    train_s = time.perf_counter() - t0
    acc_tr, acc_te = accuracy(model, xtr, ytr, T), accuracy(model, xte, yte, T)
    export_onnx(model, out, input_shape=tr.shape)
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
    a = p.parse_args(argv)
    r = train(a.epochs, a.timesteps, a.batch, a.lr, a.weight_decay, a.seed, a.out)
    print(f"float train accuracy {r['train_accuracy']:.4f}, test accuracy "
          f"{r['test_accuracy']:.4f} ({r['test_samples']} digits test images, T={r['timesteps']})")
    print(f"trained {r['epochs']} epochs in {r['train_seconds']:.1f} s; "
          f"{r['parameters']} parameters; wrote {r['onnx']}")
    return 0 if r["test_accuracy"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
