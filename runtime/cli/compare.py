"""``snnrun compare``: options and dispatch (the comparison is runtime/lab/compare.py, its tables
and figures runtime/reports/compare.py; docs/attacks.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from compiler.cliutil import (
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    TIMESTEPS,
    FiniteFloat,
    debug_option,
    echo_json,
    jsonable,
    nir_load_options,
    nir_options,
    quiet_option,
)
from compiler.errors import SnnError
from frontends.training.models import train_digits_encoding
from runtime.cli.common import ENCODINGS, parse_list
from runtime.lab.cluster import connect
from runtime.lab.compare import compile_images, run_compare, synthetic_event_task
from runtime.reports.compare import (
    plot_encodings,
    plot_levels,
    plot_quantization,
    sda_table,
    tables,
)


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


def _image_labels(paths: list[str]) -> list[str]:
    """Labels of --images: the file stem, or the path where stems collide (a/chip.bin,
    b/chip.bin)."""
    stems = [Path(p).stem for p in paths]
    return [st if stems.count(st) == 1 else p for st, p in zip(stems, paths)]


def _provenance(model, source, image_paths: dict, seed, data) -> dict:
    from compiler.backend.emit import file_sha256
    from runtime.reports.provenance import provenance
    extra = {"data": data}
    if image_paths:
        extra["images"] = {lab: {"path": p, "sha256": file_sha256(p)}
                           for lab, p in image_paths.items()}
    return provenance(model_path=model or source, seeds={"seed": seed}, extra=extra)


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
@nir_options
@click.option("--data", default="digits", show_default=True)
@click.option("--limit", type=POSITIVE, default=100, show_default=True, help="Test samples.")
@click.option("--timesteps", "-T", type=TIMESTEPS, default=None,
              help="Steps (default: image META).")
@click.option("--encodings", default="direct,rate,phase,latency", show_default=True)
@click.option("--attacks", default="fgsm,pgd", show_default=True)
@click.option("--eps", default="4/255,8/255,16/255,32/255", show_default=True)
@click.option("--surrogate", default="atan", show_default=True,
              type=click.Choice(["atan", "sigmoid", "triangle", "pdsg"]))
@click.option("--surrogates", default="atan,sigmoid,triangle,pdsg", show_default=True,
              help="Surrogate comparison table ('' to skip).")
@click.option("--pgd-steps", default="5,10,20", show_default=True,
              help="PGD steps table vs FGSM ('' to skip).")
@click.option("--steps", default=10, show_default=True, type=POSITIVE,
              help="PGD steps in the main tables.")
@click.option("--alpha", type=FiniteFloat(positive=True), default=None,
              help="PGD step (default eps/4).")
@click.option("--eot", default=1, show_default=True, type=POSITIVE,
              help="EOT draws for rate coding.")
@click.option("--encoding-models", default=None, help="ENC=model.onnx,... per encoding.")
@click.option("--train-encodings", default="", help="Train the digits architecture for these "
              "encodings first (e.g. rate,phase,latency).")
@click.option("--epochs", default=30, show_default=True, type=POSITIVE,
              help="Epochs for --train-encodings.")
@click.option("--workdir", default="snnrun-compare", show_default=True, type=click.Path(),
              help="Where trained models are written.")
@click.option("--sda/--no-sda", default=True, show_default=True,
              help="SDA on the data binarised to events (first image).")
@click.option("--sda-limit", default=50, show_default=True, type=POSITIVE, help="Samples for SDA.")
@click.option("--sda-synthetic", default=0, show_default=True, type=NON_NEGATIVE,
              help="Also SDA on N synthetic DVS samples (trains a small SNN first).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--workers", type=POSITIVE, default=None)
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="local",
              metavar="[local|ADDRESS]",
              help="Run the work units (sweep instances, attack chunks) on Ray: 'local' starts a "
                   "local instance, ADDRESS joins a cluster (docs/scale-out.md).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--markdown", "md_path", default=None, type=click.Path(dir_okay=False),
              help="Write the tables as Markdown.")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Write compare.json, compare.md (and figures with --plots).")
@click.option("--plots", is_flag=True, help="Accuracy vs eps per encoding (needs --report).")
@click.option("--format", "fmt", type=click.Choice(["png", "pdf", "svg"]), default="png",
              show_default=True, help="Figure file format for --plots.")
@quiet_option
@debug_option
def compare_cmd(model, bits, per_channel, clip, images, source, dt, nir_convention, cubalif, data,
                limit, timesteps, encodings, attacks, eps, surrogate, surrogates, pgd_steps, steps,
                alpha, eot, encoding_models, train_encodings, epochs, workdir, sda, sda_limit,
                sda_synthetic, seed, workers, ray_address, as_json, md_path, report_dir, plots,
                fmt, debug):
    """Robustness tables of one model: encodings x attack strength, before/after quantization,
    algorithm vs hardware level, surrogates, PGD steps, SDA (docs/attacks.md)."""
    from frontends.datasets import binarize_events, calibration_arrays, load_dataset
    from runtime.image import load
    from runtime.lab.attacks import sda_run

    t_start = time.perf_counter()
    image_paths: dict = {}

    def nir_kw(path):
        return nir_load_options(path, dt, nir_convention, cubalif)

    from compiler.progress import note
    log = lambda s: note(f"compare: {s}")  # noqa: E731 - stderr, silenced by --quiet
    encs = _names(encodings, ENCODINGS, "--encodings")
    atts = _names(attacks, ("fgsm", "pgd"), "--attacks")
    sgs = _names(surrogates, ("atan", "sigmoid", "triangle", "pdsg"), "--surrogates")
    eps_l = parse_list(eps, "--eps")
    steps_l = [int(s) for s in parse_list(pgd_steps, "--pgd-steps")]
    if any(s < 1 for s in steps_l):
        raise click.BadParameter("PGD steps must be >= 1", param_hint="--pgd-steps")
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
        image_paths = dict(zip(_image_labels(paths), paths))
        imgs = {lab: load(p) for lab, p in image_paths.items()}
        T = int(next(iter(imgs.values())).meta["timesteps"] if timesteps is None
                else timesteps)
        src = source
        if src:
            from runtime.lab.attacks import float_graph_of
            im0 = next(iter(imgs.values()))
            fg = float_graph_of(src, im0.spec, tuple(im0.meta["input"]["shape"]), **nir_kw(src))
            src_float = {e: fg for e in encs}
    elif model:
        bits_l = [int(b) for b in parse_list(bits, "--bits")]
        T = 8 if timesteps is None else int(timesteps)
        copt = {"per_channel": per_channel, "clip": clip}
        imgs, fg = compile_images(model, bits_l, timesteps=T, encoding=encs[0], calib=calib,
                                  load_options=nir_kw(model), **copt)
        if source:
            from runtime.lab.attacks import float_graph_of
            im0 = next(iter(imgs.values()))
            fg = float_graph_of(source, im0.spec, tuple(im0.meta["input"]["shape"]),
                                **nir_kw(source))
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
                                                             encoding=enc, calib=calib,
                                                             load_options=nir_kw(path), **copt)
    else:
        raise click.UsageError("give --model MODEL.onnx (with --bits) or --images a.bin,b.bin")
    labels = list(imgs)
    cluster = connect(ray_address, progress=not as_json)
    res = run_compare(imgs, ds.x, ds.y, encodings=encs, attacks=atts, eps=eps_l, T=T,
                      float_graphs=src_float, encoding_images=enc_images, surrogate=surrogate,
                      surrogates=sgs, pgd_steps=steps_l, steps=steps, alpha=alpha, eot=eot,
                      seed=seed, workers=workers, log=log, cluster=cluster)
    from runtime.lab.honesty import compare_marks
    marks = compare_marks(res["records"], lambda e: enc_images.get(e, imgs), n=len(ds.x))
    tabs = tables(res, eps_l, labels, encs, atts, surrogate, marks=marks)
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
           "tables": tabs, "seconds": time.perf_counter() - t_start,
           "marks": [{"encoding": e, "model": m, "why": w} for (e, m), w in marks.items()],
           "warnings": [f"{e} / {m}: {w} -- its losses are reported as n/a"
                        for (e, m), w in marks.items()]}
    for r in res["records"]:
        mk = marks.get((r.get("encoding"), r.get("model")))
        if mk:
            r["mark"] = mk
    out["provenance"] = _provenance(model, source, image_paths, seed, data)
    if cluster is not None:
        out["ray"] = cluster.info()
    md = "\n\n".join(tabs.values()) + "\n"
    if md_path:
        from runtime.reports.provenance import markdown as prov_md
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(md + "\n" + prov_md(out["provenance"]))
    if report_dir:
        d = Path(report_dir)
        d.mkdir(parents=True, exist_ok=True)
        if plots:
            kw = dict(out=out, marks=marks, fmt=fmt,
                      chance=1.0 / int(next(iter(imgs.values())).meta["output"]["neurons"]))
            figs = []
            for a in atts:
                figs.append(plot_encodings(res, eps_l, a, labels, d / f"accuracy_vs_eps_{a}",
                                           **kw))
                if any(r.get("model") == "float" for r in res["records"]):
                    figs.append(plot_quantization(res, eps_l, a, labels,
                                                  d / f"quantization_{a}", **kw))
                    figs.append(plot_levels(res, eps_l, a, labels, d / f"levels_{a}", **kw))
            out["figures"] = figs
        from runtime.reports.provenance import markdown as prov_md
        (d / "compare.md").write_text(md + "\n" + prov_md(out["provenance"]))
        (d / "compare.json").write_text(json.dumps(jsonable(out), indent=2))
    if as_json:
        echo_json(out)
    else:
        click.echo(md)
        for w in out["warnings"]:
            click.echo(f"warning: {w}", err=True)


