"""Seed-comparison model builders and their BPTT training (stage: training).

The networks ``snnrun compare`` trains on the spot: the digits example's architecture for each
input encoding (:func:`train_digits_encoding`) and a small conv SNN for DVS-like event data
(:func:`train_event_model`). Inputs for an encoding are the chip's own payloads / 255
(:func:`compiler.encoding.encode`), so a model trained here sees what the chip will deliver.
"""

from __future__ import annotations

from pathlib import Path


def digits_architecture():
    """The examples/digits network (README): conv16-IF-pool-conv32-IF-pool-fc10-IF."""
    from torch import nn

    from frontends import native
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), native.IF(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), native.IF(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10), native.IF())


def train_native(model, x, y, to_seq, epochs: int = 30, batch: int = 32, lr: float = 3e-3,
                 seed: int = 0):
    """BPTT training of a native SNN: ``to_seq(xb, step) -> [T, B, ...]`` inputs, CE on scores."""
    import torch
    import torch.nn.functional as F

    from frontends import native
    from frontends.native.functional import torch_threads

    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    step = 0
    with torch_threads(1):
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(perm), batch):
                idx = perm[i:i + batch]
                scores = native.run_scores(model, to_seq(xt[idx], step))
                loss = F.cross_entropy(scores, yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
            sched.step()
    model.eval()
    return model


def train_digits_encoding(encoding: str, T: int, epochs: int = 30, seed: int = 0, out=None):
    """Train the digits architecture on inputs coded with ``encoding`` (the chip's payloads/255);
    returns the module (and writes ``out`` .onnx when given)."""
    import torch

    from compiler.encoding import encode
    from frontends.datasets import load_dataset

    tr = load_dataset("digits", "train")

    def to_seq(xb, step):
        p = encode(encoding, xb.numpy().reshape(len(xb), -1), T, seed=seed * 100003 + step)
        shape = (T, len(xb)) + tuple(xb.shape[1:])
        return torch.as_tensor(p, dtype=torch.float32).reshape(shape) / 255

    model = train_native(digits_architecture(), tr.x, tr.y, to_seq, epochs, seed=seed)
    if out is not None:
        from frontends.onnx import export_onnx
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, out, input_shape=tr.shape,
                    training={"encoding": encoding, "timesteps": int(T)})
    return model


def event_architecture(shape, classes: int):
    from torch import nn

    from frontends import native
    C, H, W = shape
    h, w = (H + 1) // 2, (W + 1) // 2
    h, w = (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(
        nn.Conv2d(C, 8, 3, stride=2, padding=1), native.IF(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), native.IF(),
        nn.Flatten(), nn.Linear(16 * h * w, classes), native.IF())


def train_event_model(data, epochs: int = 15, seed: int = 0):
    """Train :func:`event_architecture` on an event dataset (``x`` [N, T, C, H, W] binary events,
    as :func:`frontends.datasets.synthetic_events` gives) by BPTT; returns the module."""
    import torch

    model = event_architecture(data.shape, data.classes)

    def to_seq(xb, step):
        return xb.transpose(0, 1).to(torch.float32)

    return train_native(model, data.x, data.y, to_seq, epochs, seed=seed)
