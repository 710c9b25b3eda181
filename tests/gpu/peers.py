"""peers.py: PyTorch side-by-side numbers for tests/gpu/run.sh, on the same shapes as
`loom bench kernels` and `loom bench train`: SDPA (causal; cuDNN / flash backends), layer
norm, fused AdamW, nn.LSTM (one layer, forward and forward+backward), and a GPT-2 124M training
step (bf16 autocast, B=16 T=1024 as `loom bench train` in run.sh). Median of CUDA events.
Exits 77 (run.sh: skipped) without PyTorch or without a CUDA device."""
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"peers: no PyTorch ({e}): skipped")
    sys.exit(77)
if not torch.cuda.is_available():
    print(f"peers: no device (torch {torch.__version__} sees no CUDA device): skipped")
    sys.exit(77)


def t_ms(fn, warm=5, reps=20):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


dev = "cuda"
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
for D, H in ((64, 12), (128, 16)):
    B, T = 4, 2048
    q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    fl = 4 * B * H * T * T * D / 2
    for name, backend in (("cudnn", torch.nn.attention.SDPBackend.CUDNN_ATTENTION),
                          ("flash", torch.nn.attention.SDPBackend.FLASH_ATTENTION)):
        try:
            with torch.nn.attention.sdpa_kernel(backend):
                f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
                ms = t_ms(f)
                o = f()
                g = torch.randn_like(o)
                msb = t_ms(lambda: torch.autograd.grad(o, (q, k, v), g, retain_graph=True))
            print(f"sdpa[{name}] D{D} B{B} H{H} T{T}: fwd {ms:.3f} ms {fl / ms / 1e9:.1f} TFLOP/s | "
                  f"bwd {msb:.3f} ms {2.5 * fl / msb / 1e9:.1f} TFLOP/s")
        except Exception as e:  # a backend may not support this shape or build
            print(f"sdpa[{name}] D{D}: unavailable ({type(e).__name__})")

N, C = 4096, 768
x = torch.randn(N, C, device=dev, dtype=torch.bfloat16)
ln = torch.nn.LayerNorm(C, device=dev, dtype=torch.bfloat16)
ms = t_ms(lambda: ln(x))
print(f"layer_norm {N}x{C}: {ms:.4f} ms {2 * N * C * 2 / ms / 1e6:.1f} GB/s")
P = 124475904
p = torch.nn.Parameter(torch.randn(P, device=dev))
p.grad = torch.randn(P, device=dev)
opt = torch.optim.AdamW([p], lr=1e-4, fused=True)
ms = t_ms(opt.step)
print(f"adamw(fused) {P} params: {ms:.3f} ms {P * 16 * 2 / ms / 1e6:.1f} GB/s (f32 p,m,v rw + g read)")


# nn.LSTM, one unidirectional layer, input size = hidden size, the shapes of the "lstm cudnn"
# rows of `loom bench kernels`. A bf16 module (PyTorch sends bf16 LSTMs to cuDNN from cuDNN 9.13;
# fp16 if bf16 is refused). FLOPs count the gate GEMMs only: 2*4H*(I+H)*B*T forward, 3x for
# forward + backward (grads of the input and the weights).
print(f"cudnn {torch.backends.cudnn.version()} (enabled {torch.backends.cudnn.enabled})")
for H, B, T in ((512, 64, 128), (1024, 32, 128), (256, 128, 256)):
    fl = 2 * 4 * H * (H + H) * B * T
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        try:
            lstm = torch.nn.LSTM(H, H, num_layers=1, device=dev, dtype=dt)
            x = torch.randn(T, B, H, device=dev, dtype=dt, requires_grad=True)
            g = torch.randn(T, B, H, device=dev, dtype=dt)
            params = tuple(lstm.parameters())
            ms = t_ms(lambda: lstm(x))

            def fwd_bwd():
                y, _ = lstm(x)
                torch.autograd.grad(y, (x, *params), g)

            msb = t_ms(fwd_bwd)
            print(f"torch nn.LSTM H={H} B={B} T={T} ({name}): fwd {ms:.3f} ms {fl / ms / 1e9:.1f} TFLOP/s | "
                  f"fwd+bwd {msb:.3f} ms {3 * fl / msb / 1e9:.1f} TFLOP/s")
            break
        except Exception as e:  # bf16 needs a recent cuDNN; fall back to fp16
            print(f"torch nn.LSTM H={H} B={B} T={T} ({name}): unavailable ({type(e).__name__}: {str(e)[:100]})")


class Block(torch.nn.Module):
    def __init__(s, C, H):
        super().__init__()
        s.ln1, s.ln2 = torch.nn.LayerNorm(C), torch.nn.LayerNorm(C)
        s.qkv, s.proj = torch.nn.Linear(C, 3 * C), torch.nn.Linear(C, C)
        s.fc, s.fc2 = torch.nn.Linear(C, 4 * C), torch.nn.Linear(4 * C, C)
        s.H = H

    def forward(s, x):
        B, T, C = x.shape
        q, k, v = s.qkv(s.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, s.H, C // s.H).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + s.proj(a)
        return x + s.fc2(F.gelu(s.fc(s.ln2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(s, L=12, C=768, H=12, V=50304, T=1024):
        super().__init__()
        s.wte, s.wpe = torch.nn.Embedding(V, C), torch.nn.Embedding(T, C)
        s.blocks = torch.nn.ModuleList(Block(C, H) for _ in range(L))
        s.lnf = torch.nn.LayerNorm(C)

    def forward(s, idx, tgt):
        x = s.wte(idx) + s.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in s.blocks:
            x = b(x)
        logits = s.lnf(x) @ s.wte.weight.t()
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tgt.view(-1))


B, T = 16, 1024
m = GPT().to(dev)
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
idx = torch.randint(0, 50304, (B, T), device=dev)


def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = m(idx, idx)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


ms = t_ms(step, warm=3, reps=10)
n = sum(p.numel() for p in m.parameters()) - m.wpe.weight.numel()
flops = (6 * n + 12 * 12 * 768 * T) * B * T
print(f"torch GPT-2 124M step B{B} T{T} (eager, bf16 autocast): {ms:.1f} ms, {B * T / ms * 1e3:.0f} tok/s, "
      f"MFU {flops / ms / 1e9 / 989 * 100:.1f}% of 989 TFLOP/s")
