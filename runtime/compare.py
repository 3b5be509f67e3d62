"""snnrun compare: the seed paper's robustness tables on one model (docs/attacks.md).

    snnrun compare --model examples/digits/model.onnx --bits 8,4 --data digits --limit 100 \\
        --encodings direct,rate,phase,latency --attacks fgsm,pgd --eps 4/255,8/255,16/255,32/255 \\
        --markdown out/compare.md --json

Tables (every adversarial example is evaluated on the cycle-level runtime, runtime/attacks.py):

1. accuracy loss per attack strength for each encoding, on the first chip image;
2. before vs after quantization: the float source model (algorithm level) and every chip image
   (e.g. 8-bit and 2-bit weights of the same model), per encoding;
3. algorithm-level vs hardware-level adv_loss: examples from the float model evaluated on the
   float model (algorithm), the same examples on the chip (transfer), examples from the chip's
   own twin on the chip (hardware);
4. surrogate gradients (PDSG vs atan/sigmoid/triangle) and PGD steps vs FGSM on the first image;
5. SDA on event data: the digits binarised to Bernoulli events on the first image, and
   (``--sda-synthetic N``) the synthetic DVS-like set on a small SNN trained for it on the spot.

A model trained for direct encoding is near chance under phase/latency codes (they deliver far
less input over T steps): ``--train-encodings rate,phase,latency`` trains the digits example's
architecture (examples/digits/README.md) for each of those encodings first (``--epochs``), and
``--encoding-models phase=FILE.onnx,...`` uses given models instead.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
import numpy as np

from compiler.cliutil import debug_option, echo_json, jsonable
from compiler.errors import SnnError
from runtime.cli import ENCODINGS, SUBCOMMANDS, parse_list


# --------------------------------------------------------------------------------------------
# models: compile, train
# --------------------------------------------------------------------------------------------
def compile_images(model, bits_list, *, timesteps: int, encoding: str, calib=None,
                   input_shape=None, spec=None, per_channel: bool = False, clip: str = "max"):
    """Compile ``model`` at each width -> (images {label: ChipImage}, lowered float graph)."""
    from compiler import PICORE64
    from frontends import compile_model
    from runtime.image import from_sections

    spec = spec or PICORE64
    images, fg = {}, None
    for b in bits_list:
        prog = compile_model(model, spec, bits=b, calib=calib, timesteps=timesteps,
                             encoding=encoding, input_shape=input_shape,
                             per_channel=per_channel, clip=clip)
        if not prog.complete:
            raise SnnError(f"compiling at {b} bits stopped at stage '{prog.graph.stage}'")
        images[f"{b}-bit"] = from_sections(prog.sections(), prog.spec.digest())
        fg = prog.float_graph
    return images, fg


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
    from runtime.twin import torch_threads

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

    from frontends.datasets import load_dataset
    from runtime.encoding import encode

    tr = load_dataset("digits", "train")

    def to_seq(xb, step):
        p = encode(encoding, xb.numpy().reshape(len(xb), -1), T, seed=seed * 100003 + step)
        shape = (T, len(xb)) + tuple(xb.shape[1:])
        return torch.as_tensor(p, dtype=torch.float32).reshape(shape) / 255

    model = train_native(digits_architecture(), tr.x, tr.y, to_seq, epochs, seed=seed)
    if out is not None:
        from frontends.onnx import export_onnx
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, out, input_shape=tr.shape)
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


def synthetic_event_task(n_train: int = 400, n_test: int = 100, T: int = 8, epochs: int = 15,
                         seed: int = 0, bits: int = 8):
    """Train a small conv SNN on ``frontends.datasets.synthetic_events`` and compile it.

    Returns (chip image, test EventDataset)."""
    import torch

    from frontends.datasets import synthetic_events

    tr = synthetic_events(n_train, T, seed=seed)
    te = synthetic_events(n_test, T, seed=seed + 1)
    model = event_architecture(tr.shape, tr.classes)

    def to_seq(xb, step):
        return xb.transpose(0, 1).to(torch.float32)

    train_native(model, tr.x, tr.y, to_seq, epochs, seed=seed)
    images, _ = compile_images(model, [bits], timesteps=T, encoding="direct",
                               input_shape=tr.shape)
    return next(iter(images.values())), te


# --------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------
def _float_eval(target, x, y, seed):
    from runtime import evaluate as ev
    from runtime.attacks import SweepConfig, _predict
    return ev.accuracy(_predict(target, x, SweepConfig(seed=seed)), y)


def run_compare(images: dict, x, y, *, encodings, attacks, eps, T: int, float_graphs=None,
                encoding_images=None, surrogate="atan", surrogates=(), pgd_steps=(10,),
                steps: int = 10, alpha=None, eot: int = 1, seed: int = 0, workers=None,
                log=None) -> dict:
    """All FGSM/PGD records for the tables (see the module docstring).

    ``images``: {label: ChipImage} used for every encoding unless ``encoding_images[enc]`` gives
    per-encoding images; ``float_graphs``: {encoding: lowered float graph} (algorithm level).
    """
    from runtime import evaluate as ev
    from runtime.attacks import Target, evaluate_examples, generate, run_images
    from runtime.twin import Twin, torch_threads

    log = log or (lambda s: None)
    records = []
    twins: dict = {}

    def twin_of(im, sg):        # unmap() + matrices once per (image, surrogate)
        key = (id(im), sg)
        if key not in twins:
            twins[key] = Twin(im, surrogate=sg)
        return twins[key]

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    with torch_threads(1):
        for enc in encodings:
            imgs = (encoding_images or {}).get(enc, images)
            fg = (float_graphs or {}).get(enc)
            clean = {lab: run_images(im, x, enc, T, seed, workers=workers)
                     for lab, im in imgs.items()}
            ftarget = None
            if fg is not None:
                ftarget = Target(Twin.from_graph(fg, surrogate), enc, T, eot, seed)
                f_clean = _float_eval(ftarget, x, y, seed)
            for attack in attacks:
                for e in eps:
                    t0 = time.perf_counter()
                    base = {"encoding": enc, "attack": attack, "eps": float(e),
                            "surrogate": surrogate, "steps": steps if attack == "pgd" else 1}
                    if ftarget is not None:
                        xa = generate(ftarget, x, y, attack, e, steps, alpha, seed=seed)
                        fa = _float_eval(ftarget, xa, y, seed)
                        records.append({**base, "model": "float", "level": "algorithm",
                                        "clean_accuracy": f_clean, "adv_accuracy": fa,
                                        "accuracy_loss": f_clean - fa,
                                        "asr": ev.asr(f_clean, fa)})
                        for lab, im in imgs.items():
                            m = evaluate_examples(im, x, xa, y, enc, T, seed, clean[lab], workers)
                            records.append({**base, "model": lab, "level": "transfer", **m})
                    for lab, im in imgs.items():
                        tg = Target(twin_of(im, surrogate), enc, T, eot, seed)
                        xa = generate(tg, x, y, attack, e, steps, alpha, seed=seed)
                        m = evaluate_examples(im, x, xa, y, enc, T, seed, clean[lab], workers)
                        records.append({**base, "model": lab, "level": "hardware", **m})
                    log(f"{enc} {attack} eps={e * 255:g}/255 ({time.perf_counter() - t0:.1f} s)")
        # surrogates and PGD steps on the first image, first encoding
        lab0, im0 = next(iter(images.items()))
        enc0 = encodings[0]
        clean0 = run_images(im0, x, enc0, T, seed, workers=workers)
        for sg in surrogates:
            tg = Target(twin_of(im0, sg), enc0, T, eot, seed)
            for attack in attacks:
                for e in eps:
                    xa = generate(tg, x, y, attack, e, steps, alpha, seed=seed)
                    m = evaluate_examples(im0, x, xa, y, enc0, T, seed, clean0, workers)
                    records.append({"encoding": enc0, "attack": attack, "eps": float(e),
                                    "surrogate": sg, "steps": steps if attack == "pgd" else 1,
                                    "model": lab0, "level": "hardware", "table": "surrogate",
                                    **m})
            log(f"surrogate {sg} done")
        for st in pgd_steps:
            tg = Target(twin_of(im0, surrogate), enc0, T, eot, seed)
            for e in eps:
                xa = generate(tg, x, y, "pgd", e, int(st), alpha, seed=seed)
                m = evaluate_examples(im0, x, xa, y, enc0, T, seed, clean0, workers)
                records.append({"encoding": enc0, "attack": "pgd", "eps": float(e),
                                "surrogate": surrogate, "steps": int(st), "model": lab0,
                                "level": "hardware", "table": "steps", **m})
            log(f"pgd steps {st} done")
    return {"records": records}


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f}"


def _md(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _find(records, **kw):
    for r in records:
        if all(r.get(k) == v for k, v in kw.items()) and ("table" not in r or "table" in kw):
            return r
    return None


def tables(result: dict, eps, labels, encodings, attacks, surrogate: str) -> dict[str, str]:
    """Markdown tables from run_compare's records."""
    from runtime.attacks import eps_label
    R = result["records"]
    eh = [eps_label(e) for e in eps]
    out = {}
    lab0 = labels[0]
    for attack in attacks:
        rows = []
        for enc in encodings:
            rs = [_find(R, encoding=enc, attack=attack, eps=e, model=lab0, level="hardware")
                  for e in eps]
            if rs[0] is None:
                continue
            rows.append([enc, _pct(rs[0]["clean_accuracy"])] + [_pct(r["accuracy_loss"])
                                                                 for r in rs])
        out[f"encodings_{attack}"] = (
            f"**{attack.upper()}: accuracy loss (percentage points) on the chip ({lab0}), "
            f"per encoding and eps** (hardware-level, surrogate {surrogate})\n\n"
            + _md(["encoding", "clean acc %"] + eh, rows))
        rows = []
        for enc in encodings:
            for lab in ["float"] + list(labels):
                lvl = "algorithm" if lab == "float" else "hardware"
                rs = [_find(R, encoding=enc, attack=attack, eps=e, model=lab, level=lvl)
                      for e in eps]
                if rs[0] is None:
                    continue
                rows.append([enc, lab, _pct(rs[0]["clean_accuracy"])]
                            + [_pct(r["accuracy_loss"]) for r in rs])
        out[f"quantization_{attack}"] = (
            f"**{attack.upper()}: accuracy loss before (float) vs after quantization (chip "
            f"images)** (percentage points; float = attacked and evaluated on the float model)"
            f"\n\n" + _md(["encoding", "weights", "clean acc %"] + eh, rows))
        rows = []
        for enc in encodings:
            for e in eps:
                fa = _find(R, encoding=enc, attack=attack, eps=e, model="float",
                           level="algorithm")
                row = [enc, eps_label(e), _pct(fa["accuracy_loss"]) if fa else "-"]
                for lab in labels:
                    tr = _find(R, encoding=enc, attack=attack, eps=e, model=lab, level="transfer")
                    hw = _find(R, encoding=enc, attack=attack, eps=e, model=lab, level="hardware")
                    row += [_pct(tr["accuracy_loss"]) if tr else "-",
                            _pct(hw["accuracy_loss"]) if hw else "-"]
                rows.append(row)
        head = ["encoding", "eps", "algorithm (float->float)"]
        for lab in labels:
            head += [f"transfer (float->{lab} chip)", f"hardware ({lab} twin->chip)"]
        out[f"levels_{attack}"] = (
            f"**{attack.upper()}: algorithm-level vs hardware-level adv_loss** (accuracy loss, "
            f"percentage points)\n\n" + _md(head, rows))
    sg_rows = []
    for r in R:
        if r.get("table") == "surrogate":
            sg_rows.append(r)
    if sg_rows:
        rows = []
        for attack in attacks:
            for sg in dict.fromkeys(r["surrogate"] for r in sg_rows):
                rs = [_find(R, table="surrogate", surrogate=sg, attack=attack, eps=e) for e in eps]
                rows.append([attack, sg] + [_pct(r["adv_accuracy"]) if r else "-" for r in rs])
        out["surrogates"] = (
            f"**Surrogate gradients: chip accuracy (%) under attack ({lab0}, "
            f"{sg_rows[0]['encoding']} encoding, clean {_pct(sg_rows[0]['clean_accuracy'])})**"
            f" -- lower = stronger attack\n\n" + _md(["attack", "surrogate"] + eh, rows))
    st_rows = [r for r in R if r.get("table") == "steps"]
    if st_rows:
        rows = []
        enc0 = st_rows[0]["encoding"]
        f = [_find(R, encoding=enc0, attack="fgsm", eps=e, model=lab0, level="hardware")
             for e in eps]
        if f[0] is not None:
            rows.append(["FGSM"] + [_pct(r["adv_accuracy"]) for r in f])
        for st in dict.fromkeys(r["steps"] for r in st_rows):
            rs = [_find(R, table="steps", steps=st, eps=e) for e in eps]
            rows.append([f"PGD-{st}"] + [_pct(r["adv_accuracy"]) if r else "-" for r in rs])
        out["steps"] = (f"**PGD steps vs FGSM: chip accuracy (%) under attack ({lab0}, {enc0} "
                        f"encoding, surrogate {surrogate}, alpha = eps/4, random start)**\n\n"
                        + _md(["attack"] + eh, rows))
    return out


