#!/usr/bin/env python3
"""DeepIoT's Figures 3-7 (issue #14): test accuracy against the % of weights kept (weights without
biases, as DeepIoT's tables count them) for every method, all compressed from ONE dense baseline,
with that baseline as a horizontal line.

    /usr/bin/python3 scripts/plot_accuracy_vs_kept.py --points docs/figure3_lenet5.csv --out docs/figure3_lenet5 --title "..."
    /usr/bin/python3 scripts/plot_accuracy_vs_kept.py --runs build-fig3/runs --out docs/figure3_lenet5 --title "..."

Input: a points CSV (--points), one row per compressed model, with the columns
  method, run, weights_kept_percent, test_accuracy_percent, baseline_accuracy_percent
and optionally setting, <layer>_kept_percent, change_pp and units_kept (copied through). Every
figure script (scripts/figure3_lenet5.sh, scripts/figure5_bilstm.sh) gets that CSV from --runs,
a directory of run outputs, which this script reads as:
  deepiot*.csv (+ .log)     example 11's --csv (one row per layer and a total row, with accuracies)
  dns*/magnitude*.csv/.log  example 3 / 2's --csv (report::write_csv: per-layer weights fraction)
                            and the "result: ... accuracy A% -> B%" line of the log
  dyns*.log                 example 10's "result: <method> ...: P% of the weights remain, accuracy
                            A% -> B%" line (DyNS-Ext or DyNS, by the file name)
  sparsesep*.csv/.log       example 15's --csv (one row per budget and layer, with test accuracy)
Each log's first line "== <name>: <command>" (written by the runs script) gives the setting.
Writes <out>.csv (the points) and <out>.png from it (matplotlib if importable, else gnuplot).
Refuses points whose baselines differ: the figure is only meaningful from one baseline.
"""
import argparse
import csv
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

REQUIRED = ("method", "run", "weights_kept_percent", "test_accuracy_percent", "baseline_accuracy_percent")
# Method name by run-file prefix, most specific first; a DeepIoT run with a stop floor, a distilled
# or a longer fine-tune is its own series.
METHODS = (
    ("deepiot-ft60-distill-stop85", "DeepIoT, stop floor 85%, 60-epoch distilled fine-tune"),
    ("deepiot-distill-stop85", "DeepIoT, stop floor 85%, distilled fine-tune"),
    ("deepiot-stop85", "DeepIoT, stop floor 85%"),
    ("deepiot-distill-ft60-stop", "DeepIoT, stop rule, 60-epoch distilled fine-tune"),
    ("deepiot-distill-ft30-stop", "DeepIoT, stop rule, 30-epoch distilled fine-tune"),
    ("deepiot-distill-ft60", "DeepIoT, 60-epoch distilled fine-tune"),
    ("deepiot-distill-ft30", "DeepIoT, 30-epoch distilled fine-tune"),
    ("deepiot-ft30", "DeepIoT, 30-epoch fine-tune"),
    ("deepiot-distill", "DeepIoT, distilled fine-tune"),
    ("deepiot", "DeepIoT"),
    ("dyns-ext-ft30", "DyNS-Ext, 30-epoch fine-tune"),
    ("dyns-ext", "DyNS-Ext"),
    ("dyns", "DyNS"),
    ("dns-distill", "DyNS (DNS) + distillation"),
    ("dns", "DyNS (DNS)"),
    ("magnitude", "Magnitude pruning"),
    ("sparsesep", "SparseSep"),
)
# Series order in the legend: DeepIoT first, then the baselines.
ORDER = ("DeepIoT", "DeepIoT, stop floor 85%", "DyNS-Ext", "DyNS", "Magnitude", "SparseSep")


def fail(msg):
    raise SystemExit(f"plot_accuracy_vs_kept: {msg}")


def method_of(stem):
    for prefix, name in METHODS:
        if stem == prefix or stem.startswith(prefix + "-"):
            return name
    return None


def command_of(log):
    """The command line the runs script recorded as the log's first line, as argv (or [])."""
    if not os.path.exists(log):
        return []
    with open(log) as f:
        first = f.readline()
    m = re.match(r"== [^:]+: (.*)", first)
    return shlex.split(m.group(1)) if m else []


def option(argv, name, default=""):
    for i, a in enumerate(argv[:-1]):
        if a == name:
            return argv[i + 1]
    return default


