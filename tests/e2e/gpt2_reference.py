#!/usr/bin/env python3
"""gpt2_reference.py: the PyTorch side of tests/e2e/gpt2_parity_test.cpp.

Builds a small random GPT-2-shaped model with plain torch (the forward pass written out
below, nanoGPT style: pre-LN blocks, causal attention, GELU tanh form, LayerNorm eps 1e-5,
classifier tied to wte), saves it as GPT-2-named safetensors (Conv1D layout: projection
weights [in, out]), runs forward + backward on the given tokens and saves logits, loss and
every parameter's gradient (under its GPT-2 name, GPT-2 layout) as safetensors too.

The reference runs in float64 from the float32 weights that were saved, so what the C++
test measures is loom's own float32 error. The safetensors files are written with
struct + json: no dependency beyond torch (and the numpy it brings).

Files written into --out:
  model.safetensors       F32, GPT2LMHeadModel names ("transformer." prefix), with
                          lm_head.weight (= wte) and the attn.bias / attn.masked_bias
                          buffers that older transformers versions saved
  model_bf16.safetensors  the same weights rounded to BF16, bare GPT2Model names
  model_f16.safetensors   the same weights rounded to F16, bare names
  reference.safetensors   F64: "logits" [B, T, V], "loss" [1], "grad.<name>" per parameter
"""
import argparse
import json
import math
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16"}


def save_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor). 8-byte header length, JSON header, raw LE data."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        # bf16 has no numpy type: take the bytes through a same-sized integer view.
        raw = (t.view(torch.int16) if t.dtype in (torch.bfloat16, torch.float16) else t).numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # data aligned to 8 bytes, as the format recommends
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def param_names(n_layer):
    names = ["wte.weight", "wpe.weight"]
    for l in range(n_layer):
        for s in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                  "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                  "mlp.c_proj.weight", "mlp.c_proj.bias"):
            names.append(f"h.{l}.{s}")
    return names + ["ln_f.weight", "ln_f.bias"]


def random_params(n_layer, C, V, P, seed):
    """Random everywhere (never zeros or ones), scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    rn = lambda *shape, std: torch.randn(*shape, generator=g) * std
    p = {"wte.weight": rn(V, C, std=0.3), "wpe.weight": rn(P, C, std=0.3)}
    for l in range(n_layer):
        b = f"h.{l}."
        for ln in ("ln_1", "ln_2"):
            p[b + ln + ".weight"] = 1.0 + rn(C, std=0.1)
            p[b + ln + ".bias"] = rn(C, std=0.1)
        # Conv1D: weight [in, out], y = x @ W + b
        for name, (i, o) in (("attn.c_attn", (C, 3 * C)), ("attn.c_proj", (C, C)), ("mlp.c_fc", (C, 4 * C)),
                             ("mlp.c_proj", (4 * C, C))):
            p[b + name + ".weight"] = rn(i, o, std=1.0 / math.sqrt(i))
            p[b + name + ".bias"] = rn(o, std=0.1)
    p["ln_f.weight"] = 1.0 + rn(C, std=0.1)
    p["ln_f.bias"] = rn(C, std=0.1)
    return {k: v.float() for k, v in p.items()}


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(p, idx, n_layer, n_head):
    B, T = idx.shape
    C = p["wte.weight"].shape[1]
    D = C // n_head
    ln = lambda x, pre: F.layer_norm(x, (C,), p[pre + ".weight"], p[pre + ".bias"], eps=1e-5)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    x = p["wte.weight"][idx] + p["wpe.weight"][:T]
    for l in range(n_layer):
        b = f"h.{l}."
        qkv = ln(x, b + "ln_1") @ p[b + "attn.c_attn.weight"] + p[b + "attn.c_attn.bias"]
        q, k, v = (t.view(B, T, n_head, D).transpose(1, 2) for t in qkv.split(C, dim=2))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[b + "attn.c_proj.weight"] + p[b + "attn.c_proj.bias"]
        h = gelu_tanh(ln(x, b + "ln_2") @ p[b + "mlp.c_fc.weight"] + p[b + "mlp.c_fc.bias"])
        x = x + h @ p[b + "mlp.c_proj.weight"] + p[b + "mlp.c_proj.bias"]
    return ln(x, "ln_f") @ p["wte.weight"].t()  # tied classifier


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--positions", type=int, default=16, help="rows of wpe")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", required=True, help="B*T comma-separated ids")
    ap.add_argument("--targets", required=True, help="B*T comma-separated ids")
    a = ap.parse_args()

    params = random_params(a.n_layer, a.d_model, a.vocab, a.positions, a.seed)
    names = param_names(a.n_layer)
    assert sorted(names) == sorted(params)
    P = a.positions
    hf = [("transformer." + n, params[n]) for n in names]
    for l in range(a.n_layer):  # Hugging Face's attention buffers, which an importer must skip
        hf.append((f"transformer.h.{l}.attn.bias", torch.tril(torch.ones(P, P)).view(1, 1, P, P)))
        hf.append((f"transformer.h.{l}.attn.masked_bias", torch.tensor(-1e4)))
    hf.append(("lm_head.weight", params["wte.weight"]))
    save_safetensors(f"{a.out}/model.safetensors", hf, {"format": "pt"})
    save_safetensors(f"{a.out}/model_bf16.safetensors", [(n, params[n].bfloat16()) for n in names])
    save_safetensors(f"{a.out}/model_f16.safetensors", [(n, params[n].half()) for n in names])

    tokens = torch.tensor([int(t) for t in a.tokens.split(",")]).view(a.batch, -1)
    targets = torch.tensor([int(t) for t in a.targets.split(",")]).view(a.batch, -1)
    p64 = {k: v.double().requires_grad_(True) for k, v in params.items()}
    logits = forward(p64, tokens, a.n_layer, a.n_head)
    loss = F.cross_entropy(logits.view(-1, a.vocab), targets.view(-1))  # mean over B*T
    loss.backward()
    out = [("logits", logits), ("loss", loss.view(1))] + [("grad." + n, p64[n].grad) for n in names]
    save_safetensors(f"{a.out}/reference.safetensors", out)
    print(f"gpt2_reference: torch {torch.__version__}, loss {loss.item():.6f}", file=sys.stderr)


if __name__ == "__main__":
    main()
