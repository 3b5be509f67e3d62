"""Shared helpers of the experiment scripts (data, models, compile-and-run, tables, plots)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runnable from anywhere without installing the package
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from frontends import native  # noqa: E402
from frontends.datasets import load_dataset  # noqa: E402

OUT = ROOT / "docs" / "experiments"
INPUT_SHAPE = (1, 8, 8)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=OUT, help="folder for the .md/.png/.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest for these tiny tensors on a shared box)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: far fewer epochs/samples (numbers are not meaningful)")
    p.add_argument("--device", default="cpu", help="training device (cpu or cuda)")
    p.add_argument("--format", default="png", choices=("png", "pdf", "svg"),
                   help="figure format")
    p.add_argument("--replot", action="store_true",
                   help="only redraw the figure from the existing <out>/<name>.json")
    return p


def replot(args, name: str) -> bool:
    """``--replot``: redraw the figure from the JSON and stop (True), else False."""
    if not args.replot:
        return False
    import figures
    figures.replot(name, args.out, args.format)
    return True


def setup(args) -> None:
    torch.set_num_threads(max(1, int(args.threads)))
    args.out.mkdir(parents=True, exist_ok=True)


def digits():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    return tr.x, tr.y, te.x, te.y


def build_snn(dropout: float = 0.0, threshold: float = 1.0, c1: int = 16, c2: int = 32,
              bn: str | None = None) -> nn.Sequential:
    """The bundled digits architecture (examples/digits/train.py), with options:
    dropout after each hidden IF, a hidden-layer threshold, BatchNorm ('bn') or ShiftBN ('shift')
    after each convolution (convolutions then have no bias)."""
    from frontends.training.qat import ShiftBN

    def norm(c):
        if bn == "bn":
            return [("bn", nn.BatchNorm2d(c))]
        if bn == "shift":
            return [("sbn", ShiftBN(c))]
        return []

    def drop():
        return [("drop", nn.Dropout(dropout))] if dropout > 0 else []

    layers: list = []

    def add(prefix, items):
        for k, m in items:
            layers.append((f"{k}{prefix}", m))

    add("1", [("conv", nn.Conv2d(1, c1, 3, padding=1, bias=bn is None))] + norm(c1)
        + [("if", native.IF(v_threshold=threshold))] + drop() + [("pool", nn.AvgPool2d(2))])
    add("2", [("conv", nn.Conv2d(c1, c2, 3, padding=1, bias=bn is None))] + norm(c2)
        + [("if", native.IF(v_threshold=threshold))] + drop() + [("pool", nn.AvgPool2d(2))])
    layers += [("flat", nn.Flatten()), ("fc", nn.Linear(c2 * 4, 10)), ("out", native.IF())]
    return nn.Sequential(OrderedDict(layers))


def compile_image(model, bits=8, per_channel=False, timesteps=8, clip="max", encoding="direct"):
    """Compile (full pipeline) and load the chip image: (Program, ChipImage)."""
    from frontends import compile_model
    from runtime.image import from_sections
    if isinstance(model, nn.Module):
        model = model.cpu().eval()
        native.reset(model)
    prog = compile_model(model, bits=bits, per_channel=per_channel, clip=clip,
                         timesteps=timesteps, encoding=encoding, input_shape=INPUT_SHAPE)
    return prog, from_sections(prog.sections(), prog.spec.digest())


def chip_run(image, x, T, encoding="direct", seed=0):
    from runtime.engines.tick import run
    return run(image, x, timesteps=T, encoding=encoding, seed=seed)


def chip_accuracy(image, x, y, T, encoding="direct", seed=0) -> float:
    return chip_run(image, x, T, encoding, seed).accuracy(y)


def torch_encoder(name: str, seed: int = 0):
    """A Trainer encoder for the runtime's encodings (exact forward, straight-through backward;
    stochastic encodings draw new samples every call)."""
    from compiler.encoding import encode_torch
    state = {"i": 0}

    def enc(x: torch.Tensor, T: int) -> torch.Tensor:
        state["i"] += 1
        s = seed * 1_000_003 + state["i"] if name == "rate" else seed
        v = encode_torch(name, x.cpu(), T, seed=s)
        return v.reshape((T,) + tuple(x.shape)).to(x.device)

    return enc


def fmt_pct(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else \
        f"{100 * v:.{digits}f}"


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def environment(args=None) -> str:
    thr = getattr(args, "threads", None) or torch.get_num_threads()
    dev = getattr(args, "device", "cpu")
    return (f"python {platform.python_version()}, torch {torch.__version__}, training on "
            f"{dev} with {thr} torch thread(s), {os.cpu_count()} CPUs visible")


def write_doc(out: Path, name: str, title: str, sections: list[str], data: dict) -> Path:
    """docs/experiments/<name>.md (+ <name>.json with the raw numbers)."""
    md = out / f"{name}.md"
    md.write_text(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections) + "\n")
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=_json) + "\n")
    return md


def _json(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as p
    return p


class Clock:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
