#!/usr/bin/env python3
"""DeepIoT's Figure 3 for LeNet-5 on the MNIST subset (issue #14): test accuracy against the % of
weights kept (weights without biases, as DeepIoT's Table 2 counts them) for every method, all
compressed from ONE dense baseline, with that baseline as a horizontal line.

    scripts/figure3_lenet5.sh            # the runs, then this script
    /usr/bin/python3 scripts/plot_figure3_lenet5.py --runs build-fig3/runs --out docs/figure3_lenet5

Reads what scripts/figure3_lenet5.sh leaves in --runs:
  deepiot-<tag>.csv    example 11's --csv (one row per layer and a total row, with accuracies)
  dns-<tag>.csv/.log   example 3's --csv (report::write_csv: per-layer nonzero / weights) and the
  magnitude-<tag>.*    "result: ... accuracy A% -> B%" line of its log (example 2 likewise)
  sparsesep*.csv/.log  example 15's --csv (one row per budget and layer, with test accuracy)
Each log's first line "== <name>: <command>" (written by the runs script) gives the setting.
Writes <out>.csv (one row per run) and <out>.png (matplotlib if importable, else gnuplot).
Refuses runs whose baselines differ: the figure is only meaningful from one baseline.
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

LAYERS = ("conv1", "conv2", "fc1", "fc2")
# Method name by file prefix; a DeepIoT run with a distilled or longer fine-tune is its own series.
METHODS = (
    ("deepiot-ft60-distill-stop85", "DeepIoT, stop floor 85%, 60-epoch distilled fine-tune"),
    ("deepiot-distill-stop85", "DeepIoT, stop floor 85%, distilled fine-tune"),
    ("deepiot-stop85", "DeepIoT, stop floor 85%"),
    ("deepiot", "DeepIoT"),
    ("dns-distill", "DyNS (DNS) + distillation"),
    ("dns", "DyNS (DNS)"),
    ("magnitude", "Magnitude pruning"),
    ("sparsesep", "SparseSep"),
)


def fail(msg):
    raise SystemExit(f"plot_figure3_lenet5: {msg}")


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


def result_accuracies(log):
    """(baseline, compressed) test accuracy in % from examples 2 / 3's 'result:' line."""
    with open(log) as f:
        for line in f:
            m = re.match(r"result: .*accuracy ([0-9.]+)% -> ([0-9.]+)%", line)
            if m:
                return float(m.group(1)), float(m.group(2))
    fail(f"{log} has no 'result: ... accuracy A% -> B%' line (did the run finish?)")


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        fail(f"{path} is empty")
    return rows


def deepiot_runs(path, stem):
    rows = {r["layer"]: r for r in read_csv(path)}
    if "total" not in rows:
        fail(f"{path} has no total row")
    t = rows["total"]
    argv = command_of(path[:-4] + ".log")
    setting = f"tau_final {float(t['tau_final']):g}"
    if option(argv, "--min-accuracy"):
        setting += f", stop floor {option(argv, '--min-accuracy')}"
    if option(argv, "--distill"):
        setting += f", distill {option(argv, '--distill')}"
    if option(argv, "--finetune-epochs"):
        setting += f", {option(argv, '--finetune-epochs')} fine-tune epochs"
    return [{
        "method": method_of(stem), "run": stem, "setting": setting,
        "layers": {l: float(rows[l]["kept_percent"]) for l in LAYERS if l in rows},
        "units": " ".join(f"{l} {rows[l]['units_kept']}/{rows[l]['units_original']}" for l in LAYERS if l in rows),
        "kept": float(t["kept_percent"]), "acc": 100 * float(t["test_accuracy"]), "base": 100 * float(t["baseline_accuracy"]),
    }]


def report_runs(path, stem):
    """Examples 2 and 3: report::write_csv's per-layer rows plus the log's accuracies."""
    rows = read_csv(path)
    total = rows[-1]  # write_csv puts the total last
    base, acc = result_accuracies(path[:-4] + ".log")
    argv = command_of(path[:-4] + ".log")
    if stem.startswith("dns"):
        setting = f"c_rate {option(argv, '--c-rate', 'default')}"
    else:
        g = option(argv, "--global")
        setting = f"global {g}" if g else f"targets {option(argv, '--targets', 'default')}"
        setting += f", {option(argv, '--rounds', '4')} rounds"
    if option(argv, "--distill"):
        setting += f", distill {option(argv, '--distill')}"
    return [{
        "method": method_of(stem), "run": stem, "setting": setting,
        "layers": {r["layer"]: 100 * float(r["weights_fraction"]) for r in rows[:-1] if r["layer"] in LAYERS},
        "units": "", "kept": 100 * float(total["weights_fraction"]), "acc": acc, "base": base,
    }]


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
        out.append({
            "method": method_of(stem) + (", growth allowed" if growth else ""), "run": stem,
            "setting": f"held-out budget {100 * float(budget):g} pp" + (", allow-growth" if growth else ""),
            "layers": {r["layer"]: float(r["kept_percent"]) for r in rows if r["layer"] in LAYERS},
            "units": "", "kept": 100 * kept / orig, "acc": 100 * float(rows[0]["test_accuracy"]), "base": base,
        })
    return out


