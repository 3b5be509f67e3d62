"""Tables and figures of ``snnrun compare`` (runtime/lab/compare.py)."""

from __future__ import annotations

import math


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f}"


def _md(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


MARK_NOTE = ("n/a: the loss is not reported because the clean accuracy is at chance level "
             "('chance'), the model was not trained for this input encoding ('untrained "
             "encoding') or its 1-bit weights lost every negative weight (the chip's 1-bit "
             "synapses are unsigned): a loss measured there means nothing "
             "(runtime/lab/honesty.py)")


def _losses(rs, mark) -> list[str]:
    return ["n/a" if mark else _pct(r["accuracy_loss"]) if r else "-" for r in rs]


def _with_notes(head, rows, notes) -> str:
    if any(notes):
        return _md(head + ["note"], [r + [n or ""] for r, n in zip(rows, notes)]) + \
            "\n\n" + MARK_NOTE
    return _md(head, rows)


def tables(result: dict, eps, labels, encodings, attacks, surrogate: str,
           marks: dict | None = None) -> dict[str, str]:
    """Markdown tables from run_compare's records; ``marks`` {(encoding, model): why} replaces
    meaningless losses by 'n/a' with the reason (runtime/lab/honesty.py compare_marks)."""
    from runtime.reports.attack import eps_label
    R = result["records"]
    marks = marks or {}
    eh = [eps_label(e) for e in eps]
    out = {}
    lab0 = labels[0]
    for attack in attacks:
        rows, notes = [], []
        for enc in encodings:
            rs = [_find(R, encoding=enc, attack=attack, eps=e, model=lab0, level="hardware")
                  for e in eps]
            if rs[0] is None:
                continue
            mk = marks.get((enc, lab0))
            rows.append([enc, _pct(rs[0]["clean_accuracy"])] + _losses(rs, mk))
            notes.append(mk)
        out[f"encodings_{attack}"] = (
            f"**{attack.upper()}: accuracy loss (percentage points) on the chip ({lab0}), "
            f"per encoding and eps** (hardware-level, surrogate {surrogate})\n\n"
            + _with_notes(["encoding", "clean acc %"] + eh, rows, notes))
        rows, notes = [], []
        for enc in encodings:
            for lab in ["float"] + list(labels):
                lvl = "algorithm" if lab == "float" else "hardware"
                rs = [_find(R, encoding=enc, attack=attack, eps=e, model=lab, level=lvl)
                      for e in eps]
                if rs[0] is None:
                    continue
                mk = marks.get((enc, lab))
                rows.append([enc, lab, _pct(rs[0]["clean_accuracy"])] + _losses(rs, mk))
                notes.append(mk)
        out[f"quantization_{attack}"] = (
            f"**{attack.upper()}: accuracy loss before (float) vs after quantization (chip "
            f"images)** (percentage points; float = attacked and evaluated on the float model)"
            f"\n\n" + _with_notes(["encoding", "weights", "clean acc %"] + eh, rows, notes))
        rows, notes = [], []
        for enc in encodings:
            for e in eps:
                fa = _find(R, encoding=enc, attack=attack, eps=e, model="float",
                           level="algorithm")
                mf = marks.get((enc, "float"))
                row = [enc, eps_label(e), _losses([fa], mf)[0]]
                why = {mf} if mf else set()
                for lab in labels:
                    tr = _find(R, encoding=enc, attack=attack, eps=e, model=lab, level="transfer")
                    hw = _find(R, encoding=enc, attack=attack, eps=e, model=lab, level="hardware")
                    mk = marks.get((enc, lab))
                    row += _losses([tr, hw], mk or mf)
                    why |= {mk} if mk else set()
                rows.append(row)
                notes.append("; ".join(sorted(why)) or None)
        head = ["encoding", "eps", "algorithm (float->float)"]
        for lab in labels:
            head += [f"transfer (float->{lab} chip)", f"hardware ({lab} twin->chip)"]
        out[f"levels_{attack}"] = (
            f"**{attack.upper()}: algorithm-level vs hardware-level adv_loss** (accuracy loss, "
            f"percentage points)\n\n" + _with_notes(head, rows, notes))
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


def compare_caption(out: dict, attack: str) -> str:
    """The settings line of a compare figure."""
    st = f", PGD-{out.get('steps')} (alpha eps/4, random start)" if attack == "pgd" else ""
    return (f"data {out.get('data')} n = {out.get('n')}, T = {out.get('timesteps')}, "
            f"surrogate {out.get('surrogate')}{st}, EOT {out.get('eot')}; every adversarial "
            f"example evaluated on the cycle-level chip runtime; marked series (n/a in the "
            f"tables) are at chance, use an encoding the model was not trained for or lost their "
            f"negative weights at 1 bit")


def _series(result, attack, eps, **kw):
    rs = [_find(result["records"], attack=attack, eps=e, **kw) for e in eps]
    return rs if rs and rs[0] is not None else None


def _panel(ax, runs, title, chance):
    from runtime.reports.attack import plot_accuracy_vs_eps
    plot_accuracy_vs_eps(runs, None, ax=ax, title=title, chance=chance)


def _mark(marks, enc, lab) -> str:
    m = (marks or {}).get((enc, lab))
    return f" [{m}]" if m else ""


def plot_encodings(result: dict, eps, attack: str, labels, path, *, out: dict | None = None,
                   marks=None, chance=None, fmt: str = "png") -> str:
    """Accuracy vs eps per encoding (hardware level): one panel per chip image (bit width)."""
    from runtime.reports import figures as F
    labels = [labels] if isinstance(labels, str) else list(labels)
    fig, axes = F.plt().subplots(1, len(labels), figsize=(4.6 * len(labels), 3.9), sharey=True,
                                 squeeze=False)
    encs = list(dict.fromkeys(r["encoding"] for r in result["records"]))
    for ax, lab in zip(axes[0], labels):
        runs = []
        for enc in encs:
            rs = _series(result, attack, eps, encoding=enc, model=lab, level="hardware")
            if rs:
                runs.append({"attack": attack, "encoding": enc, "results": rs,
                             "label": enc + _mark(marks, enc, lab)})
        _panel(ax, runs, f"{attack.upper()} on the {lab} chip, per encoding", chance)
    return F.save(fig, path, fmt, compare_caption(out or {}, attack))


def plot_quantization(result: dict, eps, attack: str, labels, path, *, out=None, marks=None,
                      chance=None, fmt: str = "png") -> str:
    """Before vs after quantization: accuracy vs eps of the float model (algorithm level) and
    every chip image (hardware level), one panel per encoding."""
    from runtime.reports import figures as F
    encs = list(dict.fromkeys(r["encoding"] for r in result["records"] if not r.get("table")))
    fig, axes = F.plt().subplots(1, len(encs), figsize=(4.4 * len(encs), 3.9), sharey=True,
                                 squeeze=False)
    for ax, enc in zip(axes[0], encs):
        runs = []
        rs = _series(result, attack, eps, encoding=enc, model="float", level="algorithm")
        if rs:
            runs.append({"attack": attack, "encoding": enc, "results": rs,
                         "label": "float (before quantization)" + _mark(marks, enc, "float")})
        for lab in labels:
            rs = _series(result, attack, eps, encoding=enc, model=lab, level="hardware")
            if rs:
                runs.append({"attack": attack, "encoding": enc, "results": rs,
                             "label": f"{lab} chip" + _mark(marks, enc, lab)})
        _panel(ax, runs, f"{attack.upper()}, {enc} encoding: float vs quantized", chance)
    return F.save(fig, path, fmt, compare_caption(out or {}, attack)
                  + "; float: attacked and evaluated on the float model, chips: attacked "
                    "through their bit-exact twin")


def plot_levels(result: dict, eps, attack: str, labels, path, *, out=None, marks=None,
                chance=None, fmt: str = "png") -> str:
    """Algorithm vs hardware level: float->float, float->chip (transfer), twin->chip (hardware)
    accuracy vs eps, one panel per encoding."""
    from runtime.reports import figures as F
    encs = list(dict.fromkeys(r["encoding"] for r in result["records"] if not r.get("table")))
    fig, axes = F.plt().subplots(1, len(encs), figsize=(4.4 * len(encs), 3.9), sharey=True,
                                 squeeze=False)
    for ax, enc in zip(axes[0], encs):
        runs = []
        rs = _series(result, attack, eps, encoding=enc, model="float", level="algorithm")
        if rs:
            runs.append({"attack": attack, "encoding": enc, "results": rs,
                         "label": "algorithm (float -> float)" + _mark(marks, enc, "float")})
        for lab in labels:
            for lvl, name in (("transfer", f"transfer (float -> {lab} chip)"),
                              ("hardware", f"hardware ({lab} twin -> chip)")):
                rs = _series(result, attack, eps, encoding=enc, model=lab, level=lvl)
                if rs:
                    runs.append({"attack": attack, "encoding": enc, "results": rs,
                                 "label": name + _mark(marks, enc, lab)})
        _panel(ax, runs, f"{attack.upper()}, {enc}: algorithm vs hardware level", chance)
    return F.save(fig, path, fmt, compare_caption(out or {}, attack))


def _find(records, **kw):
    for r in records:
        if all(r.get(k) == v for k, v in kw.items()) and ("table" not in r or "table" in kw):
            return r
    return None
