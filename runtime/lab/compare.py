"""snnrun compare: the seed paper's robustness tables on one model (docs/attacks.md).

    snnrun compare --model examples/digits/model.onnx --bits 8,4 --data digits --limit 100 \\
        --encodings direct,rate,phase,latency --attacks fgsm,pgd --eps 4/255,8/255,16/255,32/255 \\
        --markdown out/compare.md --json

Tables (every adversarial example is evaluated on the cycle-level runtime, runtime/lab/attacks.py):

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

import time

import numpy as np

from compiler.errors import SnnError


# --------------------------------------------------------------------------------------------
# models: compile, train
# --------------------------------------------------------------------------------------------
def compile_images(model, bits_list, *, timesteps: int, encoding: str, calib=None,
                   input_shape=None, spec=None, per_channel: bool = False, clip: str = "max",
                   load_options: dict | None = None):
    """Compile ``model`` at each width -> (images {label: ChipImage}, lowered float graph).

    ``load_options``: frontends.load_model options (NIR: dt, nir_convention, cubalif)."""
    from pathlib import Path

    from compiler import PICORE64, compile_model
    from compiler.backend.emit import file_sha256
    from frontends import load_model
    from runtime.image import from_sections

    spec = spec or PICORE64
    images, fg = {}, None
    graph = load_model(model, input_shape=input_shape, **(load_options or {}))
    source = ({"path": Path(model).name, "sha256": file_sha256(model)}
              if isinstance(model, (str, Path)) else None)
    for b in bits_list:
        prog = compile_model(graph, spec, bits=b, calib=calib, timesteps=timesteps,
                             encoding=encoding, per_channel=per_channel, clip=clip,
                             source=source, progress=False)
        if not prog.complete:
            raise SnnError(f"compiling at {b} bits stopped at stage '{prog.graph.stage}'")
        images[f"{b}-bit"] = from_sections(prog.sections(), prog.spec.digest())
        fg = prog.float_graph
    return images, fg


def synthetic_event_task(n_train: int = 400, n_test: int = 100, T: int = 8, epochs: int = 15,
                         seed: int = 0, bits: int = 8):
    """Train a small conv SNN on ``frontends.datasets.synthetic_events`` and compile it.

    Returns (chip image, test EventDataset)."""

    from frontends.datasets import synthetic_events
    from frontends.training.models import train_event_model

    tr = synthetic_events(n_train, T, seed=seed)
    te = synthetic_events(n_test, T, seed=seed + 1)
    model = train_event_model(tr, epochs=epochs, seed=seed)
    images, _ = compile_images(model, [bits], timesteps=T, encoding="direct",
                               input_shape=tr.shape)
    return next(iter(images.values())), te


# --------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------
def _float_eval(target, x, y, seed):
    from runtime.lab import evaluate as ev
    from runtime.lab.attacks import SweepConfig, _predict
    return ev.accuracy(_predict(target, x, SweepConfig(seed=seed)), y)


def run_compare(images: dict, x, y, *, encodings, attacks, eps, T: int, float_graphs=None,
                encoding_images=None, surrogate="atan", surrogates=(), pgd_steps=(10,),
                steps: int = 10, alpha=None, eot: int = 1, seed: int = 0, workers=None,
                log=None, cluster=None) -> dict:
    """All FGSM/PGD records for the tables (see the module docstring).

    ``images``: {label: ChipImage} used for every encoding unless ``encoding_images[enc]`` gives
    per-encoding images; ``float_graphs``: {encoding: lowered float graph} (algorithm level).
    ``cluster``: generate the examples as (sample chunk, eps) work units on Ray
    (runtime/lab/cluster.py); the records are identical to the local run.
    """
    from runtime.lab import evaluate as ev
    from runtime.lab.attacks import Target, evaluate_examples, generate, run_images
    from runtime.lab.twin import Twin, torch_threads

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
                        xa = generate(ftarget, x, y, attack, e, steps, alpha, seed=seed,
                                      cluster=cluster)
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
                        xa = generate(tg, x, y, attack, e, steps, alpha, seed=seed,
                                      cluster=cluster)
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
                    xa = generate(tg, x, y, attack, e, steps, alpha, seed=seed,
                                  cluster=cluster)
                    m = evaluate_examples(im0, x, xa, y, enc0, T, seed, clean0, workers)
                    records.append({"encoding": enc0, "attack": attack, "eps": float(e),
                                    "surrogate": sg, "steps": steps if attack == "pgd" else 1,
                                    "model": lab0, "level": "hardware", "table": "surrogate",
                                    **m})
            log(f"surrogate {sg} done")
        for st in pgd_steps:
            tg = Target(twin_of(im0, surrogate), enc0, T, eot, seed)
            for e in eps:
                xa = generate(tg, x, y, "pgd", e, int(st), alpha, seed=seed,
                              cluster=cluster)
                m = evaluate_examples(im0, x, xa, y, enc0, T, seed, clean0, workers)
                records.append({"encoding": enc0, "attack": "pgd", "eps": float(e),
                                "surrogate": surrogate, "steps": int(st), "model": lab0,
                                "level": "hardware", "table": "steps", **m})
            log(f"pgd steps {st} done")
    return {"records": records}


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


__all__ = ["run_compare", "compile_images", "synthetic_event_task"]
