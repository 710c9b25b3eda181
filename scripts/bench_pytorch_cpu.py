#!/usr/bin/python3
"""bench_pytorch_cpu.py: the PyTorch side of docs/performance.md's CPU comparison.

The GPT of `loom bench train --model gpt` written in plain PyTorch (pre-norm blocks, tanh GELU,
biases everywhere, learned positions, LM head tied to the token embedding), trained with AdamW
on random tokens, timed like loom's benchmark: median step over --steps after --warmup steps.
It prints tokens/s and GFLOP/s from the same FLOP count loom uses (6N for the parameters of
the matrix products, wpe excluded, plus attention's 12·L·T·C, counted full), so the two
rates compare directly. Needs Debian's python3-torch (hence /usr/bin/python3).

Usage (same shape as loom's benchmark, two threads as the machine has two cores):
  /usr/bin/python3 scripts/bench_pytorch_cpu.py --n-layer 4 --d-model 256 --n-head 4 \\
      --vocab 8192 --batch 4 --seq-len 256 --steps 10 --threads 2
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, n_head, seq_len):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.fc, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.register_buffer("mask", torch.ones(seq_len, seq_len, dtype=torch.bool).tril())

    def attention(self, x):
        b, t, c = x.shape
        d = c // self.n_head
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d).transpose(1, 2) for z in (q, k, v))
        s = (q @ k.transpose(-2, -1)) / math.sqrt(d)
        s = s.masked_fill(~self.mask[:t, :t], float("-inf"))
        o = F.softmax(s, dim=-1) @ v
        return self.proj(o.transpose(1, 2).reshape(b, t, c))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.wte = nn.Embedding(a.vocab, a.d_model)
        self.wpe = nn.Embedding(a.seq_len, a.d_model)
        self.blocks = nn.ModuleList(Block(a.d_model, a.n_head, a.seq_len) for _ in range(a.n_layer))
        self.ln_f = nn.LayerNorm(a.d_model)

    def forward(self, tokens, targets):
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied head, as loom's GPT
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    model = Gpt(a)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    tokens = torch.randint(a.vocab, (a.batch, a.seq_len))
    targets = torch.randint(a.vocab, (a.batch, a.seq_len))

    n_params = sum(q.numel() for q in model.parameters())
    n_matmul = n_params - model.wpe.weight.numel()
    flops_per_token = 6 * n_matmul + 12 * a.n_layer * a.seq_len * a.d_model
    ms = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # loom clips at norm 1 too
        opt.step()
        if s >= a.warmup:
            ms.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(ms)
    tok_s = a.batch * a.seq_len / (med / 1000)
    print(f"pytorch {torch.__version__} cpu | {a.threads} threads | gpt L={a.n_layer} H={a.n_head} C={a.d_model} "
          f"T={a.seq_len} V={a.vocab} | batch {a.batch} | {n_params} parameters")
    print(f"median {med:.1f} ms/step over {a.steps} steps (after {a.warmup} warm-up) | {tok_s:.0f} tokens/s | "
          f"{tok_s * flops_per_token / 1e9:.2f} GFLOP/s ({flops_per_token / 1e6:.1f} MFLOP/token)")


if __name__ == "__main__":
    main()
