"""Low-bit GEMM kernels against torch fp16 matmul and torch._int_mm (CUDA).

    python benchmarks/lowbit_kernels.py [--quick] [--out benchmarks/results]
    python benchmarks/lowbit_kernels.py --smoke      # no GPU: a tiny exactness run in Triton's interpreter
    python benchmarks/lowbit_kernels.py --dry-run    # no GPU: this whole benchmark on the CPU at tiny
                                                     # sizes (interpreter, wall-clock times): checks
                                                     # that it runs and writes its files; measures nothing
    python benchmarks/lowbit_kernels.py --compile 90 [--only bwta]  # no GPU needed: compile every autotune config
                                                     # for sm_90 and print registers, spills, shared
                                                     # memory and the instructions that matter

Two regimes, all operands on the GPU, weights b as [N, K] (one row per output channel):
  compute-bound   M = N = K in 1024, 2048, 4096, 8192
  memory-bound    M (batch) in 1, 4, 8, 16 with 8192 x 8192 weights: the time is the weight
                  traffic, so int8 / int4 / binary weights move 2x / 4x / 16x fewer bytes than fp16

Variants: torch fp16 (a @ b.T, cuBLAS), torch._int_mm (cuBLASLt int8 -> int32; needs M > 16),
ours int8 -> int32, ours int8 / int4 / binary / bwta with the fused dequantisation epilogue (per-channel
weight scale x per-tensor activation scale + bias, fp16 out), which is what a layer runs.
Before timing, every kernel's int32 result is checked bit for bit (against torch._int_mm or the
exact float64 reference). Times are medians of triton.testing.do_bench, which flushes the L2
cache before each call (an 8192^2 int4 or binary weight would otherwise stay in H100's 50 MB L2).

Throughput is in T(FL)OPS = 2*M*N*K / time (a binary MAC counts as 2 ops, like a fp16 FMA).
The goals (issue #6, H100) are marked PASS/FAIL:
  int8 (fused) >= 1.6x fp16 at 4096^3; int4 >= 3x and binary >= 8x fp16 for every batch <= 16;
  BWTA (ternary activations, 2 bits packed, x binary weights; robustart.kernels.bwta) >= 8x fp16
  for every batch <= 16 (its weights move as few bytes as binary's) and, compute-bound at 8192^3,
  >= 40% of its popcount ceiling (two popcounts per 32-bit word: half the binary one).
Writes lowbit_kernels_<device>.md and .json to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

# Dense (no sparsity) peaks from NVIDIA's data sheets, as tabulated at
# https://glennklockwood.com/garden/processors/h100 (H100 SXM5: FP16/BF16 989.4, INT8 1978.9 TOPS,
# 132 SMs, 1.98 GHz CUDA-core clock) and https://archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html
# (H100 SXM / PCIe sheet, sparse figures = 2x dense; HBM 3,350 / 2,000 GB/s); H200 = H100 SXM
# compute with 4.8 TB/s HBM3e (NVIDIA H200 data sheet). popc: 16 per clock per SM for compute
# capability 7.x-9.0 (CUDA C++ Programming Guide, "Throughput of Native Arithmetic Instructions").
CEILINGS = {
    # name substring: fp16 dense TFLOPS, int8 dense TOPS, HBM TB/s, SMs, CUDA-core boost GHz
    "H100 PCIe": dict(fp16=756.5, int8=1513.0, hbm=2.0, sms=114, ghz=1.755),
    "H100": dict(fp16=989.4, int8=1978.9, hbm=3.35, sms=132, ghz=1.98),  # SXM5 ("H100 80GB HBM3")
    "H200": dict(fp16=989.4, int8=1978.9, hbm=4.8, sms=132, ghz=1.98),
    "A100-SXM4-80GB": dict(fp16=312.0, int8=624.0, hbm=2.039, sms=108, ghz=1.41),
}
POPC_PER_CLK_PER_SM = 16

GOALS = {"int8_4096": 1.6, "int4_membound": 3.0, "binary_membound": 8.0, "bwta_membound": 8.0,
         "bwta_popc_share": 0.4}


def ceilings_for(name: str) -> dict | None:
    for key, c in CEILINGS.items():  # first match: "H100 PCIe" before "H100"
        if key in name:
            c = dict(c, match=key)
            # binary ceiling on CUDA cores: one popc handles a 32-bit word = 32 MACs = 64 ops
            c["binary_popc"] = POPC_PER_CLK_PER_SM * c["sms"] * c["ghz"] * 1e9 * 64 / 1e12
            return c
    return None


def bench_ms(fn) -> float:
    if not torch.cuda.is_available():  # --dry-run: wall clock, median of 3
        import time

        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return 1e3 * sorted(times)[1]
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def measured_hbm_tbs(device: str = "cuda") -> float:
    """Achieved copy bandwidth (read + write) of a 1 GiB buffer: the practical memory ceiling."""
    x = torch.empty(2**30 if device == "cuda" else 2**24, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    ms = bench_ms(lambda: y.copy_(x))
    return 2 * x.numel() / (ms * 1e-3) / 1e12


def operands(m, n, k, gen):
    from robustart import kernels as K

    dev = gen.device
    a8 = torch.randint(-128, 128, (m, k), dtype=torch.int8, device=dev, generator=gen)
    b8 = torch.randint(-128, 128, (n, k), dtype=torch.int8, device=dev, generator=gen)
    w4 = torch.randint(-8, 8, (n, k), dtype=torch.int8, device=dev, generator=gen)
    from robustart.kernels import bwta as KB

    at = torch.div(a8.to(torch.int16), 43, rounding_mode="trunc").clamp(-1, 1)  # ternary, about 1/3 zeros
    am, asg = KB.pack_ternary(at)
    return dict(
        a8=a8, b8=b8, w4=w4, p4=K.pack_int4(w4), am=am, asg=asg,
        abits=K.pack_bits(a8), bbits=K.pack_bits(b8),
        a16=(a8.to(torch.float16) / 128), b16=(b8.to(torch.float16) / 128),
        b_scale=torch.rand(n, device=dev, generator=gen) / 100, bias=torch.randn(n, device=dev, generator=gen),
    )


def check_exact(o, m, n, k) -> str:
    """Bit-exact int32 checks of our kernels on these operands; returns 'ok' or raises."""
    from robustart import kernels as K
    from robustart.kernels import reference as R

    ours = K.int8_gemm_i32(o["a8"], o["b8"], backend="triton")
    ref = torch._int_mm(o["a8"], o["b8"].t()) if m > 16 else R.int8_gemm_i32(o["a8"], o["b8"])
    assert torch.equal(ours, ref), f"int8 {m}x{n}x{k} differs from the reference"
    ours = K.int4_gemm_i32(o["a8"], o["p4"], k, backend="triton")
    assert torch.equal(ours, R.int8_gemm_i32(o["a8"], o["w4"])), f"int4 {m}x{n}x{k} differs"
    ours = K.binary_gemm_i32(o["abits"], o["bbits"], k, backend="triton")
    assert torch.equal(ours, R.binary_gemm_i32(o["abits"], o["bbits"], k)), f"binary {m}x{n}x{k} differs"
    from robustart.kernels import bwta as KB

    ours = KB.bwta_gemm_i32(o["am"], o["asg"], o["bbits"], k, backend="triton")
    assert torch.equal(ours, KB.bwta_gemm_i32(o["am"], o["asg"], o["bbits"], k, backend="torch")), f"bwta {m}x{n}x{k} differs"
    return "ok"


def run_case(m, n, k, gen, verify: bool) -> dict:
    from robustart import kernels as K
    from robustart.kernels import bwta as KB

    o = operands(m, n, k, gen)
    exact = check_exact(o, m, n, k) if verify else "not checked"
    f16 = torch.float16
    variants = {
        "torch fp16": lambda: torch.matmul(o["a16"], o["b16"].t()),
        "torch._int_mm": (lambda: torch._int_mm(o["a8"], o["b8"].t())) if m > 16 else None,
        "ours int8->int32": lambda: K.int8_gemm_i32(o["a8"], o["b8"], backend="triton"),
        "ours int8": lambda: K.int8_gemm(o["a8"], o["b8"], 0.01, o["b_scale"], o["bias"], backend="triton", out_dtype=f16),
        "ours int4": lambda: K.int4_gemm(o["a8"], o["p4"], k, 0.01, o["b_scale"], o["bias"], backend="triton", out_dtype=f16),
        "ours binary": lambda: K.binary_gemm(o["abits"], o["bbits"], k, 0.01, o["b_scale"], o["bias"], backend="triton", out_dtype=f16),
        "ours bwta": lambda: KB.bwta_gemm(o["am"], o["asg"], o["bbits"], k, 0.01, o["b_scale"], o["bias"], backend="triton",
                                          out_dtype=f16),
    }
    row = {"M": m, "N": n, "K": k, "exact": exact, "ms": {}, "tops": {}, "vs_fp16": {}}
    for name, fn in variants.items():
        if fn is None:
            continue
        fn()  # compile and autotune outside the timing
        ms = bench_ms(fn)
        row["ms"][name] = ms
        row["tops"][name] = 2 * m * n * k / (ms * 1e-3) / 1e12
    for name, ms in row["ms"].items():
        row["vs_fp16"][name] = row["ms"]["torch fp16"] / ms
    del o
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def membound_ceilings(m, n, k, c) -> dict:
    """Best possible speed-ups over fp16 when the time is max(weight bytes / HBM, compute)."""
    if c is None:
        return {}
    hbm = c["hbm"] * 1e12
    t = {
        "fp16": max(2 * n * k / hbm, 2 * m * n * k / (c["fp16"] * 1e12)),
        "int8": max(n * k / hbm, 2 * m * n * k / (c["int8"] * 1e12)),
        "int4": max(n * k / 2 / hbm, 2 * m * n * k / (c["int8"] * 1e12)),
        "binary": max(n * k / 8 / hbm, 2 * m * n * k / (c["binary_popc"] * 1e12)),
        "bwta": max(n * k / 8 / hbm, 2 * m * n * k / (c["binary_popc"] / 2 * 1e12)),
    }
    return {key: t["fp16"] / v for key, v in t.items() if key != "fp16"}


def smoke() -> int:
    """No GPU: run each kernel once in Triton's interpreter on tiny ragged shapes, exactly."""
    from robustart import kernels as K
    from robustart.kernels import reference as R

    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (19, 45), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (23, 45), dtype=torch.int8, generator=g)
    w4 = torch.randint(-8, 8, (23, 45), dtype=torch.int8, generator=g)
    ok = {
        "int8": torch.equal(K.int8_gemm_i32(a, b, backend="triton"), R.int8_gemm_i32(a, b)),
        "int4": torch.equal(K.int4_gemm_i32(a, K.pack_int4(w4), 45, backend="triton"), R.int8_gemm_i32(a, w4)),
        "binary": torch.equal(K.binary_gemm_i32(K.pack_bits(a), K.pack_bits(b), 45, backend="triton"),
                              R.binary_gemm_i32(K.pack_bits(a), K.pack_bits(b), 45)),
    }
    from robustart.kernels import bwta as KB

    t = torch.div(a.to(torch.int16), 43, rounding_mode="trunc").clamp(-1, 1)
    t[:, :32] = 0  # a zero run of a whole word
    am, asg = KB.pack_ternary(t)
    ok["bwta"] = torch.equal(KB.bwta_gemm_i32(am, asg, K.pack_bits(b), 45, backend="triton"),
                             (t.long() @ torch.where(b >= 0, 1, -1).long().T).to(torch.int32))
    for name, good in ok.items():
        print(f"interpreter smoke {name}: {'exact' if good else 'MISMATCH'}")
    return 0 if all(ok.values()) else 1


