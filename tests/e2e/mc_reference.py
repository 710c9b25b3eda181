#!/usr/bin/env python3
"""mc_reference.py: the PyTorch side of the parity test in tests/e2e/mc_eval_test.cpp.

Writes a small random GPT-2-shaped model (gpt2_reference.py's weights and hand-written
forward pass, no transformers library) as GPT-2-named safetensors, then scores a
multiple-choice task file in HellaSwag's format the way llm.c's dev/data/hellaswag.py does:
the context and " " + each ending tokenized apart (here by the byte tokenizer: a token is a
byte), every ending's tokens scored by cross-entropy given all tokens before them, and the
choices argmin(mean loss per token) (llm.c's acc_norm), argmin(summed loss) (llm.c's acc) and
argmin(summed loss per byte of " " + ending). A row longer than the model's window keeps its
last `positions` + 1 tokens (the context loses tokens on the left), as loom cuts it.

The forward pass runs in float64 from the float32 weights that were saved, so what the C++
test measures is loom's own float32 error.

Files written into --out:
  model.safetensors  F32, GPT2LMHeadModel names (gpt2_reference.py's layout)
  reference.json     one object per example: line, label, loss_sum, tokens, choice,
                     choice_sum, choice_bytes
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_reference import forward, param_names, random_params, save_safetensors  # noqa: E402


def argmin(xs):
    """The first index of the smallest value (torch.argmin's rule on ties)."""
    return min(range(len(xs)), key=lambda i: (xs[i], i))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", required=True, help="JSONL in HellaSwag's format")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--positions", type=int, default=64, help="rows of wpe: the model's window")
    a = ap.parse_args()

    V, P = 256, a.positions
    params = random_params(a.n_layer, a.d_model, V, P, a.seed)
    names = param_names(a.n_layer)
    save_safetensors(f"{a.out}/model.safetensors", [("transformer." + n, params[n]) for n in names],
                     {"format": "pt"})
    p64 = {k: v.double() for k, v in params.items()}

    results = []
    with open(a.task, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            ex = json.loads(line)
            ctx = list(ex["ctx"].encode("utf-8"))
            sums, counts, nbytes = [], [], []
            for end in ex["endings"]:
                end_text = (" " + end).encode("utf-8")
                end_toks = list(end_text)
                full = ctx + end_toks
                n = min(len(full), P + 1)
                row = full[-n:]
                first = max(1, n - min(len(end_toks), n))
                with torch.no_grad():
                    logits = forward(p64, torch.tensor([row[:-1]]), a.n_layer, a.n_head)[0]
                    losses = F.cross_entropy(logits, torch.tensor(row[1:]), reduction="none")
                scored = losses[first - 1:]
                sums.append(scored.sum().item())
                counts.append(scored.numel())
                nbytes.append(len(end_text))
            means = [s / c for s, c in zip(sums, counts)]
            results.append({
                "line": line_no,
                "label": int(ex["label"]),
                "loss_sum": sums,
                "tokens": counts,
                "choice": argmin(means),
                "choice_sum": argmin(sums),
                "choice_bytes": argmin([s / b for s, b in zip(sums, nbytes)]),
            })
    with open(f"{a.out}/reference.json", "w") as f:
        json.dump(results, f)
    print(f"mc_reference: torch {torch.__version__}, {len(results)} examples", file=sys.stderr)


if __name__ == "__main__":
    main()
