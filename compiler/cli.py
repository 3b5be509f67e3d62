"""snnc: compile | inspect | verify | convert-report | export-nir (docs/cli.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from compiler.cliutil import (
    POSITIVE,
    SEED,
    TIMESTEPS,
    FiniteFloat,
    ShapeType,
    check_output,
    debug_option,
    echo_json,
    nir_options,
    quiet_option,
    run_cli,
    table,
)
from compiler.errors import SnnError
from snnc._version import __version__


def _spec(chip: str):
    from compiler.chip import load_spec
    return load_spec(chip)


def _bits(v: str):
    if v == "auto":
        return "auto"
    try:
        return int(v)
    except ValueError as e:
        raise click.BadParameter(f"'{v}' is not 1, 2, 4, 8 or auto") from e


def load_calib(spec: str | None, limit: int) -> np.ndarray | None:
    """--calib digits | FILE.npz | mnist:DIR | cifar10:DIR -> calibration images [N, C, H, W]
    in [0, 1] (the train split)."""
    if not spec:
        return None
    from frontends.datasets import calibration_arrays
    return calibration_arrays(spec, limit)


def load_calib_labeled(spec: str | None, limit: int):
    """--calib for phase II: (images, labels or None when the data has none)."""
    if spec is None:
        return None, None
    from frontends.datasets import load_dataset
    s = str(spec)
    if s.endswith(".npz") and not s.startswith("npz:"):
        s = f"npz:{s}"
    ds = load_dataset(s, split="train", limit=limit, require_labels=False)
    y = None if ds.y is None or np.any(np.asarray(ds.y) < 0) else np.asarray(ds.y)
    return ds.x, y


def _phase2_options(f):
    """Dual-phase conversion options (frontends/training/dual_phase.py)."""
    opts = [
        click.option("--phase2-epochs", default=2, show_default=True, type=click.IntRange(0),
                     help="dual-phase: fine-tuning epochs per layer (0: calibration only)."),
        click.option("--phase2-seed", default=0, show_default=True,
                     help="dual-phase: fine-tuning seed."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _method_graph(method, model, shape, maxpool, calib, calib_limit, timesteps, threshold,
                  threshold_per_channel, spec, bits, per_channel, clip, epochs, seed):
    """compile --convert METHOD: the converted graph (dual-phase: tuned for these options)."""
    from frontends.onnx import import_ann
    from frontends.training.dual_phase import convert_method
    if calib is None:
        raise click.UsageError(f"--convert {method} needs --calib digits|FILE.npz")
    ann = import_ann(model, input_shape=shape, maxpool=maxpool)
    x, y = load_calib_labeled(calib, calib_limit)
    graph, info = convert_method(ann, x, method, timesteps, y, threshold=threshold,
                                 per_channel_threshold=threshold_per_channel, spec=spec,
                                 bits=bits, per_channel=per_channel, clip=clip, epochs=epochs,
                                 seed=seed, progress=_note)
    if method != "dual-phase":
        return graph
    best = next(c for c in info["checkpoints"] if c["stage"] == info["best"])
    click.echo(f"dual-phase T={timesteps}: kept '{info['best']}' (calibration accuracy "
               f"{100 * best['calib_accuracy']:.2f}% vs {info['label_source']})", err=True)
    return graph


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="snnc", message="%(prog)s %(version)s")
@debug_option
@quiet_option
@click.option("-v", "--verbose", count=True, help="Log pass timings (-v) and details (-vv).")
def cli(debug: bool, verbose: int) -> None:
    """snnc: compile spiking neural networks for a PIcore-like 64-core neuromorphic chip."""
    import logging
    if verbose:
        logging.getLogger().setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


def _conversion_options(f):
    """ANN -> SNN conversion options (an ONNX CNN; frontends/onnx/ann.py)."""
    opts = [
        click.option("--maxpool", default="error", show_default=True,
                     type=click.Choice(["error", "avg"]),
                     help="ONNX CNN MaxPool: refuse, or replace by AvgPool (lossy)."),
        click.option("--threshold", default="p99.9", show_default=True,
                     help="ONNX CNN: IF threshold rule, pNN.N percentile of the calibration "
                          "activations or max (Clip bounds are used as they are)."),
        click.option("--threshold-per-channel", is_flag=True,
                     help="ONNX CNN: one threshold per channel instead of per layer."),
        click.option("--v-init", default="half", show_default=True,
                     type=click.Choice(["half", "zero"]),
                     help="ONNX CNN: initial membrane threshold/2 (QCFS) or 0."),
        click.option("--calibrate-vinit", is_flag=True,
                     help="ONNX CNN: per-neuron v_init calibration (Phase II) at --timesteps."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f




def _frontend(model, calib_x, shape, timesteps, conversion: dict, nir_opts: dict,
              save_snn=None):
    """Load MODEL (.onnx SNN or CNN, .nir) -> (Graph, source dict for the image's META)."""
    from compiler.backend.emit import file_sha256
    from frontends import is_ann_file, load_model

    path = Path(model)
    source = {"path": path.name, "sha256": file_sha256(path)}
    if path.suffix.lower() == ".nir":
        return load_model(path, shape, **nir_opts), source
    if not is_ann_file(path):
        if save_snn:
            raise click.UsageError("--save-snn applies to ONNX CNNs (converted models) only")
        return load_model(path, shape), source
    graph = load_model(path, shape, calib=calib_x, timesteps=timesteps, **conversion)
    if save_snn:
        from frontends.onnx import export_onnx
        export_onnx(graph, save_snn)
        source = {"path": Path(save_snn).name, "sha256": file_sha256(save_snn),
                  "converted_from": source}
    return graph, source


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output chip.bin path.")
@click.option("--chip", default="picore64", show_default=True, help="picore64 or a spec FILE.")
@click.option("--bits", default="8", show_default=True, help="Weight width 1|2|4|8 or auto.")
@click.option("--per-channel", is_flag=True, help="One weight scale per output channel.")
@click.option("--clip", default="max", show_default=True, help="Weight range: max or pNN.N.")
@click.option("--auto-sqnr", default=30.0, show_default=True, type=FiniteFloat(),
              help="SQNR bound (dB) for --bits auto.")
@click.option("--chips", default="auto", show_default=True,
              help="Chips on the board: N, or auto (the smallest board that holds the network).")
@click.option("--calib", default=None,
              help="Calibration data (train split): digits, FILE.npz, mnist:DIR or cifar10:DIR.")
@click.option("--calib-limit", default=512, show_default=True, type=POSITIVE,
              help="Calibration samples.")
@click.option("--timesteps", default=8, show_default=True, type=TIMESTEPS,
              help="Default T written into the image.")
@click.option("--encoding", default="direct", show_default=True,
              type=click.Choice(["direct", "rate", "phase", "latency"]))
@click.option("--leak", default="auto", show_default=True,
              type=click.Choice(["auto", "shift", "mult"]))
@click.option("--seed", default=0, show_default=True, type=SEED, help="Placement seed.")
@click.option("--strict", is_flag=True, help="Fail when a layer goes silent after quantization.")
@click.option("--input-shape", default=None, type=ShapeType(),
              help="C,H,W for models without shape information.")
@click.option("--estimate", is_flag=True,
              help="Only report the cores/chips needed per layer (a fast estimate before the "
                   "tiling, then the exact count); write nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@click.option("--dump-after", multiple=True, help="Print the IR after this pass (repeatable).")
@click.option("--dump-dir", type=click.Path(file_okay=False), default=None,
              help="Write dumps to DIR/after-PASS.txt instead of stdout.")
@click.option("--stop-after", default=None, help="Stop the pipeline after this pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the compile report as JSON.")
@_conversion_options
@nir_options
@click.option("--save-snn", type=click.Path(dir_okay=False), default=None,
              help="ONNX CNN: also write the converted SNN (ai.snnc ONNX) for snnc verify.")
@click.option("--convert", "convert_method", default=None,
              type=click.Choice(["relu", "qcfs", "dual-phase"]),
              help="ONNX CNN conversion method: relu (percentile thresholds, v_init 0), qcfs "
                   "(Clip bounds, v_init theta/2), dual-phase (qcfs + phase II at --timesteps "
                   "for these --bits/--per-channel/--clip). Default: the --threshold/--v-init "
                   "options.")
@_phase2_options
@debug_option
def compile(model, output, chip, bits, per_channel, clip, auto_sqnr, chips, calib, calib_limit,
            timesteps, encoding, leak, seed, strict, input_shape, estimate, dump_after, dump_dir,
            stop_after, as_json, maxpool, threshold, threshold_per_channel, v_init,
            calibrate_vinit, dt, nir_convention, cubalif, save_snn, convert_method,
            phase2_epochs, phase2_seed, debug, quiet):
    """Compile MODEL (.onnx SNN or CNN, .nir) into a chip image.

    An ONNX CNN (ReLU/Clip activations) is converted to IF neurons first; that needs --calib.
    A .nir file needs --nir-convention (and --dt) unless snnc wrote it.
    """
    from compiler import compile_model
    from compiler.passes import PASS_NAMES

    if not output and not estimate and not stop_after:
        raise click.UsageError("missing -o/--output (or use --estimate / --stop-after)")
    _model_exists(model)
    check_output(output, model)
    check_output(save_snn, model, output, option="--save-snn")
    spec = _spec(chip)
    shape = input_shape
    calib_x = load_calib(calib, calib_limit)
    if convert_method is not None:
        from compiler.backend.emit import file_sha256
        from frontends import is_ann_file
        if not is_ann_file(Path(model)):
            raise click.UsageError("--convert applies to ONNX CNNs (ANN -> SNN conversion)")
        if calibrate_vinit:
            raise click.UsageError("--calibrate-vinit is the float v_init calibration of the "
                                   "default conversion; --convert dual-phase calibrates on the "
                                   "chip's integers itself")
        model_in = _method_graph(convert_method, model, shape, maxpool, calib, calib_limit,
                                 timesteps, threshold, threshold_per_channel, spec, _bits(bits),
                                 per_channel, clip, phase2_epochs, phase2_seed)
        source = {"path": Path(model).name, "sha256": file_sha256(model)}
        if save_snn:
            from frontends.onnx import export_onnx
            export_onnx(model_in, save_snn)
            source = {"path": Path(save_snn).name, "sha256": file_sha256(save_snn),
                      "converted_from": source}
    else:
        model_in, source = _frontend(model, calib_x, shape, timesteps,
                                     dict(maxpool=maxpool, threshold=threshold,
                                          per_channel=threshold_per_channel, v_init=v_init,
                                          calibrate_vinit=calibrate_vinit),
                                     dict(dt=dt, nir_convention=nir_convention,
                                          cubalif=cubalif),
                                     save_snn)

    def dump(name: str, text: str) -> None:
        if dump_dir:
            Path(dump_dir).mkdir(parents=True, exist_ok=True)
            (Path(dump_dir) / f"after-{name}.txt").write_text(text)
        else:
            click.echo(f"// ===== after {name} =====\n{text}")

    bits, per_channel, clip, encoding, timesteps = _training_defaults(
        model_in, model, dict(bits=bits, per_channel=per_channel, clip=clip, encoding=encoding,
                              timesteps=timesteps), as_json)
    chips = _chips(chips)
    nir_info = _nir_declared(model_in)
    if source is not None and nir_info:
        source = dict(source, nir=nir_info)
    fast: dict = {}

    def on_pass(name, i, n, seconds, graph):
        progress(name, i, n, seconds)
        if name == "calibrate" and (estimate or progress.active()):
            from compiler.passes.partition import estimate as estimate_cores
            fast.update(estimate_cores(graph, spec))
            if estimate and not as_json:
                _print_estimate(fast, spec)
            elif not estimate:
                click.echo(f"snnc: estimate before tiling: about {fast['cores']} cores on "
                           f"{fast['chips']} chip(s)", err=True)

    from compiler.progress import quiet as _quiet_all
    progress = _Progress(quiet or _quiet_all() or as_json and not estimate)
    if estimate:
        stop_after = "partition"
    try:
        prog = compile_model(
            model_in, spec, bits=_bits(bits), per_channel=per_channel, clip=clip, chips=chips,
            calib=calib_x, timesteps=timesteps, encoding=encoding, seed=seed,
            strict=strict, leak=leak, auto_sqnr=auto_sqnr, source=source,
            dump_after=set(dump_after), stop_after=stop_after, dump=dump, progress=on_pass,
            keep_float=False)
    finally:
        progress.close()
    summary = prog.summary()
    report = _report(prog, summary)
    from runtime.lab.honesty import quant_warnings
    report["warnings"] = quant_warnings(report["layers"])
    report["training"] = dict(prog.graph.attrs.get("training") or {})
    if nir_info:
        report["nir"] = nir_info
    if estimate:
        if as_json:
            report["estimate"] = fast
            echo_json(report)
        else:
            click.echo(f"partitioned: {summary['cores_used']} cores on "
                       f"{summary['chips_needed']} chip(s) of {spec.cores_per_chip} "
                       f"({spec.name}); compile with --chips {summary['chips_needed']} "
                       "(or --chips auto)")
            click.echo(_partition_table(summary["partition"]))
        return
    if not prog.complete:
        click.echo(f"stopped after '{stop_after}' (stage {prog.graph.stage}); no binary written. "
                   f"Passes: {', '.join(PASS_NAMES)}", err=True)
        return
    if output:
        prog.write(output)
    if as_json:
        from runtime.reports.provenance import provenance
        report["output"] = output
        report["provenance"] = provenance(image_path=output, model_path=model,
                                          seeds={"placement": seed}, engine="compiler")
        echo_json(report)
        return
    for w in report["warnings"]:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {output}: {summary['cores_used']} cores on {prog.graph.attrs['chips']} "
               f"chip(s), latency L = {summary['latency_ticks']} ticks")
    _echo_nir(nir_info)
    click.echo(_quant_table(report))


def _note(msg: str) -> None:
    """A progress line on stderr (silenced by -q/--quiet, compiler/progress.py)."""
    from compiler.progress import note
    note(msg)


def _model_exists(model) -> None:
    if not Path(model).is_file():
        near = sorted(p.name for p in Path(model).parent.glob("*")
                      if p.suffix.lower() in (".onnx", ".nir"))[:5] \
            if Path(model).parent.is_dir() else []
        raise SnnError(f"model file '{model}' not found",
                       "check the path" + (f"; model files next to it: {', '.join(near)}"
                                           if near else "")
                       + " (snnc reads .onnx and .nir; export PyTorch models with "
                         "snnc.export_onnx)")


def _training_defaults(model_in, model, given: dict, quiet: bool):
    """The model's training record (QAT export) as defaults; explicit conflicting options are
    refused (compiler/training_record.py)."""
    from click.core import ParameterSource

    from compiler import training_record
    rec = (getattr(model_in, "attrs", None) or {}).get("training")
    out = dict(given)
    if rec:
        ctx = click.get_current_context()
        explicit = {k for k in given if ctx.get_parameter_source(k) in
                    (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
        g = dict(given, bits=_bits(given["bits"]))
        out = training_record.resolve(rec, g, explicit, where=f"{Path(model).name}")
        used = {k: rec[k] for k in training_record.KEYS if k in rec and k not in explicit}
        if used and not quiet:
            click.echo("using the model's training record: "
                       + ", ".join(f"{training_record.OPTION[k]} {v}" for k, v in used.items()),
                       err=True)
    return (str(out["bits"]), out["per_channel"], out["clip"], out["encoding"],
            int(out["timesteps"]))


def _nir_declared(model_in) -> dict | None:
    """What a NIR import declared (convention, dt, semantics the chip does not keep)."""
    attrs = getattr(model_in, "attrs", None) or {}
    info = attrs.get("nir")
    if not info:
        return None
    return {"convention": info.get("convention"), "producer": info.get("producer"),
            "dt": info.get("dt"), "dt_source": info.get("dt_source"),
            "declared": list(info.get("lossy", []))}


def _echo_nir(info: dict | None) -> None:
    if not info:
        return
    click.echo(f"NIR import: convention {info['convention']} ({info['producer']}), "
               f"dt = {info['dt']:g} from {info['dt_source']}")
    for msg in info["declared"]:
        click.echo(f"  declared: {msg}")


def _chips(v: str):
    if str(v).lower() == "auto":
        return "auto"
    try:
        n = int(v)
    except ValueError as e:
        raise click.BadParameter(f"'{v}' is not a number of chips or 'auto'",
                                 param_hint="--chips") from e
    if n < 1:
        raise click.BadParameter(f"{n} chips: need at least 1", param_hint="--chips")
    return n


class _Progress:
    """Per-pass progress on stderr: a tqdm bar on a terminal, otherwise one line per pass once
    the compile has run for more than 2 s (short compiles stay silent); ``quiet`` silences."""

    def __init__(self, quiet: bool):
        import time
        self.quiet, self.t0, self.bar = quiet, time.perf_counter(), None
        self.tty = sys.stderr.isatty()

    def __call__(self, name: str, i: int, n: int, seconds: float) -> None:
        import time
        if self.quiet:
            return
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm
                self.bar = tqdm(total=n, desc="snnc", unit="pass", file=sys.stderr,
                                leave=False)
            self.bar.set_postfix_str(f"{name} {seconds:.1f} s")
            self.bar.update(1)
        elif time.perf_counter() - self.t0 > 2.0:
            click.echo(f"snnc: pass {i}/{n} {name} done in {seconds:.1f} s "
                       f"({time.perf_counter() - self.t0:.1f} s total)", err=True)

    def active(self) -> bool:
        import time
        return not self.quiet and (self.tty or time.perf_counter() - self.t0 > 2.0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_estimate(est: dict, spec) -> None:
    click.echo(f"estimate (before tiling): about {est['cores']} cores on {est['chips']} chip(s) "
               f"of {spec.cores_per_chip} ({spec.name})")
    click.echo(table([[k, v["neurons"], v["bits"], v["fan_in"], v["lcn"], v["neurons_per_core"],
                       v["cores"], v["limit"]] for k, v in est["layers"].items()],
                     ["layer", "neurons", "w", "fan-in", "LCN", "neurons/core", "cores",
                      "limited by"]))
    sys.stdout.flush()


def _partition_table(part: dict) -> str:
    rows = [[k, v["neurons"], v["bits"], v["fan_in"], v["lcn"], v["neurons_per_core"],
             v["cores_lower_bound"], v["cores"], v["limit"]] for k, v in part.items()]
    lb = sum(v["cores_lower_bound"] for v in part.values())
    used = sum(v["cores"] for v in part.values())
    rows.append(["total", "", "", "", "", "", lb, used,
                 f"{used / max(lb, 1):.2f}x the ceil(neurons/neurons-per-core) sum"])
    return table(rows, ["layer", "neurons", "w", "fan-in", "LCN", "neurons/core",
                        "ceil(n/npc)", "cores", "limited by"])


def _report(prog, summary) -> dict:
    g = prog.graph
    calib = (g.attrs.get("calibration") or {}).get("layers", {})
    quant = g.attrs.get("quant") or (prog.history.get("quantize").attrs.get("quant")
                                     if "quantize" in prog.history else {}) or {}
    layers = {}
    for name, q in quant.items():
        layers[name] = dict(q, **{k: v for k, v in calib.get(name, {}).items() if k not in q})
    return dict(summary, chip=prog.spec.name, layers=layers,
                silent=(g.attrs.get("calibration") or {}).get("silent", []))


def _quant_table(report: dict) -> str:
    rows = []
    for name, d in report["layers"].items():
        rf, ri = d.get("rate_float"), d.get("rate_int")
        rows.append([name, d.get("bits"), f"{d.get('sqnr_db', float('nan')):.1f}",
                     f"{100 * d.get('clipped', 0):.2f}%",
                     "-" if rf is None else f"{rf:.4f}", "-" if ri is None else f"{ri:.4f}",
                     "-" if rf is None else f"{d.get('rate_ratio', float('nan')):.3f}"])
    return table(rows, ["layer", "bits", "SQNR dB", "clipped", "rate float", "rate int", "ratio"])


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def inspect(image, as_json, debug):
    """Show what is on which core: resources, routes, latency."""
    from runtime.image import load
    info = inspect_image(load(image))
    if as_json:
        echo_json(info)
        return
    click.echo(f"{image}: format {info['format_version']}, chip {info['chip']}, "
               f"{info['cores_used']} cores on {info['chips']} chip(s), latency L = "
               f"{info['latency_ticks']} ticks, T = {info['timesteps']} ({info['encoding']})")
    click.echo(table([[L["name"], "x".join(map(str, L["shape"])), L["neurons"], L["bits"],
                       L["depth"], L["lcn"], L["neurons_per_core"], L["cores_lower_bound"],
                       len(L["cores"])] for L in info["layers"]],
                     ["layer", "shape", "neurons", "bits", "depth", "LCN", "neurons/core",
                      "ceil(n/npc)", "cores"]))
    click.echo(f"cores used {info['cores_used']} vs sum of ceil(neurons / neurons-per-core) "
               f"{info['cores_lower_bound']} ({info['cores_ratio']:.2f}x)")
    click.echo("")
    rows = [[i, c["layer"], f"{c['chip']}:({c['x']},{c['y']})", c["neurons"], c["axons"],
             c["weight_bits"], c["lcn"], c["synapse_bits"], f"{100 * c['synapse_util']:.1f}%",
             c["route_entries"]] for i, c in enumerate(info["per_core"])]
    click.echo(table(rows, ["core", "layer", "chip:(x,y)", "neurons", "axons", "w", "LCN",
                            "synapse bits", "util", "routes"]))
    click.echo("\nL: ticks a spike needs through the layer pipeline (T steps run T + L ticks); "
               "depth: pipeline stage;\nw: weight bits; LCN: fan-in extension (a core reads "
               "1024*2^LCN axons, 1024/2^LCN columns);\nutil: synapse bits used / crossbar "
               "bits; routes: routing-table entries of the core's neurons (docs/chip.md)")


def inspect_image(img) -> dict:
    a, spec = img.a, img.spec
    nb_ = a["core_neuron_base"].astype(np.int64)
    ab = a["core_axon_base"].astype(np.int64)
    rb = a["neu_route_base"].astype(np.int64)
    per_core = []
    for c in range(img.n_cores):
        n, ax = int(nb_[c + 1] - nb_[c]), int(ab[c + 1] - ab[c])
        w, lcn = int(a["core_w"][c]), int(a["core_lcn"][c])
        lo, hi = int(a["core_xbar_base"][c]), int(a["core_xbar_base"][c + 1])
        set_bits = int(np.unpackbits(a["xbar"][lo:hi]).sum())
        per_core.append({
            "layer": img.layers[int(a["core_layer"][c])]["name"],
            "chip": int(a["core_chip"][c]), "x": int(a["core_x"][c]), "y": int(a["core_y"][c]),
            "neurons": n, "axons": ax, "weight_bits": w, "lcn": lcn,
            "synapse_bits": n * ax * w, "synapse_bits_set": set_bits,
            "synapse_util": n * ax * w / (spec.xbar_rows * spec.xbar_cols),
            "neuron_util": n / spec.neurons_per_core(w, lcn),
            "axon_util": ax / spec.axons_per_core(lcn),
            "route_entries": int(rb[nb_[c + 1]] - rb[nb_[c]]),
            "tick_start": int(a["core_tick_start"][c]),
        })
    layers = []
    for L in img.layers:
        d = {k: L[k] for k in ("name", "shape", "neurons", "bits", "depth", "cores")}
        lcns = sorted({per_core[c]["lcn"] for c in L["cores"]}) or [0]
        npc = min(spec.neurons_per_core(int(L["bits"]), k) for k in lcns)
        d.update(lcn=lcns[-1] if len(lcns) == 1 else lcns, neurons_per_core=npc,
                 cores_lower_bound=-(-int(L["neurons"]) // npc))
        layers.append(d)
    lower = sum(d["cores_lower_bound"] for d in layers)
    return {
        "format_version": ".".join(map(str, img.version)), "chip": spec.name,
        "spec_digest": img.spec_digest, "cores_used": img.n_cores, "chips": img.chips,
        "latency_ticks": img.latency, "timesteps": img.meta["timesteps"],
        "encoding": img.meta["encoding"], "neurons": img.n_neurons, "axons": img.n_axons,
        "route_entries": int(a["rt_axon"].size), "input": img.meta["input"],
        "output": {k: v for k, v in img.meta["output"].items() if k in ("layer", "neurons",
                                                                         "decode")},
        "layers": layers, "cores_lower_bound": lower,
        "cores_ratio": img.n_cores / max(lower, 1),
        "per_core": per_core, "source": img.meta.get("source", {}),
        "compiler_version": img.meta.get("compiler_version"),
    }


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--data", default="digits", show_default=True,
              help="digits | npz:FILE | mnist:DIR | cifar10:DIR (test split).")
@click.option("--limit", default=None, type=POSITIVE, help="Use the first N test samples.")
@click.option("--timesteps", default=None, type=TIMESTEPS, help="Override the image's T.")
@click.option("--batch", default=128, show_default=True, type=POSITIVE)
@click.option("--json", "as_json", is_flag=True)
@nir_options
@quiet_option
@debug_option
def verify(model, image, data, limit, timesteps, batch, as_json, dt, nir_convention, cubalif,
           debug):
    """Trained vs deployed: float model, quantized reference and chip runtime on DATA."""
    _model_exists(model)
    res = verify_model(model, image, data, limit, timesteps, batch,
                       nir_opts=dict(dt=dt, nir_convention=nir_convention, cubalif=cubalif))
    from runtime.reports.provenance import provenance
    res["provenance"] = provenance(image_path=image, model_path=model,
                                   seeds={"encoding": "batch start index"},
                                   extra={"data": data})
    if as_json:
        echo_json(res)
        return
    click.echo(table([
        ["float model (trained)", f"{100 * res['float_accuracy']:.2f}%"],
        ["quantized reference", f"{100 * res['quantized_accuracy']:.2f}%"],
        ["chip runtime", f"{100 * res['runtime_accuracy']:.2f}%"],
        ["float vs quantized agreement", f"{100 * res['agreement']:.2f}%"],
        ["runtime bit-exact with reference", str(res["bit_exact"])],
    ], ["", f"{res['data']} (n={res['n']}, T={res['timesteps']})"]))
    if res["warnings"]:
        for w in res["warnings"]:
            click.echo(f"warning: {w}", err=True)
    if not res["bit_exact"]:
        click.echo(f"first divergence: {res['first_divergence']}", err=True)
        sys.exit(4)


def verify_model(model, image_path, data="digits", limit=None, timesteps=None,
                 batch=128, nir_opts: dict | None = None) -> dict:
    from compiler import encoding as enc
    from compiler import reference
    from compiler.backend.emit import file_sha256
    from compiler.passes import fold_bn, lower
    from frontends import load_model
    from frontends.datasets import check_labels, load_dataset
    from runtime.cli.common import check_bit_exact
    from runtime.engines.tick import run_payloads
    from runtime.image import load

    img = load(image_path)
    ds = load_dataset(data, split="test", limit=limit)
    warnings = []
    src = img.meta.get("source", {})
    if src.get("sha256") and Path(model).is_file() and file_sha256(model) != src["sha256"]:
        warnings.append(f"{image_path} was compiled from a different file than {model} "
                        f"(sha256 mismatch)")
    nir_opts = nir_opts or {}
    g = (load_model(model, **nir_opts) if Path(model).suffix.lower() == ".nir"
         else load_model(model))
    for msg in (g.attrs.get("nir") or {}).get("lossy", []):
        warnings.append(f"NIR import declared: {msg}")
    fg = lower(fold_bn(g), input_scale=img.meta["input"]["scale"])
    if int(np.prod(fg.node(fg.input_name).input_type)) != img.n_inputs:
        raise SnnError(f"{model} takes {fg.node(fg.input_name).input_type} inputs but "
                       f"{image_path} expects {img.meta['input']['shape']}",
                       "verify the image against the model it was compiled from")
    check_labels(ds.y, int(img.meta["output"]["neurons"]), data, image_path)
    T = int(img.meta["timesteps"] if timesteps is None else timesteps)
    name = img.meta["encoding"]
    ig = img.unmap()
    x = ds.x.reshape(len(ds.x), -1)
    pf, pq, pr, exact, first = [], [], [], True, None
    from compiler.progress import bar
    pb = bar(len(x), "verify", unit="sample")
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        p = enc.encode(name, xb, T, seed=i)
        xf = (np.broadcast_to(xb * img.meta["input"]["scale"], p.shape) if name == "direct"
              else p.astype(np.float64))
        pf.append(reference.run_float(fg, xf).predictions)
        rq = reference.run_int(ig, p, membrane_bits=img.spec.membrane_bits)
        pq.append(rq.predictions)
        rr = run_payloads(img, p, record=True, encoding=name)
        pr.append(rr.predictions)
        ok, div = check_bit_exact(img, p, rr, rq)
        if not ok and exact:
            exact, first = False, dict(div, sample=i + div["sample"])
        pb.update(len(xb))
    pb.close()
    pf, pq, pr = (np.concatenate(v) for v in (pf, pq, pr))
    y = ds.y
    from runtime.lab.honesty import result_warnings
    warnings += result_warnings(img, clean_accuracy=float(np.mean(pr == y)), n=int(len(y)),
                                encoding=name, what="chip runtime accuracy")
    return {
        "data": data, "n": int(len(y)), "timesteps": T, "encoding": name,
        "float_accuracy": float(np.mean(pf == y)), "quantized_accuracy": float(np.mean(pq == y)),
        "runtime_accuracy": float(np.mean(pr == y)), "agreement": float(np.mean(pf == pq)),
        "runtime_agreement": float(np.mean(pr == pq)), "bit_exact": bool(exact),
        "first_divergence": first, "warnings": warnings,
    }


def _run_chip(prog, payloads):
    """convert-report --runtime: the program's chip image on the cycle-level runtime."""
    from runtime.engines import run_payloads
    from runtime.image import from_sections
    return run_payloads(from_sections(prog.sections(), prog.spec.digest()), payloads).predictions


@cli.command("convert-report")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", required=True,
              help="Calibration data (train split): digits, FILE.npz, mnist:DIR or cifar10:DIR.")
@click.option("--calib-limit", default=512, show_default=True, type=POSITIVE,
              help="Calibration samples.")
@click.option("--data", default="digits", show_default=True,
              help="Test data: digits | npz:FILE | mnist:DIR | cifar10:DIR (test split).")
@click.option("--limit", default=None, type=POSITIVE, help="Use the first N test samples.")
@click.option("--timesteps", default="4,8,16,32,64", show_default=True,
              help="Comma-separated T values.")
@click.option("--chip", default="picore64", show_default=True, help="picore64 or a spec FILE.")
@click.option("--bits", default="8", show_default=True, help="Weight width 1|2|4|8 or auto.")
@click.option("--per-channel", is_flag=True, help="One weight scale per output channel.")
@click.option("--clip", default="max", show_default=True, help="Weight range: max or pNN.N.")
@click.option("--input-shape", default=None, type=ShapeType(),
              help="C,H,W for models without shape information.")
@click.option("--runtime", "use_runtime", is_flag=True,
              help="Also compile each T to a chip image and run the cycle-level runtime.")
@_conversion_options
@nir_options
@click.option("--methods", default=None,
              help="Compare conversion methods on the chip runtime: a comma-separated subset "
                   "of relu,qcfs,dual-phase (dual-phase runs phase II at every T).")
@_phase2_options
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="--methods: write accuracy vs T per method as a PNG.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="--methods: write convert-report.{md,json,png} into this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@quiet_option
@debug_option
def convert_report(model, calib, calib_limit, data, limit, timesteps, chip, bits, per_channel,
                   clip, input_shape, use_runtime, maxpool, threshold, threshold_per_channel,
                   v_init, calibrate_vinit, dt, nir_convention, cubalif, methods, phase2_epochs,
                   phase2_seed, plot_path, report_dir, as_json, debug):
    """ANN accuracy vs converted SNN accuracy (float and quantized reference) per T.

    With --methods: test accuracy per conversion method and T on the chip runtime (and the
    integer reference, which it must equal bit for bit).
    """
    from frontends.datasets import load_dataset
    from frontends.onnx import import_ann, report

    try:
        ts = [int(t) for t in timesteps.split(",") if t.strip()]
    except ValueError as e:
        raise click.BadParameter(f"'{timesteps}' is not a comma-separated list of integers",
                                 param_hint="--timesteps") from e
    if not ts or min(ts) < 1 or max(ts) > TIMESTEPS.max:
        raise click.BadParameter(f"need at least one T, each in 1..{TIMESTEPS.max}",
                                 param_hint="--timesteps")
    if not Path(model).is_file():
        raise SnnError(f"model file '{model}' not found")
    if Path(model).suffix.lower() == ".nir":
        from frontends import load_model
        g = load_model(model, dt=dt, nir_convention=nir_convention, cubalif=cubalif)
        raise SnnError(f"{model} is already an SNN (NIR, convention "
                       f"{g.attrs['nir']['convention']}): convert-report measures an ANN -> SNN "
                       "conversion", "compile it with snnc compile and compare with snnc verify")
    shape = input_shape
    ann = import_ann(model, input_shape=shape, maxpool=maxpool)
    ds = load_dataset(data, split="test", limit=limit)
    if methods is not None:
        _methods_report(model, ann, ds, data, calib, calib_limit, methods, ts, _spec(chip),
                        _bits(bits), per_channel, clip, threshold, threshold_per_channel,
                        phase2_epochs, phase2_seed, plot_path, report_dir, as_json)
        return
    if plot_path or report_dir:
        raise click.UsageError("--plot/--report need --methods")
    res = report(ann, load_calib(calib, calib_limit), ds.x, ds.y, ts, bits=_bits(bits),
                 weight_per_channel=per_channel, clip=clip, spec=_spec(chip),
                 run_chip=_run_chip if use_runtime else None, threshold=threshold,
                 per_channel=threshold_per_channel,
                 v_init=v_init, calibrate_vinit=calibrate_vinit)
    res["data"] = data
    from runtime.reports.provenance import provenance
    res["provenance"] = provenance(model_path=model, extra={"data": data})
    if as_json:
        echo_json(res)
        return
    ort = res["onnxruntime_check"]
    click.echo(f"{model}: ANN accuracy {100 * res['ann_accuracy']:.2f}% on {data} "
               f"(n={res['n']}); onnxruntime check: "
               + ("skipped" if not ort else
                  f"max |diff| {ort['max_abs_diff']:.2e} ({'ok' if ort['ok'] else 'FAILED'})"))
    for note in res["options"].get("notes", []):
        click.echo(f"note: {note}")
    head = ["T", "ANN", "SNN float", f"SNN {bits}-bit", "float/int agree"]
    rows = []
    for r in res["rows"]:
        row = [r["timesteps"], f"{100 * r['ann_accuracy']:.2f}%",
               f"{100 * r['snn_float_accuracy']:.2f}%", f"{100 * r['snn_int_accuracy']:.2f}%",
               f"{100 * r['float_int_agreement']:.2f}%"]
        if use_runtime:
            row.append(f"{100 * r['runtime_accuracy']:.2f}%")
        rows.append(row)
    click.echo(table(rows, head + (["chip runtime"] if use_runtime else [])))


def _methods_report(model, ann, ds, data, calib, calib_limit, methods, ts, spec, bits,
                    per_channel, clip, threshold, threshold_per_channel, epochs, seed,
                    plot_path, report_dir, as_json):
    from frontends.training.dual_phase import METHODS, methods_report, plot_methods
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in ms if m not in METHODS]
    if not ms or bad:
        raise click.BadParameter(f"unknown method(s) {bad or methods!r}; use a comma-separated "
                                 f"subset of {','.join(METHODS)}", param_hint="--methods")
    x, y = load_calib_labeled(calib, calib_limit)
    res = methods_report(ann, x, ds.x, ds.y, ms, ts, calib_labels=y, spec=spec, bits=bits,
                         per_channel=per_channel, clip=clip, threshold=threshold,
                         per_channel_threshold=threshold_per_channel, epochs=epochs, seed=seed,
                         run_chip=_run_chip,
                         progress=None if as_json else _note)
    res["data"] = data
    head = ["method"] + [f"T={T}" for T in ts]
    rows = [[m] + [f"{100 * r['runtime_accuracy']:.2f}%" for T in ts for r in res["rows"]
                   if r["method"] == m and r["timesteps"] == T] for m in ms]
    exact = all(r["runtime_bit_exact"] for r in res["rows"])
    text = (f"{model}: ANN accuracy {100 * res['ann_accuracy']:.2f}% on {data} (n={res['n']}); "
            f"SNN accuracy on the chip runtime, {bits}-bit weights\n"
            + table(rows, head)
            + f"\nruntime == integer reference on every (method, T): {'yes' if exact else 'NO'}")
    if plot_path:
        plot_methods(res, plot_path)
    if report_dir:
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot_methods(res, out / "convert-report.png")
        import json
        (out / "convert-report.json").write_text(json.dumps(res, indent=1, default=float))
        md = ["# Conversion methods on the chip", "",
              f"Model `{Path(model).name}`, test data `{data}` (n={res['n']}), {bits}-bit "
              f"weights, ANN accuracy {100 * res['ann_accuracy']:.2f}%. Accuracy on the "
              "cycle-level chip runtime (bit-exact with the integer reference: "
              f"{'yes' if exact else 'NO'}).", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        md += ["", "![accuracy vs T](convert-report.png)", ""]
        (out / "convert-report.md").write_text("\n".join(md))
    if as_json:
        echo_json(res)
        return
    click.echo(text)
    if not exact:
        raise SnnError("the chip runtime disagrees with the integer reference",
                       "please report it with the model (run with --debug)")


@cli.command("export-nir")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output .nir path.")
@click.option("--dt", default=None, type=FiniteFloat(positive=True),
              help="Time step written to the metadata (default: the model's, else 1.0).")
@click.option("--calib", default=None,
              help="ONNX CNN: calibration data (digits, FILE.npz, mnist:DIR, cifar10:DIR).")
@click.option("--calib-limit", default=512, show_default=True, type=POSITIVE,
              help="Calibration samples.")
@click.option("--timesteps", default=8, show_default=True, type=TIMESTEPS,
              help="ONNX CNN: T for --calibrate-vinit.")
@click.option("--input-shape", default=None, type=ShapeType(),
              help="C,H,W for models without shape information.")
@_conversion_options
@lambda f: nir_options(f, dt=False)
@debug_option
def export_nir_cmd(source, output, dt, calib, calib_limit, timesteps, input_shape, maxpool,
                   threshold, threshold_per_channel, v_init, calibrate_vinit, nir_convention,
                   cubalif, debug):
    """Write SOURCE (a chip.bin or a model file) as NIR, with dt and reset mode in metadata.

    A chip image exports its integer graph (runtime.image.load(...).unmap()); a model file
    its float operator graph. Anything NIR cannot express is printed as a warning.
    """
    from compiler.backend import binfmt
    from frontends.nir import export_nir

    path = Path(source)
    if not path.is_file():
        raise SnnError(f"file '{source}' not found")
    check_output(output, source)
    with open(path, "rb") as f:
        is_image = f.read(len(binfmt.MAGIC)) == binfmt.MAGIC
    if is_image:
        from runtime.image import load
        img = load(path)
        graph = img.unmap()
        graph.attrs["threshold_max"] = img.spec.threshold_max
    else:
        shape = input_shape
        graph, _ = _frontend(source, load_calib(calib, calib_limit), shape, timesteps,
                             dict(maxpool=maxpool, threshold=threshold,
                                  per_channel=threshold_per_channel, v_init=v_init,
                                  calibrate_vinit=calibrate_vinit),
                             dict(dt=None, nir_convention=nir_convention, cubalif=cubalif))
    warnings = export_nir(graph, output, dt=dt)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {output} ({'integer chip graph' if is_image else 'operator graph'}, "
               f"{len(warnings)} lossy-translation warning(s))")


def main() -> None:
    run_cli(cli, "snnc")


if __name__ == "__main__":
    main()