def result_line(log, pattern):
    with open(log) as f:
        for line in f:
            m = re.match(pattern, line)
            if m:
                return m
    fail(f"{log} has no line matching '{pattern}' (did the run finish?)")


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        fail(f"{path} has no data rows")
    return rows


def point(method, run, setting, kept, acc, base, layers=None, units=""):
    return {"method": method, "run": run, "setting": setting, "layers": layers or {}, "units": units,
            "kept": kept, "acc": acc, "base": base}


def deepiot_runs(path, stem):
    rows = read_csv(path)
    total = [r for r in rows if r["layer"] == "total"]
    if not total:
        fail(f"{path} has no total row")
    t = total[0]
    argv = command_of(path[:-4] + ".log")
    setting = f"tau_final {float(t['tau_final']):g}"
    for flag, name in (("--alpha", "alpha"), ("--min-accuracy", "stop floor"), ("--distill", "distill"),
                       ("--finetune-epochs", "fine-tune epochs"), ("--iterations", "iterations")):
        if option(argv, flag):
            setting += f", {name} {option(argv, flag)}"
    per_layer = [r for r in rows if r["layer"] != "total"]
    return [point(method_of(stem), stem, setting, float(t["kept_percent"]), 100 * float(t["test_accuracy"]),
                  100 * float(t["baseline_accuracy"]), {r["layer"]: float(r["kept_percent"]) for r in per_layer},
                  " ".join(f"{r['layer']} {r['units_kept']}/{r['units_original']}" for r in per_layer))]


def report_runs(path, stem):
    """Examples 2 and 3: report::write_csv's per-layer rows plus the log's accuracies."""
    rows = read_csv(path)
    total = rows[-1]  # write_csv puts the total last
    m = result_line(path[:-4] + ".log", r"result: .*accuracy ([0-9.]+)% -> ([0-9.]+)%")
    argv = command_of(path[:-4] + ".log")
    if stem.startswith("dns"):
        setting = f"c_rate {option(argv, '--c-rate', 'default')}"
    else:
        g = option(argv, "--global")
        setting = f"global {g}" if g else f"targets {option(argv, '--targets', 'default')}"
        setting += f", {option(argv, '--rounds', '4')} rounds"
    if option(argv, "--distill"):
        setting += f", distill {option(argv, '--distill')}"
    return [point(method_of(stem), stem, setting, 100 * float(total["weights_fraction"]), float(m.group(2)),
                  float(m.group(1)), {r["layer"]: 100 * float(r["weights_fraction"]) for r in rows[:-1]})]


def dyns_ext_runs(log, stem):
    """Example 10: its 'result:' line (weights kept over every weight matrix, fc included)."""
    m = result_line(log, r"result: .*: ([0-9.]+)% of the weights remain, accuracy ([0-9.]+)% -> ([0-9.]+)%")
    argv = command_of(log)
    # Plain DyNS (--method dyns) prunes fc only: the recurrent --c-rate plays no part.
    setting = "" if option(argv, "--method") == "dyns" else f"c_rate {option(argv, '--c-rate', '3.0')}"
    for flag, name in (("--fc-c-rate", "fc c_rate"), ("--dns-epochs", "DNS epochs"), ("--finetune-epochs", "fine-tune epochs")):
        if option(argv, flag):
            setting += f"{', ' if setting else ''}{name} {option(argv, flag)}"
    return [point(method_of(stem), stem, setting, float(m.group(1)), float(m.group(3)), float(m.group(2)))]


def sparsesep_runs(path, stem):
    log = path[:-4] + ".log"
    base = None
    if os.path.exists(log):
        with open(log) as f:
            m = re.search(r"dense test accuracy ([0-9.]+)%", f.read())
            base = float(m.group(1)) if m else None
    if base is None:
        fail(f"{log} has no 'dense test accuracy' line")
    growth = "--allow-growth" in command_of(log)
    by_budget = {}
    for r in read_csv(path):
        by_budget.setdefault(r["budget"], []).append(r)
    out = []
    for budget, rows in by_budget.items():
        orig = sum(float(r["original_weights"]) for r in rows)
        kept = sum(float(r["kept_weights"]) for r in rows)
        out.append(point(method_of(stem) + (", growth allowed" if growth else ""), stem,
                         f"held-out budget {100 * float(budget):g} pp" + (", allow-growth" if growth else ""),
                         100 * kept / orig, 100 * float(rows[0]["test_accuracy"]), base,
                         {r["layer"]: float(r["kept_percent"]) for r in rows}))
    return out


