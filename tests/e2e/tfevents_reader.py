#!/usr/bin/env python3
# tfevents_reader.py: an independent reader of a run's TensorBoard event files, for
# tests/e2e/tensorboard_test.cpp. It shares nothing with loom's writer but the schema: records
# are unframed by hand and checked with Debian's python3-crc32c, events decoded by Debian's
# python3-protobuf from tensorboard_pb2.py (protoc --python_out on launch/run/tensorboard.proto,
# generated at build time), and every scalar is compared with the run's metrics.jsonl.
#
# Usage: tfevents_reader.py PB2_DIR RUN_DIR [--files N]
# Exit 0: every check holds (prints a summary); 1: a check failed (says which); 77: Python lacks
# protobuf or crc32c (the caller skips, saying why).
import glob
import json
import math
import os
import struct
import sys

try:
    import crc32c
    from google.protobuf import message as pb_message  # noqa: F401 (proves protobuf is there)
except ImportError as e:
    print(f"{sys.executable}: {e} (Debian packages python3-protobuf, python3-crc32c)")
    sys.exit(77)

# metrics.jsonl key -> TensorBoard tag: what a loom run promises to show.
SCALARS = {
    "loss": "train/loss",
    "val_loss": "val/loss",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "perf/tokens_per_s",
    "mfu": "perf/mfu",
}


def fail(msg):
    print(f"tfevents_reader: {msg}")
    sys.exit(1)


def masked_crc(data):
    c = crc32c.crc32c(data) & 0xFFFFFFFF
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    """The records of a TFRecord file, every CRC checked; a torn or bad record fails."""
    data = open(path, "rb").read()
    at, out = 0, []
    while at < len(data):
        if len(data) - at < 12:
            fail(f"{path}: torn header at byte {at}")
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[at + 8:at + 12])
        if hcrc != masked_crc(header):
            fail(f"{path}: bad length CRC at byte {at}")
        end = at + 12 + length
        if end + 4 > len(data):
            fail(f"{path}: torn record at byte {at}")
        body = data[at + 12:end]
        (dcrc,) = struct.unpack("<I", data[end:end + 4])
        if dcrc != masked_crc(body):
            fail(f"{path}: bad data CRC at byte {at}")
        out.append(body)
        at = end + 4
    return out


def as_float32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main():
    if len(sys.argv) < 3:
        fail("usage: tfevents_reader.py PB2_DIR RUN_DIR [--files N]")
    sys.path.insert(0, sys.argv[1])
    import tensorboard_pb2 as tb

    run = sys.argv[2]
    want_files = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--files" else None
    files = sorted(glob.glob(os.path.join(run, "tb", "events.out.tfevents.*")))
    if not files:
        fail(f"{run}/tb: no event files")
    if want_files is not None and len(files) != want_files:
        fail(f"{run}/tb: {len(files)} event files, expected {want_files}")

    # step -> {tag: value}, later files superseding earlier ones from their START step on, as
    # TensorBoard does with a restarted run.
    scalars = {}
    config_text = None
    for path in files:
        events = []
        for body in records(path):
            e = tb.Event()
            e.ParseFromString(body)
            events.append(e)
        if not events or events[0].WhichOneof("what") != "file_version" or events[0].file_version != "brain.Event:2":
            fail(f"{path}: the first event is not file_version brain.Event:2")
        for e in events[1:]:
            kind = e.WhichOneof("what")
            if kind == "session_log":
                if e.session_log.status != tb.SessionLog.START:
                    fail(f"{path}: unexpected session log {e.session_log}")
                scalars = {s: v for s, v in scalars.items() if s < e.step}
            elif kind == "summary":
                for v in e.summary.value:
                    if v.WhichOneof("value") == "simple_value":
                        step = scalars.setdefault(e.step, {})
                        if v.tag in step:
                            fail(f"{path}: step {e.step} has {v.tag} twice (no START event before it)")
                        step[v.tag] = v.simple_value
                    elif v.metadata.plugin_data.plugin_name == "text":
                        if v.tag != "config" or v.tensor.dtype != tb.DT_STRING or len(v.tensor.string_val) != 1:
                            fail(f"{path}: malformed text summary {v.tag}")
                        config_text = v.tensor.string_val[0].decode()
                    else:
                        fail(f"{path}: summary value {v.tag} is neither a scalar nor text")
            else:
                fail(f"{path}: unexpected event {kind} at step {e.step}")

    # The config, shown as a Markdown code block: each line indented four spaces.
    config = open(os.path.join(run, "config.toml")).read()
    if config_text is None:
        fail("no config text summary")
    unindented = "\n".join(line[4:] if line.startswith("    ") else line for line in config_text.split("\n"))
    if unindented != config:
        fail(f"the config text differs from config.toml:\n{config_text}")

    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl")) if line.strip()]
    if not metrics:
        fail("metrics.jsonl is empty")
    checked = 0
    for m in metrics:
        step = m["step"]
        got = scalars.pop(step, None)
        if got is None:
            fail(f"step {step}: in metrics.jsonl, not in the event files")
        want = {tag: m[key] for key, tag in SCALARS.items() if key in m}
        want["train/skipped"] = 1.0 if m.get("skipped") else 0.0
        want.update({k: v for k, v in m.items() if k.startswith("mc/")})
        if set(got) != set(want):
            fail(f"step {step}: tags {sorted(got)}, expected {sorted(want)}")
        for tag, w in want.items():
            g = got[tag]
            ok = (w is None and not math.isfinite(g)) or (w is not None and g == as_float32(w))
            if not ok:
                fail(f"step {step}: {tag} = {g}, metrics.jsonl says {w}")
            checked += 1
    if scalars:
        fail(f"steps {sorted(scalars)} are in the event files but not in metrics.jsonl")
    print(f"tfevents_reader: {len(files)} files, {len(metrics)} steps, {checked} scalars match metrics.jsonl")


main()
