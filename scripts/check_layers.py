#!/usr/bin/env python3
"""check_layers.py: every #include "..." of loom must point down the stack (docs/architecture.md).

Layers, lowest first; a file may include its own layer and the ones below it:
  core/  <  kernels/  <  engine/  <  models/  <  launch/run/  <  launch/bench/  <  launch/ (the CLI)
Inside a layer some folders must not meet:
  - engine/backend/ reads no graph: it never includes engine/graph/;
  - engine/data/ and engine/comm/ know no graph: they never include engine/graph/;
  - engine/tensor/ and engine/ops/ sit below every other engine folder;
  - a model kind's folder (models/<kind>/) includes models/*.h, never another kind's folder.
tests/, scripts/ and docs/ are outside the stack (tests may include anything).

Usage:
  check_layers.py [--root DIR]   check the tree; prints file:line: problem, exits 1 on any
  check_layers.py --self-test    prove the checker fails on each kind of violation (copies the
                                 tree to a temporary folder, plants one violation at a time)
"""
import argparse
import os
import re
import shutil
import sys
import tempfile

LAYERS = ["core/", "kernels/", "engine/", "models/", "launch/run/", "launch/bench/", "launch/"]
SOURCES = (".h", ".hpp", ".cpp", ".cu", ".cuh", ".def")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
# Folders inside engine/, lowest first: a folder may include the ones below it and itself.
ENGINE_FLOOR = ["engine/tensor/", "engine/ops/"]
# (folder, folder it must not include, why)
MUST_NOT_MEET = [
    ("engine/backend/", "engine/graph/", "a backend reads no graph (an op call brings its views: engine/ops/ops.h)"),
    ("engine/data/", "engine/graph/", "data knows no graph"),
    ("engine/comm/", "engine/graph/", "comm knows no graph"),
]


def layer_of(path):
    """Index into LAYERS of a path relative to the root, or None outside the stack."""
    best = None
    for i, prefix in enumerate(LAYERS):
        if path.startswith(prefix) and (best is None or len(prefix) > len(LAYERS[best])):
            best = i
    return best


def resolve(root, rel_file, target):
    """The included file as a path relative to the root: project-rooted, else next to the file."""
    if os.path.exists(os.path.join(root, target)):
        return os.path.normpath(target)
    local = os.path.normpath(os.path.join(os.path.dirname(rel_file), target))
    if os.path.exists(os.path.join(root, local)):
        return local
    return None  # a system or generated header


def problems_of(rel, line_no, inc):
    """Every rule `rel` breaks by including `inc` (both relative to the root)."""
    found = []
    a, b = layer_of(rel), layer_of(inc)
    if a is not None and b is not None and b > a:
        found.append(f"upward include of {inc}: {LAYERS[a]} sits below {LAYERS[b]}")
    for src, dst, why in MUST_NOT_MEET:
        if rel.startswith(src) and inc.startswith(dst):
            found.append(f"{src} includes {inc}: {why}")
    if rel.startswith("engine/") and inc.startswith("engine/"):
        for floor in ENGINE_FLOOR:
            if rel.startswith(floor) and not any(inc.startswith(f) for f in ENGINE_FLOOR[: ENGINE_FLOOR.index(floor) + 1]):
                found.append(f"{floor} includes {inc}: {floor} sits below the other engine folders")
    m_rel = re.match(r"models/([^/]+)/", rel)
    m_inc = re.match(r"models/([^/]+)/", inc)
    if m_rel and m_inc and m_rel.group(1) != m_inc.group(1):
        found.append(f"model kind {m_rel.group(1)} includes another kind's {inc}: kinds meet only in models/*.h")
    return [f"{rel}:{line_no}: {p}" for p in found]


def check(root):
    out = []
    for top in sorted({l.split("/")[0] for l in LAYERS}):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                if not name.endswith(SOURCES):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
                    for n, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        inc = resolve(root, rel, m.group(1))
                        if inc is not None:
                            out.extend(problems_of(rel, n, inc))
    return sorted(out)


def self_test(root):
    """Plants each kind of violation in a copy of the tree and expects exactly it reported."""
    plants = [
        ("engine/graph/graph.h", "launch/run/trainer.h", "upward include of launch/run/trainer.h"),
        ("core/check.h", "kernels/common/stream.h", "upward include of kernels/common/stream.h"),
        ("kernels/gelu/gelu.h", "engine/tensor/tensor.h", "upward include of engine/tensor/tensor.h"),
        ("models/model.h", "launch/run/config.h", "upward include of launch/run/config.h"),
        ("launch/run/trainer.h", "launch/bench/bench_train.h", "upward include of launch/bench/bench_train.h"),
        ("engine/backend/backend.h", "engine/graph/graph.h", "a backend reads no graph"),
        ("engine/data/shard.h", "engine/graph/graph.h", "data knows no graph"),
        ("engine/comm/comm.h", "engine/graph/graph.h", "comm knows no graph"),
        ("engine/ops/ops.h", "engine/backend/backend.h", "sits below the other engine folders"),
        ("models/ffnn/ffnn.cpp", "models/gpt/gpt.h", "includes another kind's models/gpt/gpt.h"),
    ]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="loom-layers-") as tmp:
        for top in sorted({l.split("/")[0] for l in LAYERS}):
            shutil.copytree(os.path.join(root, top), os.path.join(tmp, top),
                            ignore=lambda d, names: [n for n in names if os.path.isfile(os.path.join(d, n))
                                                     and not n.endswith(SOURCES)])
        base = check(tmp)
        if base:
            print("self-test: the unmodified tree already fails:\n" + "\n".join(base))
            return 1
        for victim, target, needle in plants:
            path = os.path.join(tmp, victim)
            if not os.path.exists(path) or not os.path.exists(os.path.join(tmp, target)):
                print(f"self-test: {victim} or {target} no longer exists; update the plants")
                failures += 1
                continue
            original = open(path, encoding="utf-8").read()
            lines = original.split("\n")
            at = next((i for i, l in enumerate(lines) if l.startswith("#include")), len(lines))
            lines.insert(at, f'#include "{target}"')
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines))
            got = check(tmp)
            want = f"{victim}:{at + 1}: "
            hits = [g for g in got if g.startswith(want) and needle in g]
            if len(got) != len(hits) or not hits:
                print(f"self-test: planting {target} in {victim} line {at + 1}: expected one report with "
                      f"'{want}...{needle}', got: {got}")
                failures += 1
            else:
                print(f"self-test: caught {hits[0]}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(original)
    print(f"self-test: {len(plants) - failures} of {len(plants)} planted violations caught")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    if args.self_test:
        return self_test(root)
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"check_layers: {len(problems)} include(s) break the stack (docs/architecture.md)")
        return 1
    print("check_layers: every include runs down the stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
