"""Train the bundled ANN example: a small residual CNN (ReLU + AvgPool) on scikit-learn's digits.

    .venv/bin/python examples/cnn/train_ann.py           # writes examples/cnn/ann.onnx

The model is an ordinary PyTorch ANN, exported with ``torch.onnx.export``; snnc converts it to
IF neurons (``snnc compile ann.onnx --calib digits``, ``snnc convert-report``):

    conv1 Conv2d(1, 16, 3, padding=1) -> BatchNorm -> ReLU                  16 x 8 x 8
    pool1 AvgPool2d(2)                                                      16 x 4 x 4
    conv2 Conv2d(16, 16, 3, padding=1) -> BatchNorm -> ReLU
    conv3 Conv2d(16, 16, 3, padding=1) -> BatchNorm, + pool1 (residual) -> ReLU
    pool2 AvgPool2d(2) -> Flatten -> fc Linear(64, 10)                      logits

Adam (lr 3e-3, weight decay 1e-4, cosine schedule), batch 32, cross-entropy, 30 epochs, seed 0,
deterministic. Inputs are the digits images in [0, 1] as they are (no normalisation layer), so
the chip's direct encoding feeds the first convolution exactly what the ANN saw.

Export: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter, still in
torch 2.13; BatchNorm is folded into the convolutions in eval mode, the batch dim is dynamic).
``--exporter dynamo`` uses the torch.export-based exporter instead (needs onnxscript; static
batch 1, Reshape instead of Flatten); snnc reads both. The script reads the file back with
``frontends.onnx.import_ann`` and checks it against onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runnable from anywhere without installing the package
    sys.path.insert(0, str(ROOT))

from frontends.datasets import load_dataset  # noqa: E402
from frontends.onnx import check_onnxruntime, import_ann  # noqa: E402

HERE = Path(__file__).resolve().parent


class ResCNN(nn.Module):
    """The example network (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.pool1 = nn.AvgPool2d(2)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv3, self.bn3 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.pool2 = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        h = self.pool1(F.relu(self.bn1(self.conv1(x))))
        y = F.relu(self.bn2(self.conv2(h)))
        y = F.relu(self.bn3(self.conv3(y)) + h)
        return self.fc(torch.flatten(self.pool2(y), 1))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def export(model: nn.Module, path: Path, exporter: str = "legacy") -> None:
    model.eval()
    x = torch.zeros(1, 1, 8, 8)
    if exporter == "legacy":
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}},
                          opset_version=17)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["input"],
                          output_names=["logits"])


def train(epochs: int = 30, batch: int = 32, lr: float = 3e-3, weight_decay: float = 1e-4,
          seed: int = 0, out: Path = HERE / "ann.onnx", exporter: str = "legacy") -> dict:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    xtr, ytr = torch.from_numpy(tr.x), torch.from_numpy(tr.y)
    xte, yte = torch.from_numpy(te.x), torch.from_numpy(te.y)
    model = ResCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    acc_tr, acc_te = accuracy(model, xtr, ytr), accuracy(model, xte, yte)
    export(model, out, exporter)
    ann = import_ann(out)                       # the file must read back ...
    ort = check_onnxruntime(ann, tr.x[:256])    # ... and agree with onnxruntime
    return {"train_accuracy": acc_tr, "test_accuracy": acc_te, "train_seconds": train_s,
            "epochs": epochs, "onnx": str(out), "nodes": len(ann.graph), "seed": seed,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "onnxruntime_max_abs_diff": ort["max_abs_diff"], "onnxruntime_ok": ort["ok"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy")
    p.add_argument("-o", "--out", type=Path, default=HERE / "ann.onnx")
    a = p.parse_args(argv)
    r = train(a.epochs, a.batch, a.lr, a.weight_decay, a.seed, a.out, a.exporter)
    print(f"ANN train accuracy {r['train_accuracy']:.4f}, test accuracy {r['test_accuracy']:.4f}"
          f" (digits test split, 360 images)")
    print(f"trained {r['epochs']} epochs in {r['train_seconds']:.1f} s; {r['parameters']} "
          f"parameters; wrote {r['onnx']}; onnxruntime max |diff| "
          f"{r['onnxruntime_max_abs_diff']:.2e}")
    return 0 if r["test_accuracy"] >= 0.95 and r["onnxruntime_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
