#!/usr/bin/env python3
"""draw_layers.py: docs/architecture.svg, the picture of loom's stack, drawn from the code.

Every layer of scripts/check_layers.py is a box (its folders, files and lines inside); every
pair of layers where one includes the other gets an arrow, as thick as the includes behind it
and labelled with their count. All arrows point down: the picture is the include checker's
rule, seen. Run it after moving code: `python3 scripts/draw_layers.py` (writes the SVG).
"""
import math
import os
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_layers as cl  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
NAMES = {
    "core/": "core/ - the ground floor",
    "kernels/": "kernels/ - CPU references, CUDA kernels, the SIMT emulator",
    "engine/": "engine/ - tensors, ops, graph, backends, optimizer, data, comm, io",
    "models/": "models/ - the model kinds behind one interface",
    "launch/run/": "launch/run/ - what drives a run",
    "launch/bench/": "launch/bench/ - benchmarks",
    "launch/": "launch/ - the loom command line",
}


def survey():
    files, lines, subs = Counter(), Counter(), defaultdict(set)
    edges = Counter()
    for top in sorted({l.split("/")[0] for l in cl.LAYERS}):
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if not name.endswith(cl.SOURCES):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), ROOT)
                a = cl.layer_of(rel)
                if a is None:
                    continue
                rest = rel[len(cl.LAYERS[a]):].split("/")
                if len(rest) > 1:
                    subs[a].add(rest[0] + "/")
                files[a] += 1
                with open(os.path.join(ROOT, rel), encoding="utf-8", errors="replace") as f:
                    for line in f:
                        lines[a] += 1
                        m = cl.INCLUDE.match(line)
                        if m:
                            inc = cl.resolve(ROOT, rel, m.group(1))
                            b = cl.layer_of(inc) if inc else None
                            if b is not None and b != a:
                                edges[(a, b)] += 1
    return files, lines, subs, edges


def svg(files, lines, subs, edges):
    n = len(cl.LAYERS)
    box_w, box_h, gap, left, top = 800, 64, 30, 40, 64
    order = list(range(n - 1, -1, -1))  # the CLI on top, core at the bottom
    y_of = {layer: top + i * (box_h + gap) for i, layer in enumerate(order)}
    span = lambda e: order.index(e[1]) - order.index(e[0])  # boxes an arrow crosses
    width = left + box_w + 60 + 52 * max([span(e) for e in edges] + [1]) + 40
    height = top + n * (box_h + gap) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="DejaVu Sans, Arial, sans-serif" font-size="13">',
           '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
           'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="30" font-size="17" font-weight="bold">loom: one downward stack of includes</text>',
           f'<text x="{left}" y="50" fill="#555">each arrow: the #include "..." lines from one layer into a lower '
           f'one (count beside it); none points up (scripts/check_layers.py)</text>']
    palette = ["#e8f0fe", "#e6f4ea", "#fef7e0", "#fce8e6", "#f3e8fd", "#e0f7fa", "#eceff1"]
    for layer in range(n):
        y = y_of[layer]
        out.append(f'<rect x="{left}" y="{y}" width="{box_w}" height="{box_h}" rx="8" fill="{palette[layer]}" '
                   f'stroke="#555"/>')
        out.append(f'<text x="{left + 12}" y="{y + 22}" font-weight="bold">{NAMES[cl.LAYERS[layer]]}</text>')
        inner = ", ".join(sorted(subs[layer])) if cl.LAYERS[layer] != "launch/" else ""
        detail = f"{files[layer]} files, {lines[layer]:,} lines" + (f"  |  {inner}" if inner else "")
        out.append(f'<text x="{left + 12}" y="{y + 46}" fill="#333" font-size="12">{detail}</text>')
    # Arrows leave a box's right edge in its lower half and enter in the upper half, spread so
    # that no two share an end; longer jumps bulge further out.
    outs, ins = defaultdict(list), defaultdict(list)
    for e in sorted(edges, key=span):
        outs[e[0]].append(e)
        ins[e[1]].append(e)
    x0 = left + box_w
    for e in sorted(edges, key=span):
        a, b = e
        ya = y_of[a] + box_h * (0.55 + 0.4 * (outs[a].index(e) + 0.5) / len(outs[a]))
        yb = y_of[b] + box_h * (0.05 + 0.4 * (ins[b].index(e) + 0.5) / len(ins[b]))
        bulge = 40 + 52 * span(e)
        w = 0.8 + 0.9 * math.log2(1 + edges[e])
        out.append(f'<path d="M{x0},{ya:.1f} C{x0 + bulge},{ya:.1f} {x0 + bulge},{yb:.1f} {x0 + 3},{yb:.1f}" '
                   f'fill="none" stroke="#333" stroke-width="{w:.1f}" marker-end="url(#head)" opacity="0.7"/>')
        out.append(f'<text x="{x0 + 0.75 * bulge + 3:.1f}" y="{(ya + yb) / 2 + 4:.1f}" fill="#000" font-size="11" '
                   f'font-weight="bold">{edges[e]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    files, lines, subs, edges = survey()
    up = [(a, b) for (a, b) in edges if b > a]
    if up:
        print("draw_layers: upward includes exist; run scripts/check_layers.py first")
        return 1
    path = os.path.join(ROOT, "docs", "architecture.svg")
    with open(path, "w", encoding="utf-8") as f:
        f.write(svg(files, lines, subs, edges))
    print(f"draw_layers: wrote {path} ({len(edges)} layer-to-layer arrows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
