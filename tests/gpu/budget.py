"""budget.py: the budget table of tests/gpu/rehearse.sh. Reads run.sh's plan (run.sh --plan), the
summary.md of a run made here without a device, and that run's build folder, and says what each
phase will take on the GPU machine (16 cores):
  - build: the build's steps replayed on 16 cores. Each step's time is its CPU-seconds alone
    (user + sys, from steptime.sh, the launcher the rehearsal configures), not its wall time on
    this machine's 2 shared cores; a step without that record (archives, CMake's own) keeps its
    wall time from .ninja_log. Without the launcher's log, every wall time is scaled by (the
    build's CPU-seconds / the steps' summed wall times). Steps start as ninja starts them, longest
    remaining chain first, in the order build.ninja allows. The build's CPU-seconds come from
    run.sh's own measure (bash `times`, every process the phase waited for).
  - setup and sass: their wall time here (configure is serial; sass reads files).
  - the GPU phases: their plan (they are bounded by it; no device here to measure).
Exit 1 when the plan sums to more than --max seconds or an estimate exceeds its phase's plan."""
import argparse
import heapq
import os
import re
import sys


def read_plan(text):
    plan, reserve = {}, 0
    for line in text.strip().splitlines():
        name, secs = line.split()
        if name == "reserve":
            reserve = int(secs)
        elif name != "total":
            plan[name] = int(secs)
    return plan, reserve


def read_summary(path):
    """{phase: (status, used s, cpu s or None)} from run.sh's summary.md."""
    rows = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"\d+", cells[3] or "x"):
            cpu = int(cells[4]) if cells[4].isdigit() else None
            rows[cells[0]] = (cells[1], int(cells[3]), cpu)
    return rows


def read_ninja(build):
    """Edges of build.ninja: list of (outputs, inputs); and the last duration (s) per output."""
    text = open(os.path.join(build, "build.ninja")).read().replace("$\n", " ")
    edges = []
    for line in text.splitlines():
        if not line.startswith("build "):
            continue
        line = line[6:].replace("$ ", "\0").replace("$:", "\1")
        outs, rest = line.split(":", 1)
        parts = rest.split()
        ins = [p for p in parts[1:] if p not in ("|", "||", "|@")]
        fix = lambda s: s.replace("\0", " ").replace("\1", ":")
        edges.append(([fix(o) for o in outs.replace("|", " ").split()], [fix(i) for i in ins]))
    dur = {}
    log = os.path.join(build, ".ninja_log")
    for line in open(log):
        if line.startswith("#"):
            continue
        start, end, _, out, _ = line.rstrip("\n").split("\t")
        dur[out] = (int(end) - int(start)) / 1000.0
    return edges, dur


def read_steps(path):
    """{output: CPU seconds} from steptime.sh's log."""
    steps = {}
    if path and os.path.exists(path):
        for line in open(path):
            f = line.split()
            if len(f) >= 4 and f[3] != "-":
                steps[f[3]] = float(f[0]) + float(f[1])
    return steps