def compile_check(arch: int, only: str | None = None) -> int:
    """Compile every autotune configuration ahead of time for ``sm_<arch>`` (no GPU needed) with
    the specialisations a launch on 16-aligned sizes would get, and report what the kernels use."""
    import os
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from robustart.kernels import binary, bwta, int4, int8

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    target = GPUTarget("cuda", arch, 32)
    ptrs = dict(a_ptr="*i8", b_ptr="*i8", c_ptr="*fp16", a_scale_ptr="*fp32", b_scale_ptr="*fp32",
                bias_ptr="*fp32", bsum_ptr="*i32")
    flags = dict(A_UNSIGNED=False, ZERO_CORR=0, DEQUANT=True, A_SCALE_PER_ROW=False, HAS_BIAS=True)
    uflags = dict(flags, A_UNSIGNED=True)  # uint8 activations with a zero point
    cases = []
    for cfg in int8.INT8_CONFIGS:
        cases.append((int8.int8_gemm_kernel, ptrs, flags, cfg))
        small = cfg.kwargs["BLOCK_M"] <= 32
        cases.append((int8.int8_gemm_kernel, dict(ptrs, a_ptr="*u8"), dict(uflags, ZERO_CORR=1 if small else 2), cfg))
    for cfg in int4.INT4_CONFIGS:
        small = cfg.kwargs["BLOCK_M"] <= 32
        cases.append((int4.int4_gemm_kernel, dict(ptrs, b_ptr="*u8"), flags, cfg))
        cases.append((int4.int4_gemm_kernel, dict(ptrs, a_ptr="*u8", b_ptr="*u8"),
                      dict(uflags, ZERO_CORR=1 if small else 2), cfg))
    bflags = dict(DEQUANT=True, A_SCALE_PER_ROW=False, HAS_BIAS=True, HW_POPC=True)
    for cfg in binary.BINARY_CONFIGS:
        cases.append((binary.binary_gemm_kernel, dict(ptrs, a_ptr="*i32", b_ptr="*i32"), bflags, cfg))
    tptrs = dict(ptrs, am_ptr="*i32", as_ptr="*i32", bs_ptr="*i32", bm_ptr="*i32")
    for cfg in bwta.BWTA_CONFIGS:  # binary weights (linear layers) and ternary x ternary (attention)
        cases.append((bwta.bwta_gemm_kernel, tptrs, dict(bflags, B_TERNARY=False), cfg))
        cases.append((bwta.bwta_gemm_kernel, tptrs, dict(bflags, B_TERNARY=True), cfg))
    if only:  # e.g. --only bwta: one kernel family
        cases = [c for c in cases if c[0].name.strip("_").startswith(only)]
    bad = 0
    for kernel, p, consts, cfg in cases:
        fn = kernel.compiled.fn
        c = dict(consts, **cfg.kwargs, stride_ak=1, stride_bk=1, stride_cn=1)
        sig = {n: p.get(n, "constexpr" if n in c else "i32") for n in fn.arg_names}
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
                 if sig[n] != "constexpr" and n != "corr"}
        k = triton.compile(ASTSource(fn, sig, c, attrs), target=target,
                           options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(k.asm["cubin"])
        try:
            res = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True).stdout
        finally:
            os.unlink(f.name)
        regs = re.search(r"REG:(\d+)", res)
        stack = re.search(r"STACK:(\d+)", res)
        uses = [w for w in ("wgmma", "mma.sync", "cp.async", "popc") if w in k.asm["ptx"]]
        spill = stack and int(stack.group(1)) > 0
        bad += bool(spill)
        flags_s = ",".join(f"{n}={v}" for n, v in consts.items() if n in ("A_UNSIGNED", "ZERO_CORR", "B_TERNARY") and v)
        print(f"{kernel.name:20s} {str(cfg.kwargs):70s} w{cfg.num_warps} s{cfg.num_stages} {flags_s:24s} "
              f"regs {regs and regs.group(1)} stack {stack and stack.group(1)} shared {k.metadata.shared} "
              f"{' '.join(uses)}", flush=True)
    print(f"{len(cases)} configurations compiled for sm_{arch}; {bad} of them spill registers")
    return 0


