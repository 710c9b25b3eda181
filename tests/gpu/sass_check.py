"""sass_check.py: phase (e) of tests/gpu/run.sh. Reads what the compiler made of loom's kernels
and checks two things that decide their speed (docs/gpu_run.md):
  - no local memory in any kernel: no LDL/STL in the SASS (cuobjdump -sass of every
    kernels/libloom_kernel_<family>_cuda.a) and, from the build log's ptxas report (-Xptxas -v),
    no stack frame and no spill bytes. Every kernel in these libraries is on a training path,
    so every one is a hot kernel here;
  - tensor-core instructions in attention (HMMA from mma.sync, HGMMA from wgmma).
Needs no GPU: the ptxas half runs wherever the build ran; the SASS half where cuobjdump is
(the GPU machine's CUDA toolkit; this machine's has none). Prints a table per kernel, then one
summary line. Exit 0: checks passed; 1: a check failed; 77: nothing to read."""
import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys

TENSOR_CORE = ("HMMA", "HGMMA", "IMMA", "IGMMA", "QGMMA", "BMMA", "DMMA")
LOCAL = ("LDL", "STL")
# Kernels whose local memory is known and accepted, with why (docs/kernels.md): reported as
# "known", not failed. Anything else that spills fails the phase.
KNOWN_LOCAL = {
    "attention_fwd_kernel<64, true>": "the document-masked D=64 forward: ~40 B spilled at 255 registers; "
                                      "the unmasked kernel (every run without data.document_mask) does not spill",
}


def demangle(names):
    tool = shutil.which("c++filt") or shutil.which("cu++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def short(name):
    """loom::cuda::attention_fwd_kernel<64, true>(...) -> attention_fwd_kernel<64, true>."""
    name = re.sub(r"^void ", "", name.replace("(anonymous namespace)::", ""))
    depth = 0
    for i, ch in enumerate(name):  # cut the parameter list: the first '(' outside <...>
        depth += {"<": 1, ">": -1}.get(ch, 0)
        if ch == "(" and depth == 0:
            name = name[:i]
            break
    return re.sub(r"^loom::cuda::", "", name)


def ptxas_report(log):
    """{mangled kernel: dict(family, regs, stack, spill_st, spill_ld)} from a build log."""
    kernels, family, cur = {}, "?", None
    if not log or not os.path.exists(log):
        return kernels
    for line in open(log, errors="replace"):
        m = re.search(r"Building CUDA object \S*?loom_kernel_(\w+?)_cuda\.dir", line)
        if m:
            family = m.group(1)
            continue
        if re.search(r"Building CUDA object", line):
            family = None  # a test or a benchmark compiled by nvcc: not a kernel library
            continue
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            cur = m.group(1)
            if family:
                kernels[cur] = dict(family=family, regs=None, stack=0, spill_st=0, spill_ld=0)
            continue
        if cur in kernels:
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m:
                k = kernels[cur]
                k["stack"], k["spill_st"], k["spill_ld"] = (int(g) for g in m.groups())
            m = re.search(r"Used (\d+) registers", line)
            if m:
                kernels[cur]["regs"] = int(m.group(1))
    return kernels


def sass_counts(build):
    """{mangled kernel: (family, Counter of mnemonics)} from cuobjdump -sass, or None."""
    tool = shutil.which("cuobjdump")
    libs = sorted(glob.glob(os.path.join(build, "kernels", "libloom_kernel_*_cuda.a")))
    if not tool or not libs:
        return None
    kernels = {}
    for lib in libs:
        family = re.search(r"libloom_kernel_(\w+?)_cuda\.a$", lib).group(1)
        text = subprocess.run([tool, "-sass", lib], capture_output=True, text=True).stdout
        cur = None
        for line in text.splitlines():
            m = re.match(r"\s*Function\s*:\s*(\S+)", line)
            if m:
                cur = m.group(1)
                kernels[cur] = (family, collections.Counter())
                continue
            # /*0a40*/  @!P0 HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
            m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
            if m and cur:
                kernels[cur][1][m.group(1)] += 1
    return kernels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="the build folder (tests/gpu/run.sh: build-gpu)")
    ap.add_argument("--log", help="the build log with the ptxas report (-Xptxas -v)")
    a = ap.parse_args()

    ptx = ptxas_report(a.log)
    sass = sass_counts(a.build)
    if not ptx and sass is None:
        print("sass: nothing to read (no ptxas report in the build log, no cuobjdump or no kernel libraries)")
        return 77
    names = sorted(set(ptx) | set(sass or {}))
    pretty = demangle(names)
    fails = []
    rows = []
    for n in names:
        p = ptx.get(n, {})
        fam, c = (sass or {}).get(n, (p.get("family", "?"), None))
        local = sum(c[m] for m in LOCAL) if c is not None else None
        tc = sum(c[m] for m in TENSOR_CORE) if c is not None else None
        tc_kind = ",".join(m for m in TENSOR_CORE if c is not None and c[m]) or "-"
        frame = p.get("stack", 0) + p.get("spill_st", 0) + p.get("spill_ld", 0)
        bad = []
        if local:
            bad.append(f"{local} LDL/STL")
        if frame:
            bad.append(f"{p['stack']} B stack, {p['spill_st']}+{p['spill_ld']} B spills")
        known = KNOWN_LOCAL.get(short(pretty[n]))
        if bad and not known:
            fails.append(f"{short(pretty[n])}: {'; '.join(bad)}")
        status = ("known" if known else "LOCAL") if bad else "ok"
        rows.append((fam, short(pretty[n]), p.get("regs"), frame, local, tc, tc_kind, status))

    rows.sort(key=lambda r: (r[0], r[1]))
    print(f"{'family':<13} {'regs':>4} {'frame B':>7} {'LDL+STL':>7} {'tensor':>6} {'kind':<11} {'':<5} kernel")
    for fam, k, regs, frame, local, tc, kind, st in rows:
        na = lambda v: "n/a" if v is None else str(v)
        print(f"{fam:<13} {na(regs):>4} {frame:>7} {na(local):>7} {na(tc):>6} {kind:<11} {st:<5} {k[:110]}")

    attention = [r for r in rows if r[0] == "attention"]
    if sass is not None:
        with_tc = [r for r in attention if r[5]]
        if not with_tc:
            fails.append("attention: no tensor-core instruction (HMMA/HGMMA) in any kernel")
        tc_note = f"tensor cores in {len(with_tc)}/{len(attention)} attention kernels " \
                  f"({','.join(sorted({m for r in with_tc for m in r[6].split(',')})) or 'none'})"
        src = "SASS + ptxas"
    else:
        tc_note = "tensor cores not read (no cuobjdump)"
        src = "ptxas only, no cuobjdump"
    for f in fails:
        print(f"FAIL {f}")
    n_local = sum(1 for r in rows if r[7] != "ok")
    print(f"sass: {len(rows)} kernels ({src}): local memory in {n_local}; {tc_note}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
