"""Tables and figures of ``snnrun compare`` (runtime/lab/compare.py)."""

from __future__ import annotations

import math


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f}"


def _md(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def tables(result: dict, eps, labels, encodings, attacks, surrogate: str) -> dict[str, str]:
    """Markdown tables from run_compare's records."""
    from runtime.reports.attack import eps_label
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
    from runtime.reports.attack import plot_accuracy_vs_eps
    runs = []
    for enc in dict.fromkeys(r["encoding"] for r in result["records"]):
        rs = [_find(result["records"], encoding=enc, attack=attack, eps=e, model=label,
                    level="hardware") for e in eps]
        if rs[0] is not None:
            runs.append({"attack": attack, "encoding": enc, "label": f"{attack} {enc}",
                         "results": rs})
    return plot_accuracy_vs_eps(runs, path)


def _find(records, **kw):
    for r in records:
        if all(r.get(k) == v for k, v in kw.items()) and ("table" not in r or "table" in kw):
            return r
    return None