def sda_table(runs: list[dict]) -> str:
    rows = []
    for o in runs:
        r = o["results"][0]
        rows.append([o["data"], o.get("image", "-"), f"{o['n']}", _pct(r["clean_accuracy"]),
                     _pct(r["adv_accuracy"]), _pct(r["sda_success_rate"]),
                     "-" if not math.isfinite(r["l0_mean"]) else f"{r['l0_mean']:.1f}",
                     "-" if not math.isfinite(r["l0_median"]) else f"{r['l0_median']:.0f}",
                     f"{r['input_bits']}", f"{r['events_per_sample']:.1f}",
                     "-" if not math.isfinite(r["l0_fraction"])
                     else f"{100 * r['l0_fraction']:.2f}",
                     f"{r['mean_queries']:.0f}" if math.isfinite(r["mean_queries"]) else "-"])
    return ("**SDA on binary events (hardware level, PDSG gradients, runtime finite "
            "differences)**\n\n" + _md(["data", "chip", "n", "clean acc %", "adv acc %",
                                        "success %", "L0 mean", "L0 median", "input bits",
                                        "events/sample", "L0 % of bits", "queries/sample"], rows))


def plot_encodings(result: dict, eps, attack: str, label: str, path) -> str:
    from runtime.attacks import plot_accuracy_vs_eps
    runs = []
    for enc in dict.fromkeys(r["encoding"] for r in result["records"]):
        rs = [_find(result["records"], encoding=enc, attack=attack, eps=e, model=label,
                    level="hardware") for e in eps]
        if rs[0] is not None:
            runs.append({"attack": attack, "encoding": enc, "label": f"{attack} {enc}",
                         "results": rs})
    return plot_accuracy_vs_eps(runs, path)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _pairs(text: str | None, what: str) -> dict[str, str]:
    out = {}
    for tok in (text or "").split(","):
        if not tok.strip():
            continue
        if "=" not in tok:
            raise click.BadParameter(f"{what}: '{tok}' is not ENCODING=FILE")
        k, v = tok.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _names(text: str, allowed, what: str) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in out if t not in allowed]
    if bad:
        raise click.BadParameter(f"{what}: unknown {bad}, expected {', '.join(allowed)}")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model", default=None, type=click.Path(dir_okay=False),
              help="Source model (.onnx) to compile at each --bits (and attack as float).")