def fmt_table(rows, names, c, membound: bool) -> list[str]:
    head = ["M x N x K"] + [f"{n} TOPS (x fp16)" for n in names]
    if membound:
        head += ["ceiling x fp16 (int8 / int4 / binary / bwta)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['M']} x {r['N']} x {r['K']}"]
        for n in names:
            cells.append(f"{r['tops'][n]:.1f} ({r['vs_fp16'][n]:.2f}x)" if n in r["tops"] else "n/a (M <= 16)")
        if membound:
            cc = r.get("ceiling_vs_fp16", {})
            cells.append(" / ".join(f"{cc[k]:.1f}x" for k in ("int8", "int4", "binary", "bwta")) if cc else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sizes (4096 and batch 1, 16 only)")
    ap.add_argument("--sizes", default="1024,2048,4096,8192", help="M = N = K of the compute-bound cases")
    ap.add_argument("--batches", default="1,4,8,16", help="M of the memory-bound cases")
    ap.add_argument("--weights", type=int, default=8192, help="N = K of the memory-bound cases")
    ap.add_argument("--no-verify", action="store_true", help="skip the bit-exactness checks before timing")
    ap.add_argument("--smoke", action="store_true", help="tiny exactness run in Triton's interpreter (CPU)")
    ap.add_argument("--compile", type=int, metavar="ARCH", help="compile all configs for sm_ARCH (e.g. 90) and exit")
    ap.add_argument("--dry-run", action="store_true",
                    help="no GPU: the whole benchmark on the CPU at tiny sizes (interpreter); measures nothing")
    ap.add_argument("--only", help="with --compile: one kernel family (int8, int4, binary, bwta)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    if args.smoke:
        return smoke()
    if args.compile:
        return compile_check(args.compile, args.only)
    dry = args.dry_run and not torch.cuda.is_available()
    if not torch.cuda.is_available() and not dry:
        print("lowbit_kernels: no CUDA device here; speed can only be measured on a GPU.\n"
              "Run `python benchmarks/lowbit_kernels.py` on one (e.g. an H100), or --smoke for an "
              "interpreter exactness check on this CPU (--dry-run: the whole script at tiny sizes).")
        return 0

    import triton

    from robustart.engine.env import git_info, versions

    device = "cpu" if dry else "cuda"
    name = "cpu" if dry else torch.cuda.get_device_name()  # dry run: Triton's interpreter
    c = ceilings_for(name)
    gen = torch.Generator(device=device).manual_seed(0)
    if dry:
        args.sizes, args.batches, args.weights, args.quick = "32", "1,4", 64, False
    squares = [4096] if args.quick else [int(v) for v in args.sizes.split(",")]
    batches = [1, 16] if args.quick else [int(v) for v in args.batches.split(",")]
    nk = args.weights
    names = ["torch fp16", "torch._int_mm", "ours int8->int32", "ours int8", "ours int4", "ours binary", "ours bwta"]

    hbm_measured = measured_hbm_tbs(device)
    compute, memory = [], []
    for s in squares:
        compute.append(run_case(s, s, s, gen, not args.no_verify))
        print(json.dumps(compute[-1]), flush=True)
    for m in batches:
        r = run_case(m, nk, nk, gen, not args.no_verify)
        r["ceiling_vs_fp16"] = membound_ceilings(m, nk, nk, c)
        r["weight_gbs"] = {  # weight bytes moved per second (the memory-bound figure of merit)
            nm: b / (r["ms"][nm] * 1e-3) / 1e9 for nm, b in
            [("torch fp16", 2 * nk**2), ("ours int8", nk**2), ("ours int4", nk**2 / 2),
             ("ours binary", nk**2 / 8), ("ours bwta", nk**2 / 8)]
        }
        memory.append(r)
        print(json.dumps(r), flush=True)

    # goals
    goals = []
    r4096 = next((r for r in compute if r["M"] == 4096), None)
    if r4096:
        v = r4096["vs_fp16"]["ours int8"]
        goals.append(("int8 GEMM (fused dequant) >= 1.6x fp16 at 4096^3", f"{v:.2f}x", v >= GOALS["int8_4096"]))
    for key, label in (("ours int4", "int4"), ("ours binary", "binary"), ("ours bwta", "bwta")):
        worst = min(r["vs_fp16"][key] for r in memory)
        goal = GOALS[f"{label}_membound"]
        goals.append((f"{label}-weight >= {goal:g}x fp16 for batch <= 16 ({nk}x{nk} weights), worst batch",
                      f"{worst:.2f}x", worst >= goal))

    r8192 = next((r for r in compute if r["M"] == 8192), None)
    if r8192 and c:
        share = r8192["tops"]["ours bwta"] / (c["binary_popc"] / 2)
        goals.append(("bwta at 8192^3 >= 40% of its popcount ceiling", f"{share:.0%}", share >= GOALS["bwta_popc_share"]))
    date = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    vers = versions()
    vers["triton"] = triton.__version__
    vers["cuda"] = torch.version.cuda
    big = max(compute, key=lambda r: r["M"])
    lines = [
        "# Low-bit GEMM kernels vs torch fp16 and torch._int_mm",
        "",
        f"- date: {date}",
        f"- device: {name}" + (f" ({torch.cuda.get_device_properties(0).multi_processor_count} SMs)" if not dry else "")
        + f"; host {platform.node()}",
        f"- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v),
        f"- git: {git_info()}",
        f"- command: `python benchmarks/lowbit_kernels.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "- times: median of triton.testing.do_bench (L2 flushed before each call); every kernel's int32 "
        f"result checked bit for bit first: {'yes' if not args.no_verify else 'no'}",
        "",
        "## Ceilings of this device",
        "",
    ]
    if c:
        lines += [
            f"data sheet ({c['match']}): fp16/bf16 dense tensor {c['fp16']} TFLOPS, int8 dense tensor "
            f"{c['int8']} TOPS, HBM {c['hbm']} TB/s; measured copy bandwidth {hbm_measured:.2f} TB/s.",
            f"Binary on CUDA cores: {POPC_PER_CLK_PER_SM} popc/clock/SM x {c['sms']} SMs x {c['ghz']} GHz x 64 ops "
            f"per 32-bit word = {c['binary_popc']:.0f} TOPS, i.e. {c['binary_popc'] / c['fp16']:.2f}x the fp16 "
            "tensor-core peak: a large binary GEMM cannot beat fp16 on this GPU with popcount "
            "(Triton exposes no binary tensor-core MMA).",
            f"At {big['M']}^3 binary reaches {big['tops']['ours binary']:.0f} TOPS = "
            f"{big['tops']['ours binary'] / c['binary_popc']:.0%} of that popcount ceiling "
            f"({big['vs_fp16']['ours binary']:.2f}x fp16).",
        ]
    else:
        lines += [f"no data-sheet ceilings known for {name!r}; measured copy bandwidth {hbm_measured:.2f} TB/s."]
    lines += ["", "## Compute-bound (M = N = K)", ""] + fmt_table(compute, names, c, False)
    lines += ["", f"## Memory-bound (batch M, {nk} x {nk} weights)", ""] + fmt_table(memory, names, c, True)
    lines += ["", "Weight bytes streamed per second (GB/s): " + "; ".join(
        f"M={r['M']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["weight_gbs"].items()) for r in memory)]
    lines += ["", "## Goals", "", "| goal | measured | |", "|---|---:|---|"]
    lines += [f"| {g} | {v} | {'PASS' if ok else 'FAIL'} |" for g, v, ok in goals]
    text = "\n".join(lines) + "\n"
    print(text)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"lowbit_kernels_{slug}.md").write_text(text)
    (out / f"lowbit_kernels_{slug}.json").write_text(json.dumps(
        {"date": date, "device": name, "versions": vers, "ceilings": c, "hbm_measured_tbs": hbm_measured,
         "compute_bound": compute, "memory_bound": memory,
         "goals": [{"goal": g, "measured": v, "pass": ok} for g, v, ok in goals]}, indent=1))
    print(f"wrote {out / f'lowbit_kernels_{slug}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
