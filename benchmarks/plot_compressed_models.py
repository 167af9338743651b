#!/usr/bin/env python3
"""Plots benchmarks/compressed_models' CSV (issue 15): each compressed model's speed-up over its own
dense float model against the weights it keeps, batch 1 and batch 64 as two marker shapes. Two panels:
nonzero weights kept (% of the float model's weights) and weight bytes kept (% of its float32 bytes:
a BNN keeps every weight, in 1/32 of the bytes; an int8 model, in 1/4).

    build/benchmarks/compressed_models --csv compressed_models.csv
    /usr/bin/python3 benchmarks/plot_compressed_models.py compressed_models.csv docs/compressed_models.png

Draws with matplotlib when it is importable, else with gnuplot (pngcairo), else writes an SVG itself
(the output name's suffix then becomes .svg). Standard library only otherwise.
"""
import argparse
import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile


def read_rows(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                speedup = float(r["speedup"])
                kept = 100.0 * float(r["weights_kept"])
                bytes_kept = 100.0 * float(r["compressed_weight_bytes"]) / float(r["float_weight_bytes"])
            except (KeyError, ValueError, ZeroDivisionError) as e:
                raise SystemExit(f"plot_compressed_models: {path}: bad row {r}: {e}")
            if not all(math.isfinite(v) and v > 0 for v in (speedup, kept, bytes_kept)):
                continue
            rows.append({"model": r["model"], "batch": int(r["batch"]), "speedup": speedup, "kept": kept, "bytes": bytes_kept})
    if not rows:
        raise SystemExit(f"plot_compressed_models: {path} holds no plottable rows")
    return rows


PANELS = [("kept", "nonzero weights kept (% of the float model's)"), ("bytes", "weight bytes kept (% of float32)")]
TITLE = "Whole compressed models: speed-up over the dense float model (one thread)"


def plot_matplotlib(rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (key, label) in zip(axes, PANELS):
        for batch, marker in ((1, "o"), (64, "^")):
            pts = [r for r in rows if r["batch"] == batch]
            ax.scatter([r[key] for r in pts], [r["speedup"] for r in pts], marker=marker, label=f"batch {batch}")
            for r in pts:
                ax.annotate(r["model"], (r[key], r["speedup"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log", base=2)
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("speed-up (float time / compressed time)")
    axes[0].legend()
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def plot_gnuplot(rows, out):
    with tempfile.TemporaryDirectory() as tmp:
        data = {}
        for batch in (1, 64):
            path = os.path.join(tmp, f"batch{batch}.dat")
            with open(path, "w") as f:
                for r in rows:
                    if r["batch"] == batch:
                        f.write(f"{r['kept']:.6g} {r['bytes']:.6g} {r['speedup']:.6g} \"{r['model']}\"\n")
            data[batch] = path
        script = [
            f"set terminal pngcairo size 1200,480 font 'Sans,9'",
            f"set output '{out}'",
            "set multiplot layout 1,2 title '" + TITLE + "'",
            "set logscale x 10",
            "set logscale y 2",
            "set grid",
            "set key top left",
        ]
        for column, (key, label) in zip((1, 2), PANELS):
            lo = min(r[key] for r in rows) / 2
            script += [
                f"set xlabel \"{label}\"",
                f"set xrange [{lo:.6g}:200]",
                "set ylabel 'speed-up (float time / compressed time)'" if column == 1 else "unset ylabel",
                f"plot 1 with lines dashtype 2 lc rgb 'grey' notitle, "
                f"'{data[1]}' using {column}:3 with points pt 7 ps 1.2 title 'batch 1', "
                f"'{data[64]}' using {column}:3 with points pt 9 ps 1.3 title 'batch 64', "
                f"'{data[1]}' using {column}:3:4 with labels offset 1,0.6 left font 'Sans,7' notitle, "
                f"'{data[64]}' using {column}:3:4 with labels offset 1,-0.6 left font 'Sans,7' notitle",
            ]
        script.append("unset multiplot")
        subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, check=True)


def plot_svg(rows, out):
    """A plain SVG scatter (log axes), for machines with neither matplotlib nor gnuplot."""
    width, height, margin = 1200, 480, 70
    ys = [r["speedup"] for r in rows]
    y_lo, y_hi = math.log2(min(min(ys), 1.0)) - 0.2, math.log2(max(ys)) + 0.2
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{TITLE}</text>']
    panel_w = width / 2
    for p, (key, label) in enumerate(PANELS):
        xs = [r[key] for r in rows]
        x_lo, x_hi = math.log10(min(xs)) - 0.1, math.log10(max(max(xs), 100.0)) + 0.05
        left, right, top, bottom = p * panel_w + margin, (p + 1) * panel_w - 20, 40, height - 50
        sx = lambda v: left + (math.log10(v) - x_lo) / (x_hi - x_lo) * (right - left)  # noqa: E731
        sy = lambda v: bottom - (math.log2(v) - y_lo) / (y_hi - y_lo) * (bottom - top)  # noqa: E731
        parts.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="black"/>')
        parts.append(f'<line x1="{left}" x2="{right}" y1="{sy(1.0)}" y2="{sy(1.0)}" stroke="grey" stroke-dasharray="4,3"/>')
        for e in range(math.ceil(x_lo), math.floor(x_hi) + 1):
            parts.append(f'<text x="{sx(10 ** e)}" y="{bottom + 14}" text-anchor="middle">{10 ** e:g}</text>')
        for e in range(math.ceil(y_lo), math.floor(y_hi) + 1):
            parts.append(f'<text x="{left - 6}" y="{sy(2 ** e) + 3}" text-anchor="end">{2 ** e:g}x</text>')
        parts.append(f'<text x="{(left + right) / 2}" y="{height - 15}" text-anchor="middle">{label}</text>')
        for r in rows:
            x, y = sx(r[key]), sy(r["speedup"])
            if r["batch"] == 1:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#1f77b4"/>')
            else:
                parts.append(f'<polygon points="{x:.1f},{y - 5:.1f} {x - 5:.1f},{y + 4:.1f} {x + 5:.1f},{y + 4:.1f}" fill="#ff7f0e"/>')
            parts.append(f'<text x="{x + 6:.1f}" y="{y - 4:.1f}" font-size="8">{r["model"]}</text>')
    parts.append(f'<text x="{margin + 10}" y="{55}" fill="#1f77b4">&#9679; batch 1</text>')
    parts.append(f'<text x="{margin + 10}" y="{70}" fill="#ff7f0e">&#9650; batch 64</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", help="CSV written by compressed_models --csv")
    p.add_argument("out", help="PNG to write (an .svg next to it when neither matplotlib nor gnuplot is there)")
    a = p.parse_args()
    rows = read_rows(a.csv)
    if os.path.dirname(a.out):
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
    try:
        plot_matplotlib(rows, a.out)
        print(f"wrote {a.out} (matplotlib)")
        return
    except ImportError:
        pass
    if shutil.which("gnuplot"):
        plot_gnuplot(rows, a.out)
        print(f"wrote {a.out} (gnuplot)")
        return
    svg = os.path.splitext(a.out)[0] + ".svg"
    plot_svg(rows, svg)
    print(f"wrote {svg} (SVG: neither matplotlib nor gnuplot found)", file=sys.stderr)


if __name__ == "__main__":
    main()