def collect(runs_dir):
    """Points from every run output in runs_dir that names a method (see METHODS)."""
    points = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "*.csv")) + glob.glob(os.path.join(runs_dir, "dyns*.log"))):
        stem = os.path.basename(path).rsplit(".", 1)[0]
        if method_of(stem) is None:
            continue
        if stem.startswith("deepiot"):
            points += deepiot_runs(path, stem)
        elif stem.startswith("sparsesep"):
            points += sparsesep_runs(path, stem)
        elif stem.startswith("dyns"):
            points += dyns_ext_runs(path, stem)
        else:
            points += report_runs(path, stem)
    if not points:
        fail(f"no run outputs in {runs_dir}")
    return points


def write_points(points, path):
    layers = []  # per-layer columns, in the order the layers first appear
    for p in points:
        layers += [l for l in p["layers"] if l not in layers]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "run", "setting", *[f"{l}_kept_percent" for l in layers], "weights_kept_percent",
                    "test_accuracy_percent", "baseline_accuracy_percent", "change_pp", "units_kept"])
        for p in sorted(points, key=lambda p: (p["method"], -p["kept"])):
            w.writerow([p["method"], p["run"], p["setting"], *[f"{p['layers'][l]:.4f}" if l in p["layers"] else "" for l in layers],
                        f"{p['kept']:.4f}", f"{p['acc']:.2f}", f"{p['base']:.2f}", f"{p['acc'] - p['base']:+.2f}", p["units"]])