@click.option("--bits", default="8,4", show_default=True, help="Weight widths to compile.")
@click.option("--per-channel", is_flag=True, help="Compile with per-channel weight scales.")
@click.option("--clip", default="max", show_default=True, help="Weight range: max or pNN.N.")
@click.option("--images", default=None, help="Precompiled chip images a.bin,b.bin instead.")
@click.option("--source", default=None, type=click.Path(dir_okay=False),
              help="Float model for the algorithm level (default: --model).")
@click.option("--data", default="digits", show_default=True)
@click.option("--limit", type=int, default=100, show_default=True, help="Test samples.")
@click.option("--timesteps", "-T", type=int, default=None, help="Steps (default: image META).")
@click.option("--encodings", default="direct,rate,phase,latency", show_default=True)
@click.option("--attacks", default="fgsm,pgd", show_default=True)
@click.option("--eps", default="4/255,8/255,16/255,32/255", show_default=True)
@click.option("--surrogate", default="atan", show_default=True,
              type=click.Choice(["atan", "sigmoid", "triangle", "pdsg"]))
@click.option("--surrogates", default="atan,sigmoid,triangle,pdsg", show_default=True,
              help="Surrogate comparison table ('' to skip).")
@click.option("--pgd-steps", default="5,10,20", show_default=True,
              help="PGD steps table vs FGSM ('' to skip).")
