"""snnc: compile spiking neural networks for a PIcore-like 64-core chip, run the deployed image
cycle-level, and measure how robust it is (device noise, faults, adversarial inputs).

The public API; the implementation lives in :mod:`frontends` (model import, training library),
:mod:`compiler` (IR, passes, reference evaluator, chip.bin) and :mod:`runtime` (engines, the
robustness lab, reports)::

    import snnc
    graph = snnc.load_model("model.onnx", calib=x_cal)          # optional: inspect the IR
    prog = snnc.compile("model.onnx", bits=4, calib=x_cal)      # -> Program (prog.write(path))
    image = snnc.load("chip.bin")                               # or run the Program itself
    res = snnc.run(image, x, timesteps=8)                       # res.accuracy(y), res.summary()
    adv = snnc.attack(image, x, y, "fgsm", eps=[8 / 255])       # evaluated on the runtime
    rows = snnc.sweep(image, x, y, "mismatch", [0.1, 0.3], samples=100)
    cert = snnc.certify(image, x, y, [0.001, 0.004])
    hist = snnc.train(model, x_train, y_train, snnc.TrainConfig(epochs=10))
    tuned, rep = snnc.train_chip(image, x_new, y_new, epochs=3)   # on-chip fine-tuning
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler import PICORE64, ChipSpec, Program, compile_model, errors, load_spec
from compiler import encoding as encodings
from compiler.errors import SnnError
from compiler.ir.graph import Graph
from frontends import datasets, load_model
from frontends import native as layers
from frontends.training import TrainConfig, Trainer, train
from runtime.engines import RunResult, run_payloads
from runtime.image import ChipImage
from runtime.image import load as _load_image
from snnc._version import __version__

__all__ = ["__version__", "load_model", "compile", "load", "run", "run_payloads", "attack",
           "sweep", "certify", "train", "train_chip", "Trainer", "TrainConfig", "export_onnx",
           "export_nir",
           "ChipSpec", "PICORE64", "load_spec", "ChipImage", "RunResult", "Program", "Graph",
           "SnnError", "errors", "layers", "datasets", "encodings"]


def export_onnx(model, path, input_shape=None, **kw):
    """Write a native SNN (nn.Module) or a Graph as ONNX in the ai.snnc SNN dialect."""
    from frontends.onnx import export_onnx as _export
    return _export(model, path, input_shape=input_shape, **kw)


def export_nir(graph_or_image, path, **kw):
    """Write a Graph (or a ChipImage, unmapped to its integer graph) as a NIR file."""
    from frontends.nir_io import export_nir as _export
    g = graph_or_image.unmap() if isinstance(graph_or_image, ChipImage) else graph_or_image
    return _export(g, path, **kw)


def compile(model, spec: ChipSpec = PICORE64, *, input_shape=None, calib=None,
            dt: float | None = None, nir_convention: str | None = None, conversion=None,
            **options) -> Program:
    """Import ``model`` and compile it for ``spec``.

    Args:
        model: a path to a .onnx (SNN or CNN) or .nir file, a native ``nn.Module``, or a Graph.
        input_shape: one sample's shape (C, H, W) for modules and symbolic ONNX inputs.
        calib: calibration images [N, C, H, W] in [0, 1] (ANN conversion, per-layer report).
        dt, nir_convention: NIR import options (docs/frontends.md).
        conversion: ANN->SNN conversion options (dict) for ONNX CNNs.
        options: compiler options (bits, per_channel, clip, chips, timesteps, encoding, seed,
            strict, leak, progress, ...; see :func:`compiler.compile_model`). A model exported
            with a training record (QAT: ``quantizer.export_onnx``) supplies bits,
            per_channel, clip, encoding and timesteps; a contradicting option raises.
    Returns:
        A :class:`compiler.Program`: ``.write(path)``, ``.summary()``, ``.sections()``.
    """
    source: dict = {}
    graph = model
    if not isinstance(model, Graph):
        kw = dict(conversion or {})
        if dt is not None:
            kw["dt"] = dt
        if nir_convention is not None:
            kw["nir_convention"] = nir_convention
        if calib is not None:
            kw["calib"] = calib
        if isinstance(model, (str, Path)):
            from compiler.backend.emit import file_sha256
            source = {"path": Path(model).name, "sha256": file_sha256(model)}
            if Path(model).suffix.lower() == ".onnx" and "timesteps" in options:
                kw.setdefault("timesteps", options["timesteps"])
        graph = load_model(model, input_shape=input_shape, **kw)
    if graph.attrs.get("training"):      # a QAT/training export: its settings are the defaults
        from compiler import training_record
        options = training_record.resolve(graph.attrs["training"], options, set(options))
    return compile_model(graph, spec, calib=calib, source=source or None, **options)


def load(path) -> ChipImage:
    """Read and validate a chip.bin (checksums, format version, every table) -> ChipImage."""
    return _load_image(path)


def _image(image) -> ChipImage:
    if isinstance(image, ChipImage):
        return image
    if isinstance(image, Program):
        from runtime.image import from_sections
        return from_sections(image.sections(), image.spec.digest())
    return _load_image(image)


def run(image, x, **kw) -> RunResult:
    """Run ``x`` (images in [0, 1], [N, ...]) on a chip image (ChipImage, Program or path).

    Keyword arguments are :func:`runtime.engines.tick.run`'s (timesteps, encoding, seed, batch,
    workers, record, instance...)."""
    from runtime.engines import run as _run
    return _run(_image(image), np.asarray(x), **kw)


def _payloads(img: ChipImage, x, encoding, timesteps, seed):
    from compiler.encoding import encode
    T = int(timesteps or img.meta["timesteps"])
    name = encoding or img.meta["encoding"]
    x = np.asarray(x, np.float64)
    return encode(name, x.reshape(len(x), -1), T, seed=seed), T, name


def attack(image, x, y, attack: str = "fgsm", eps=(8 / 255,), *, encoding: str | None = None,
           timesteps: int | None = None, surrogate: str = "atan", steps: int = 10,
           alpha: float | None = None, eot: int = 1, seed: int = 0, source=None,
           workers: int | None = None, cluster=None, progress: bool | None = None) -> dict:
    """Adversarial examples against the deployed network, evaluated on the runtime.

    ``attack`` is 'fgsm', 'pgd' (white-box through the bit-exact twin, or transferred from the
    float ``source`` model when given) or 'sda' (sparse attack on binarised events). Returns the
    same dict as ``snnrun --attack ... --json`` (``results``: eps, clean_accuracy, adv_accuracy,
    accuracy_loss, asr, spike_activity_change, nsr). ``cluster``: ``"local"``, a Ray address
    or a :class:`runtime.lab.cluster.Cluster`: the (sample chunk, eps) units run on Ray with
    results identical to the local run (docs/scale-out.md). The result carries ``warnings``
    (chance-level clean accuracy, an encoding the model was not trained for, 1-bit weights
    without negatives). ``progress``: a progress bar on stderr (None: on unless quiet)."""
    from compiler.progress import enabled
    from runtime.lab.attacks import SweepConfig, attack_sweep, float_graph_of, sda_run
    from runtime.lab.honesty import result_warnings
    img = _image(image)
    T = int(timesteps or img.meta["timesteps"])
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if attack == "sda":
        from frontends.datasets import Dataset, binarize_events
        n_out = int(img.meta["output"]["neurons"])
        shape = tuple(img.meta["input"]["shape"])
        ds = Dataset(x.reshape((len(x),) + shape).astype(np.float32), y, "data", n_out)
        evs = binarize_events(ds, T, seed=seed)
        return sda_run(img, evs.x, evs.y, surrogate=surrogate, iters=10 * steps, seed=seed,
                       workers=workers, name=evs.name)
    if attack not in ("fgsm", "pgd"):
        raise SnnError(f"unknown attack '{attack}'", "use fgsm, pgd or sda")
    src = None
    if source is not None:
        src = float_graph_of(source, img.spec, tuple(img.meta["input"]["shape"]))
    cfg = SweepConfig(attack, tuple(float(e) for e in eps), encoding or img.meta["encoding"], T,
                      surrogate, alpha, int(steps), int(eot), int(seed), workers=workers,
                      progress=enabled(progress))
    from runtime.lab.cluster import connect
    cl = connect(cluster)
    out = attack_sweep(img, x, y, cfg, src, cluster=cl)
    if cl is not None:
        out["ray"] = cl.info()
    clean = out["results"][0]["clean_accuracy"] if out["results"] else None
    out["warnings"] = result_warnings(img, clean_accuracy=clean, n=len(y),
                                      encoding=cfg.encoding)
    return out


def sweep(image, x, y, kind: str, levels, samples: int = 100, *, encoding: str | None = None,
          timesteps: int | None = None, seed: int = 0, cluster=None,
          progress: bool | None = None, **kw) -> list[dict]:
    """Accuracy over ``samples`` chip instances per noise level (Monte Carlo).

    ``kind``: 'mismatch' (zeta), 'pcm' (seconds after programming), 'bitflip' (rate),
    'stuck-at' (rate) or 'dead-cores'; keyword options as :func:`runtime.lab.sweep.sweep`
    (domain, on, gdc, registers, workers...). Rows: kind, level, mean, std, min, max, median, n,
    accuracies. ``cluster``: ``"local"``, a Ray address or a Cluster: the (instance, level)
    units run on Ray, with the same numbers as the local run. ``progress``: a progress bar on
    stderr (None: on unless quiet)."""
    from compiler.progress import enabled
    from runtime.lab.sweep import sweep as _sweep
    img = _image(image)
    payloads, _, _ = _payloads(img, x, encoding, timesteps, seed)
    from runtime.lab.cluster import connect
    return _sweep(img, payloads, np.asarray(y), kind, levels, samples, seed,
                  cluster=connect(cluster), progress=enabled(progress), **kw)


def certify(image, x, y, zetas, *, encoding: str | None = None, timesteps: int | None = None,
            seed: int = 0, **kw) -> list[dict]:
    """IBP certificates: the fraction of samples whose prediction provably holds for every
    weight perturbation with ``|dw| <= zeta |w|`` (:func:`runtime.lab.certify.certify`)."""
    from runtime.lab.certify import certify as _certify
    img = _image(image)
    payloads, _, _ = _payloads(img, x, encoding, timesteps, seed)
    return _certify(img, payloads, np.asarray(y), zetas, **kw)


def train_chip(image, x, y, x_test=None, y_test=None, *, output=None, **kw):
    """Fine-tune a deployed chip image *on chip* -> ``(tuned ChipImage, report)``.

    Surrogate-gradient BPTT through the bit-exact twin (optionally a mismatch instance:
    ``mismatch=0.5, instance_seed=S``), FP16 shadow weights re-quantised to the crossbar widths,
    federated averaging with ``workers=K, federated=True``; the report holds accuracy before and
    after (measured on the runtime with ``x_test``/``y_test``, default the training data) and
    the per-engine cost (:func:`runtime.lab.onchip.train`, options of
    :class:`runtime.lab.onchip.OnChipConfig`). ``output``: also write the tuned chip.bin.
    Not to be confused with :func:`train`, the PyTorch training library."""
    from runtime.lab.onchip import image_sections
    from runtime.lab.onchip import train as _train
    tuned, rep = _train(_image(image), np.asarray(x), np.asarray(y), x_test, y_test, **kw)
    if output is not None:
        from compiler.backend import binfmt
        binfmt.write(output, image_sections(tuned), tuned.spec_digest)
    return tuned, rep