def read_points(path):
    """The points CSV: REQUIRED columns, numbers where numbers belong, one baseline."""
    if not os.path.exists(path):
        fail(f"--points {path} does not exist")
    rows = read_csv(path)
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        fail(f"{path} lacks the column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    points = []
    for i, r in enumerate(rows, start=2):
        try:
            kept, acc, base = (float(r[c]) for c in REQUIRED[2:])
        except ValueError:
            fail(f"{path} line {i}: a non-numeric value in {', '.join(f'{c}={r[c]!r}' for c in REQUIRED[2:])}")
        if not 0 < kept <= 100 or not 0 <= acc <= 100 or not 0 <= base <= 100:
            fail(f"{path} line {i}: weights kept {kept}% must be in (0, 100], accuracies {acc}% / {base}% in [0, 100]")
        points.append(point(r["method"], r["run"], r.get("setting", ""), kept, acc, base))
    bases = sorted({round(p["base"], 2) for p in points})
    if len(bases) != 1:
        fail(f"{path}: the runs start from different baselines (test accuracies {bases}): one baseline per figure")
    return points, bases[0]


def series(points):
    """{method: [(kept %, accuracy %)]}, DeepIoT first (ORDER), each sorted by kept %."""
    out = {}
    for p in points:
        out.setdefault(p["method"], []).append((p["kept"], p["acc"]))
    rank = lambda m: next((i for i, n in reversed(list(enumerate(ORDER))) if m.startswith(n)), len(ORDER))
    return {m: sorted(out[m]) for m in sorted(out, key=lambda m: (rank(m), m))}


TICKS = (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100)
COLORS = ("#1f77b4", "#17becf", "#9467bd", "#e377c2", "#d62728", "#ff7f0e", "#2ca02c", "#8c564b", "#7f7f7f")


def y_floor(points, base, below):
    """The y axis starts `below` pp under the baseline: the methods' differences sit near it, and a
    far-off point would flatten them; points under the axis are named on the chart instead."""
    return min(base - below, max(min(p["acc"] for p in points) - 0.1, base - below))


def off_chart(points, ylo):
    return [f"{p['method']}, {p['setting']}: {p['kept']:.2f}% kept, {p['acc']:.2f}%" for p in points if p["acc"] < ylo]


def plot_matplotlib(points, base, out, title, below):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.6))
    for (method, xy), marker, color in zip(series(points).items(), "osDP^vx*h", COLORS):
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker=marker, color=color, label=method)
    ylo = y_floor(points, base, below)
    ax.set_ylim(ylo, base + 0.3)
    for i, text in enumerate(off_chart(points, ylo)):
        ax.text(0.01, 0.02 + 0.04 * i, "off the chart: " + text, transform=ax.transAxes, fontsize=7)
    ax.axhline(base, color="gray", linestyle="--", label=f"dense baseline {base:.2f}%")
    ax.set_xscale("log")
    xs = [p["kept"] for p in points]
    ticks = [t for t in TICKS if min(xs) / 1.5 <= t <= max(xs) * 1.5]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])  # percentages, not powers of ten
    ax.set_xticks([], minor=True)
    ax.set_xlabel("weights kept (%, log scale; biases not counted)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_gnuplot(points, base, out, title, below):
    s = series(points)
    data = []
    for method, xy in s.items():
        data.append(f"# {method}")
        data += [f"{x:.6g} {y:.4f}" for x, y in xy]
        data += ["", ""]  # a gnuplot data block per method
    dat = out + ".dat"
    with open(dat, "w") as f:
        f.write("\n".join(data))
    lo = min(x for xy in s.values() for x, _ in xy)
    hi = max(x for xy in s.values() for x, _ in xy)
    quote = lambda t: t.replace("'", "''")  # gnuplot's single-quoted strings double the quote
    plots = [f"'{dat}' index {i} using 1:2 with linespoints pt {i + 5} ps 1.2 lw 2 lc rgb '{COLORS[i % len(COLORS)]}' title '{quote(m)}'"
             for i, m in enumerate(s)]
    ylo = y_floor(points, base, below)
    labels = [f"set label {i + 1} 'off the chart: {quote(t)}' at graph 0.01, graph {0.03 + 0.04 * i} font ',8'"
              for i, t in enumerate(off_chart(points, ylo))]
    plots.append(f"{base} with lines dt 2 lc rgb 'gray40' lw 2 title 'dense baseline {base:.2f}%'")
    script = [
        "set terminal pngcairo noenhanced size 960,660 font 'Sans,10'",  # labels are plain text: tau_final is no subscript
        f"set output '{out}'",
        f"set title '{quote(title)}'",
        "set logscale x",
        f"set xrange [{lo / 1.5:.6g}:{min(hi * 1.5, 150):.6g}]",
        "set xlabel 'weights kept (%, log scale; biases not counted)'",
        "set ylabel 'test accuracy (%)'",
        f"set xtics ({', '.join(f'{t:g}' for t in TICKS)})",
        f"set yrange [{ylo:.2f}:{base + 0.3:.2f}]",
        *labels,
        "set grid xtics ytics",
        "set key below font ',9'",
        "plot " + ", ".join(plots),
    ]
    try:
        subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, check=True)
    finally:
        os.remove(dat)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--points", help="a points CSV (columns: " + ", ".join(REQUIRED) + ")")
    src.add_argument("--runs", help="a directory of run outputs, turned into <out>.csv first")
    p.add_argument("--out", required=True, help="output name without suffix (.csv and .png are written)")
    p.add_argument("--title", default="test accuracy against weights kept (one baseline)")
    p.add_argument("--below", type=float, default=1.6, help="the y axis starts this many pp under the baseline")
    a = p.parse_args()
    if a.below <= 0:
        fail(f"--below {a.below} must be positive")
    points_csv = a.out + ".csv"
    if a.runs:
        write_points(collect(a.runs), points_csv)
    else:
        read_points(a.points)  # checked before anything is written
        if os.path.abspath(a.points) != os.path.abspath(points_csv):
            shutil.copyfile(a.points, points_csv)
    points, base = read_points(points_csv)  # the PNG is always drawn from the CSV it ships with
    print(f"wrote {points_csv} ({len(points)} runs, baseline {base:.2f}%)")
    try:
        import matplotlib  # noqa: F401
        plot_matplotlib(points, base, a.out + ".png", a.title, a.below)
        print(f"wrote {a.out}.png (matplotlib)")
    except ImportError:
        if not shutil.which("gnuplot"):
            fail("neither matplotlib nor gnuplot is installed: the CSV is written, the PNG is not")
        plot_gnuplot(points, base, a.out + ".png", a.title, a.below)
        print(f"wrote {a.out}.png (gnuplot)")


if __name__ == "__main__":
    sys.exit(main())
