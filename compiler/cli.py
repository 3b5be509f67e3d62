"""snnc: compile | inspect | verify (docs/cli.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from compiler.cliutil import debug_option, echo_json, run_cli, table
from compiler.errors import SnnError


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
    """--calib digits | FILE.npz -> calibration images [N, C, H, W] in [0, 1]."""
    if not spec:
        return None
    from frontends.datasets import calibration_arrays
    return calibration_arrays(spec, limit)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
@click.option("-v", "--verbose", count=True, help="Log pass timings (-v) and details (-vv).")
def cli(debug: bool, verbose: int) -> None:
    """snnc: compile spiking neural networks for a PIcore-like 64-core neuromorphic chip."""
    import logging
    if verbose:
        logging.getLogger().setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output chip.bin path.")
@click.option("--chip", default="picore64", show_default=True, help="picore64 or a spec FILE.")
@click.option("--bits", default="8", show_default=True, help="Weight width 1|2|4|8 or auto.")
@click.option("--per-channel", is_flag=True, help="One weight scale per output channel.")
@click.option("--clip", default="max", show_default=True, help="Weight range: max or pNN.N.")
@click.option("--auto-sqnr", default=30.0, show_default=True, help="SQNR bound (dB) for --bits auto.")
@click.option("--chips", default=1, show_default=True, help="Chips on the board.")
@click.option("--calib", default=None, help="Calibration data: digits or FILE.npz.")
@click.option("--calib-limit", default=512, show_default=True, help="Calibration samples.")
@click.option("--timesteps", default=8, show_default=True, help="Default T written into the image.")
@click.option("--encoding", default="direct", show_default=True,
              type=click.Choice(["direct", "rate", "phase", "latency"]))
@click.option("--leak", default="auto", show_default=True, type=click.Choice(["auto", "shift", "mult"]))
@click.option("--seed", default=0, show_default=True, help="Placement seed.")
@click.option("--strict", is_flag=True, help="Fail when a layer goes silent after quantization.")
@click.option("--input-shape", default=None, help="C,H,W for models without shape information.")
@click.option("--estimate", is_flag=True, help="Only report the cores/chips needed; write nothing.")
@click.option("--dump-after", multiple=True, help="Print the IR after this pass (repeatable).")
@click.option("--dump-dir", type=click.Path(file_okay=False), default=None,
              help="Write dumps to DIR/after-PASS.txt instead of stdout.")
@click.option("--stop-after", default=None, help="Stop the pipeline after this pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the compile report as JSON.")
@debug_option
def compile(model, output, chip, bits, per_channel, clip, auto_sqnr, chips, calib, calib_limit,
            timesteps, encoding, leak, seed, strict, input_shape, estimate, dump_after, dump_dir,
            stop_after, as_json, debug):
    """Compile MODEL (.onnx, .nir) into a chip image."""
    from compiler import compile_model
    from compiler.passes import PASS_NAMES

    if not output and not estimate and not stop_after:
        raise click.UsageError("missing -o/--output (or use --estimate / --stop-after)")
    if not Path(model).is_file():
        raise SnnError(f"model file '{model}' not found")
    spec = _spec(chip)
    shape = tuple(int(s) for s in input_shape.split(",")) if input_shape else None

    def dump(name: str, text: str) -> None:
        if dump_dir:
            Path(dump_dir).mkdir(parents=True, exist_ok=True)
            (Path(dump_dir) / f"after-{name}.txt").write_text(text)
        else:
            click.echo(f"// ===== after {name} =====\n{text}")

    if estimate:
        stop_after = "partition"
    prog = compile_model(
        model, spec, bits=_bits(bits), per_channel=per_channel, clip=clip, chips=chips,
        calib=load_calib(calib, calib_limit), timesteps=timesteps, encoding=encoding, seed=seed,
        strict=strict, leak=leak, auto_sqnr=auto_sqnr, input_shape=shape,
        dump_after=set(dump_after), stop_after=stop_after, dump=dump)
    summary = prog.summary()
    report = _report(prog, summary)
    if estimate:
        if as_json:
            echo_json(report)
        else:
            click.echo(f"estimate: {summary['cores_used']} cores on {summary['chips_needed']} "
                       f"chip(s) of {spec.cores_per_chip} ({spec.name})")
            click.echo(table([[k, v] for k, v in summary["cores_per_layer"].items()],
                             ["layer", "cores"]))
        return
    if not prog.complete:
        click.echo(f"stopped after '{stop_after}' (stage {prog.graph.stage}); no binary written. "
                   f"Passes: {', '.join(PASS_NAMES)}", err=True)
        return
    if output:
        prog.write(output)
    if as_json:
        report["output"] = output
        echo_json(report)
        return
    click.echo(f"wrote {output}: {summary['cores_used']} cores on {prog.graph.attrs['chips']} "
               f"chip(s), latency L = {summary['latency_ticks']} ticks")
    click.echo(_quant_table(report))


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
                       L["depth"], len(L["cores"])] for L in info["layers"]],
                     ["layer", "shape", "neurons", "bits", "depth", "cores"]))
    click.echo("")
    rows = [[i, c["layer"], f"{c['chip']}:({c['x']},{c['y']})", c["neurons"], c["axons"],
             c["weight_bits"], c["lcn"], c["synapse_bits"], f"{100 * c['synapse_util']:.1f}%",
             c["route_entries"]] for i, c in enumerate(info["per_core"])]
    click.echo(table(rows, ["core", "layer", "chip:(x,y)", "neurons", "axons", "w", "LCN",
                            "synapse bits", "util", "routes"]))


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
    return {
        "format_version": ".".join(map(str, img.version)), "chip": spec.name,
        "spec_digest": img.spec_digest, "cores_used": img.n_cores, "chips": img.chips,
        "latency_ticks": img.latency, "timesteps": img.meta["timesteps"],
        "encoding": img.meta["encoding"], "neurons": img.n_neurons, "axons": img.n_axons,
        "route_entries": int(a["rt_axon"].size), "input": img.meta["input"],
        "output": {k: v for k, v in img.meta["output"].items() if k in ("layer", "neurons",
                                                                         "decode")},
        "layers": [{k: L[k] for k in ("name", "shape", "neurons", "bits", "depth", "cores")}
                   for L in img.layers],
        "per_core": per_core, "source": img.meta.get("source", {}),
        "compiler_version": img.meta.get("compiler_version"),
    }


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--data", default="digits", show_default=True,
              help="digits | npz:FILE | mnist:DIR | cifar10:DIR (test split).")
@click.option("--limit", default=None, type=int, help="Use the first N test samples.")
@click.option("--timesteps", default=None, type=int, help="Override the image's T.")
@click.option("--batch", default=128, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@debug_option
def verify(model, image, data, limit, timesteps, batch, as_json, debug):
    """Trained vs deployed: float model, quantized reference and chip runtime on DATA."""
    res = verify_model(model, image, data, limit, timesteps, batch)
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
                 batch=128) -> dict:
    from compiler import reference
    from compiler.backend.emit import file_sha256
    from compiler.passes import fold_bn, lower
    from frontends import load_model
    from frontends.datasets import load_dataset
    from runtime import encoding as enc
    from runtime.image import load
    from runtime.simulator import run_payloads

    img = load(image_path)
    ds = load_dataset(data, split="test", limit=limit)
    warnings = []
    src = img.meta.get("source", {})
    if src.get("sha256") and Path(model).is_file() and file_sha256(model) != src["sha256"]:
        warnings.append(f"{image_path} was compiled from a different file than {model} "
                        f"(sha256 mismatch)")
    g = load_model(model)
    fg = lower(fold_bn(g), input_scale=img.meta["input"]["scale"])
    if int(np.prod(fg.node(fg.input_name).input_type)) != img.n_inputs:
        raise SnnError(f"{model} takes {fg.node(fg.input_name).input_type} inputs but "
                       f"{image_path} expects {img.meta['input']['shape']}",
                       "verify the image against the model it was compiled from")
    T = int(timesteps or img.meta["timesteps"])
    name = img.meta["encoding"]
    ig = img.unmap()
    x = ds.x.reshape(len(ds.x), -1)
    pf, pq, pr, exact, first = [], [], [], True, None
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
        for li, L in enumerate(img.layers):
            glob = img.layer_neurons(li)
            same = (np.array_equal(rr.counts_all[:, glob], rq.counts[L["name"]])
                    and np.array_equal(rr.v_all[:, glob], rq.v_final[L["name"]]))
            if not same and exact:
                exact = False
                bad = np.argwhere(rr.counts_all[:, glob] != rq.counts[L["name"]])
                bad = bad[0] if len(bad) else np.argwhere(rr.v_all[:, glob] != rq.v_final[L["name"]])[0]
                first = {"layer": L["name"], "sample": int(i + bad[0]), "neuron": int(bad[1])}
    pf, pq, pr = (np.concatenate(v) for v in (pf, pq, pr))
    y = ds.y
    return {
        "data": data, "n": int(len(y)), "timesteps": T, "encoding": name,
        "float_accuracy": float(np.mean(pf == y)), "quantized_accuracy": float(np.mean(pq == y)),
        "runtime_accuracy": float(np.mean(pr == y)), "agreement": float(np.mean(pf == pq)),
        "runtime_agreement": float(np.mean(pr == pq)), "bit_exact": bool(exact),
        "first_divergence": first, "warnings": warnings,
    }


def main() -> None:
    run_cli(cli, "snnc")


if __name__ == "__main__":
    main()