def collect(runs_dir):
    points = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "*.csv"))):
        stem = os.path.basename(path)[:-4]
        method = method_of(stem)
        if method is None:
            continue
        if stem.startswith("deepiot"):
            points += deepiot_runs(path, stem)
        elif stem.startswith("sparsesep"):
            points += sparsesep_runs(path, stem)
        else:
            points += report_runs(path, stem)
    if not points:
        fail(f"no run CSVs in {runs_dir}")
    bases = sorted({round(p["base"], 2) for p in points})
    if len(bases) != 1:
        fail(f"the runs start from different baselines (test accuracies {bases}): one baseline per figure")
    return points, bases[0]


def write_csv(points, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "run", "setting", *[f"{l}_kept_percent" for l in LAYERS], "weights_kept_percent",
                    "test_accuracy_percent", "baseline_accuracy_percent", "change_pp", "units_kept"])
        for p in sorted(points, key=lambda p: (p["method"], -p["kept"])):
            w.writerow([p["method"], p["run"], p["setting"], *[f"{p['layers'][l]:.4f}" if l in p["layers"] else "" for l in LAYERS],
                        f"{p['kept']:.4f}", f"{p['acc']:.2f}", f"{p['base']:.2f}", f"{p['acc'] - p['base']:+.2f}", p["units"]])


def series(points):
    """{method: [(kept %, accuracy %)]} in METHODS order (DeepIoT first), each sorted by kept %."""
    out = {}
    for p in points:
        out.setdefault(p["method"], []).append((p["kept"], p["acc"]))
    order = ["DeepIoT", "DeepIoT, stop floor 85%", "DyNS", "Magnitude", "SparseSep"]
    rank = lambda m: next((i for i, n in reversed(list(enumerate(order))) if m.startswith(n)), len(order))
    return {m: sorted(out[m]) for m in sorted(out, key=lambda m: (rank(m), m))}


COLORS = ("#1f77b4", "#17becf", "#9467bd", "#e377c2", "#d62728", "#ff7f0e", "#2ca02c", "#8c564b", "#7f7f7f")


def y_floor(points, base):
    """The y axis starts 1.6 pp below the baseline: the methods' differences sit within a point of
    it, and a far-off point (SparseSep at a 5 pp budget) would flatten them; it is named instead."""
    return min(base - 1.6, max(min(p["acc"] for p in points) - 0.1, base - 1.6))


def off_chart(points, ylo):
    return [f"{p['method']}, {p['setting']}: {p['kept']:.2f}% kept, {p['acc']:.2f}%" for p in points if p["acc"] < ylo]


TITLE = "LeNet-5, MNIST subset: test accuracy against weights kept (one baseline)"


def plot_matplotlib(points, base, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.6))
    for (method, xy), marker, color in zip(series(points).items(), "osDP^vx*h", COLORS):
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker=marker, color=color, label=method)
    ylo = y_floor(points, base)
    ax.set_ylim(ylo, base + 0.3)
    for i, text in enumerate(off_chart(points, ylo)):
        ax.text(0.01, 0.02 + 0.04 * i, "off the chart: " + text, transform=ax.transAxes, fontsize=7)
    ax.axhline(base, color="gray", linestyle="--", label=f"dense baseline {base:.2f}%")
    ax.set_xscale("log")
    ax.set_xlabel("weights kept (%, log scale; biases not counted)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(TITLE, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_gnuplot(points, base, out):
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
    plots = [f"'{dat}' index {i} using 1:2 with linespoints pt {i + 5} ps 1.2 lw 2 lc rgb '{COLORS[i % len(COLORS)]}' title '{m}'"
             for i, m in enumerate(s)]
    ylo = y_floor(points, base)
    labels = [f"set label {i + 1} 'off the chart: {t}' at graph 0.01, graph {0.03 + 0.04 * i} font ',8'"
              for i, t in enumerate(off_chart(points, ylo))]
    plots.append(f"{base} with lines dt 2 lc rgb 'gray40' lw 2 title 'dense baseline {base:.2f}%'")
    script = [
        "set terminal pngcairo size 960,660 font 'Sans,10'",
        f"set output '{out}'",
        f"set title '{TITLE}'",
        "set logscale x",
        f"set xrange [{lo / 1.5:.6g}:{min(hi * 1.5, 150):.6g}]",
        "set xlabel 'weights kept (%, log scale; biases not counted)'",
        "set ylabel 'test accuracy (%)'",
        "set xtics (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100)",
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
    p.add_argument("--runs", default="build-fig3/runs", help="directory with the runs' CSVs and logs")
    p.add_argument("--out", default="docs/figure3_lenet5", help="output name without suffix (.csv and .png are written)")
    a = p.parse_args()
    points, base = collect(a.runs)
    write_csv(points, a.out + ".csv")
    print(f"wrote {a.out}.csv ({len(points)} runs, baseline {base:.2f}%)")
    try:
        import matplotlib  # noqa: F401
        plot_matplotlib(points, base, a.out + ".png")
        print(f"wrote {a.out}.png (matplotlib)")
    except ImportError:
        if not shutil.which("gnuplot"):
            fail("neither matplotlib nor gnuplot is installed: the CSV is written, the PNG is not")
        plot_gnuplot(points, base, a.out + ".png")
        print(f"wrote {a.out}.png (gnuplot)")


if __name__ == "__main__":
    sys.exit(main())