def replay(edges, dur, steps, cores, cpu_total):
    """(makespan on `cores`, critical path, how each step was timed) of the build's steps."""
    node_dur = []
    producer = {}
    timed = 0
    for i, (outs, _) in enumerate(edges):
        cpu = [steps[o] for o in outs if o in steps]
        if cpu:
            timed += 1
        node_dur.append(max(cpu) if cpu else max((dur.get(o, 0.0) for o in outs), default=0.0))
        for o in outs:
            producer[o] = i
    if timed:
        how = f"{timed} steps by their own CPU-s"
    else:
        wall_sum = sum(node_dur)
        scale = min(1.0, cpu_total / wall_sum) if cpu_total and wall_sum else 1.0
        node_dur = [d * scale for d in node_dur]
        how = f"steps' wall x {scale:.2f}"
    deps = [sorted({producer[i] for i in ins if i in producer and producer[i] != e}) for e, (_, ins) in enumerate(edges)]
    users = [[] for _ in edges]
    for e, ds in enumerate(deps):
        for d in ds:
            users[d].append(e)
    # Longest chain from each step to the end (its priority), by a reverse topological pass.
    order, indeg = [], [len(ds) for ds in deps]
    ready = [e for e in range(len(edges)) if indeg[e] == 0]
    while ready:
        e = ready.pop()
        order.append(e)
        for u in users[e]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    tail = [0.0] * len(edges)
    for e in reversed(order):
        tail[e] = node_dur[e] + max((tail[u] for u in users[e]), default=0.0)
    critical = max(tail, default=0.0)
    # List scheduling on `cores` slots.
    indeg = [len(ds) for ds in deps]
    ready = [(-tail[e], e) for e in range(len(edges)) if indeg[e] == 0]
    heapq.heapify(ready)
    running, now, free = [], 0.0, cores
    while ready or running:
        while ready and free:
            _, e = heapq.heappop(ready)
            if node_dur[e] == 0:  # phony and up-to-date steps take no slot
                for u in users[e]:
                    indeg[u] -= 1
                    if indeg[u] == 0:
                        heapq.heappush(ready, (-tail[u], u))
                continue
            heapq.heappush(running, (now + node_dur[e], e))
            free -= 1
        if not running:
            continue
        now, e = heapq.heappop(running)
        free += 1
        for u in users[e]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, (-tail[u], u))
    return now, critical, how


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True, help="the output of tests/gpu/run.sh --plan")
    ap.add_argument("--summary", required=True, help="summary.md of the rehearsal's run")
    ap.add_argument("--build", required=True, help="its build folder")
    ap.add_argument("--steps", help="steptime.sh's log: CPU seconds per build step")
    ap.add_argument("--cores", type=int, default=16)
    ap.add_argument("--max", type=int, default=420, help="seconds the whole run.sh may take")
    a = ap.parse_args()

    plan, reserve = read_plan(open(a.plan).read())
    if not os.path.exists(a.summary):
        print(f"budget: no {a.summary}: run.sh did not start")
        return 1
    rows = read_summary(a.summary)
    problems = []
    lines = []
    est_total = 0
    for phase, limit in plan.items():
        status, used, cpu = rows.get(phase, ("not run", None, None))
        here = f"{used} s" if used is not None else "-"
        if phase == "build" and used is not None:
            edges, dur = read_ninja(a.build)
            span, critical, timing = replay(edges, dur, read_steps(a.steps), a.cores, cpu or 0)
            est = span
            how = (f"{len(dur)} steps ({timing}), {cpu} CPU-s here: "
                   f"{cpu / a.cores if cpu else 0:.0f} s of work per core, critical path {critical:.0f} s, "
                   f"replayed on {a.cores} cores")
        elif phase in ("setup", "sass") and used is not None:
            est, how = float(used), "as here"
        else:
            est, how = float(limit), "its plan (needs the GPU)"
        if status not in ("ok",) and not status.startswith("skip"):
            problems.append(f"{phase}: {status} here")
        if est > limit:
            problems.append(f"{phase}: estimate {est:.0f} s exceeds its plan of {limit} s")
        est_total += est
        lines.append(f"| {phase} | {limit} | {status} | {here} | {cpu if cpu is not None else '-'} | {est:.0f} | {how} |")
    plan_total = sum(plan.values()) + reserve
    est_total += reserve
    if plan_total > a.max:
        problems.append(f"the plan sums to {plan_total} s, over {a.max}")
    print(f"| phase | plan s (GPU machine) | here: status | here: used | here: CPU s | estimate s ({a.cores} cores) | how |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print(f"| reserve | {reserve} | | | | {reserve} | digest and table |")
    print(f"| total | {plan_total} | {'ok' if not problems else 'NOT OK'} | | | {est_total:.0f} | at most {a.max} s |")
    for p in problems:
        print(f"budget: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