@click.option("--steps", default=10, show_default=True, help="PGD steps in the main tables.")
@click.option("--alpha", type=float, default=None, help="PGD step (default eps/4).")
@click.option("--eot", default=1, show_default=True, help="EOT draws for rate coding.")
@click.option("--encoding-models", default=None, help="ENC=model.onnx,... per encoding.")
@click.option("--train-encodings", default="", help="Train the digits architecture for these "
              "encodings first (e.g. rate,phase,latency).")
@click.option("--epochs", default=30, show_default=True, help="Epochs for --train-encodings.")
@click.option("--workdir", default="snnrun-compare", show_default=True, type=click.Path(),
              help="Where trained models are written.")
@click.option("--sda/--no-sda", default=True, show_default=True,
              help="SDA on the data binarised to events (first image).")
@click.option("--sda-limit", default=50, show_default=True, help="Samples for SDA.")
@click.option("--sda-synthetic", default=0, show_default=True,
              help="Also SDA on N synthetic DVS samples (trains a small SNN first).")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", type=int, default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--markdown", "md_path", default=None, type=click.Path(dir_okay=False),
              help="Write the tables as Markdown.")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Write compare.json, compare.md (and figures with --plots).")
@click.option("--plots", is_flag=True, help="Accuracy vs eps per encoding (needs --report).")
@debug_option
def compare_cmd(model, bits, per_channel, clip, images, source, data, limit, timesteps, encodings,
                attacks, eps, surrogate, surrogates, pgd_steps, steps, alpha, eot, encoding_models,
                train_encodings, epochs, workdir, sda, sda_limit, sda_synthetic, seed, workers,
                as_json, md_path, report_dir, plots, debug):
    """Robustness tables of one model: encodings x attack strength, before/after quantization,
    algorithm vs hardware level, surrogates, PGD steps, SDA (docs/attacks.md)."""
    from frontends.datasets import binarize_events, calibration_arrays, load_dataset
    from runtime.attacks import sda_run
    from runtime.image import load

    t_start = time.perf_counter()
    log = (lambda s: None) if as_json else (lambda s: click.echo(f"  {s}", err=True))
    encs = _names(encodings, ENCODINGS, "--encodings")
    atts = _names(attacks, ("fgsm", "pgd"), "--attacks")
    sgs = _names(surrogates, ("atan", "sigmoid", "triangle", "pdsg"), "--surrogates")
    eps_l = parse_list(eps, "--eps")
    steps_l = [int(s) for s in parse_list(pgd_steps, "--pgd-steps")]
    if plots and not report_dir:
        raise click.UsageError("--plots needs --report DIR")
    ds = load_dataset(data, split="test", limit=limit)
    calib = None
    try:
        calib = calibration_arrays(data, limit=256)
    except SnnError:
        pass
    src_float = {}
    enc_images = {}
    if images:
        paths = [p.strip() for p in images.split(",") if p.strip()]
        imgs = {Path(p).stem: load(p) for p in paths}
        T = int(timesteps or next(iter(imgs.values())).meta["timesteps"])
        src = source
        if src:
            from runtime.attacks import float_graph_of
            im0 = next(iter(imgs.values()))
            fg = float_graph_of(src, im0.spec, tuple(im0.meta["input"]["shape"]))
            src_float = {e: fg for e in encs}
    elif model:
        bits_l = [int(b) for b in parse_list(bits, "--bits")]
        T = int(timesteps or 8)
        copt = {"per_channel": per_channel, "clip": clip}
        imgs, fg = compile_images(model, bits_l, timesteps=T, encoding=encs[0], calib=calib,
                                  **copt)
        if source:
            from runtime.attacks import float_graph_of
            im0 = next(iter(imgs.values()))
            fg = float_graph_of(source, im0.spec, tuple(im0.meta["input"]["shape"]))
        src_float = {e: fg for e in encs}
        per = _pairs(encoding_models, "--encoding-models")
        for enc in _names(train_encodings, ENCODINGS, "--train-encodings") if train_encodings \
                else []:
            if enc in per:
                continue
            if data != "digits":
                raise click.UsageError("--train-encodings trains the digits architecture; "
                                       "use --encoding-models for other data")
            out = Path(workdir) / f"digits_{enc}.onnx"
            log(f"training the digits architecture for {enc} encoding -> {out}")
            train_digits_encoding(enc, T, epochs, seed, out)
            per[enc] = str(out)
        for enc, path in per.items():
            log(f"compiling {path} for {enc}")
            enc_images[enc], src_float[enc] = compile_images(path, bits_l, timesteps=T,
                                                             encoding=enc, calib=calib, **copt)
    else:
        raise click.UsageError("give --model MODEL.onnx (with --bits) or --images a.bin,b.bin")
    labels = list(imgs)
    res = run_compare(imgs, ds.x, ds.y, encodings=encs, attacks=atts, eps=eps_l, T=T,
                      float_graphs=src_float, encoding_images=enc_images, surrogate=surrogate,
                      surrogates=sgs, pgd_steps=steps_l, steps=steps, alpha=alpha, eot=eot,
                      seed=seed, workers=workers, log=log)
    tabs = tables(res, eps_l, labels, encs, atts, surrogate)
    sda_runs = []
    if sda:
        ev_ds = binarize_events(load_dataset(data, split="test", limit=sda_limit), T, seed=seed)
        lab0 = labels[0]
        o = sda_run(imgs[lab0], ev_ds.x, ev_ds.y, seed=seed, workers=workers, name=ev_ds.name)
        o["image"] = lab0
        sda_runs.append(o)
        log("SDA on binarised data done")
    if sda_synthetic:
        log("training a small SNN on synthetic DVS events")
        im_ev, te = synthetic_event_task(n_test=int(sda_synthetic), T=T, seed=seed)
        o = sda_run(im_ev, te.x, te.y, seed=seed, workers=workers, name="synthetic_events")
        o["image"] = "8-bit (trained here)"
        sda_runs.append(o)
        log("SDA on synthetic events done")
    if sda_runs:
        tabs["sda"] = sda_table(sda_runs)
    out = {"model": model, "images": labels, "data": data, "n": int(len(ds.x)), "timesteps": T,
           "encodings": encs, "attacks": atts, "eps": eps_l, "surrogate": surrogate,
           "steps": steps, "eot": eot, "records": res["records"], "sda": sda_runs,
           "tables": tabs, "seconds": time.perf_counter() - t_start}
    md = "\n\n".join(tabs.values()) + "\n"
    if md_path:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(md)
    if report_dir:
        d = Path(report_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "compare.json").write_text(json.dumps(jsonable(out), indent=2))
        (d / "compare.md").write_text(md)
        if plots:
            out["figures"] = [plot_encodings(res, eps_l, a, labels[0],
                                             d / f"accuracy_vs_eps_{a}.png") for a in atts]
    if as_json:
        echo_json(out)
    else:
        click.echo(md)


SUBCOMMANDS["compare"] = compare_cmd

__all__ = ["compare_cmd", "run_compare", "tables", "sda_table", "compile_images",
           "train_digits_encoding", "synthetic_event_task", "train_native"]
