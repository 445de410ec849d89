"""Exactness of the low-bit kernels against exact integer references.

On a machine without CUDA the Triton kernels run in Triton's interpreter (CPU, exact), so
these tests check the very kernel code that runs on the GPU; with CUDA they run there too.
Shapes are small and ragged: the interpreter's tiles are 16 x 16 x 32 (32 x 2 words for
binary), so M, N and K below span several tiles and end in partial ones.
"""

import pytest
import torch
import torch.nn.functional as F

from robustart import kernels as K
from robustart.kernels import reference as R

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (M, N, K): ragged in every dimension, K odd (int4) and not a multiple of 32 (binary).
SHAPES = [(1, 1, 1), (37, 45, 77), (70, 50, 131), (5, 33, 64), (16, 16, 32)]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rand_int(shape, lo, hi, dtype, seed, extremes=True):
    t = torch.randint(lo, hi + 1, shape, generator=gen(seed), dtype=torch.int64)
    if extremes and t.numel() > 4:  # make sure the extreme values occur
        t.view(-1)[:2] = lo
        t.view(-1)[-2:] = hi
    return t.to(dtype)


def int64_mm(a, b):
    """Independent integer reference: int64 matmul on the CPU."""
    return (a.cpu().to(torch.int64) @ b.cpu().to(torch.int64).T)


def signs(x):
    return torch.where(x >= 0, 1, -1).to(torch.int64)


def check_epilogue(out, acc, a_scale, b_scale, bias, device):
    """The dequantised output equals ((acc * a_scale) * b_scale) + bias in float32 (exactly
    under the interpreter; the GPU may fuse the multiply-add, hence a 1-ulp tolerance)."""
    acc = acc.to(torch.float32)
    a_scale = torch.as_tensor(a_scale, dtype=torch.float32)
    exp = acc * (a_scale if a_scale.dim() == 0 else a_scale[:, None]) * b_scale[None, :]
    if bias is not None:
        exp = exp + bias[None, :]
    exp = exp.to(out.dtype)
    if device == "cpu":
        assert torch.equal(out.cpu(), exp)
    else:
        torch.testing.assert_close(out.cpu().float(), exp.float(), rtol=2e-6, atol=1e-6)


# ---------------------------------------------------------------- int8
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_int8_gemm_i32_exact(device, m, n, k):
    a = rand_int((m, k), -128, 127, torch.int8, 1)
    b = rand_int((n, k), -128, 127, torch.int8, 2)
    exp = int64_mm(a, b)
    assert torch.equal(R.int8_gemm_i32(a, b).to(torch.int64), exp)
    out = K.int8_gemm_i32(a.to(device), b.to(device), backend="triton")
    assert out.dtype == torch.int32 and out.shape == (m, n)
    assert torch.equal(out.cpu().to(torch.int64), exp)


@pytest.mark.parametrize("device", DEVICES)
def test_int8_gemm_extreme_accumulation(device):
    # All -128 x -128: the largest int8 products, accumulated over a long K.
    a = torch.full((3, 1000), -128, dtype=torch.int8)
    b = torch.full((5, 1000), -128, dtype=torch.int8)
    b[1] = 127
    out = K.int8_gemm_i32(a.to(device), b.to(device), backend="triton").cpu()
    assert torch.equal(out[:, 0], torch.full((3,), 128 * 128 * 1000, dtype=torch.int32))
    assert torch.equal(out[:, 1], torch.full((3,), -128 * 127 * 1000, dtype=torch.int32))


# M <= 32: the kernel sums the weight rows for the zero-point correction in its K loop;
# M > 32: it reads row sums computed beforehand. Both are checked.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [16, 37])
@pytest.mark.parametrize("dtype,a_zero", [(torch.uint8, 0), (torch.uint8, 128), (torch.uint8, 255),
                                          (torch.uint8, 37), (torch.int8, -5), (torch.int8, 127)])
def test_int8_gemm_zero_point(device, m, dtype, a_zero):
    lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
    a = rand_int((m, 77), lo, hi, dtype, 3)
    b = rand_int((45, 77), -128, 127, torch.int8, 4)
    exp = (a.to(torch.int64) - a_zero) @ b.to(torch.int64).T
    out = K.int8_gemm_i32(a.to(device), b.to(device), backend="triton", a_zero=a_zero)
    assert torch.equal(out.cpu().to(torch.int64), exp)
    assert torch.equal(K.int8_gemm_i32(a, b, backend="torch", a_zero=a_zero).to(torch.int64), exp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_row,with_bias,out_dtype", [
    (False, True, torch.float32), (True, False, torch.float32), (True, True, torch.float16),
    (False, False, torch.bfloat16)])
def test_int8_gemm_dequant(device, per_row, with_bias, out_dtype):
    m, n, k = 37, 45, 77
    a = rand_int((m, k), 0, 255, torch.uint8, 5)
    b = rand_int((n, k), -128, 127, torch.int8, 6)
    a_scale = torch.rand(m, generator=gen(7)) / 100 if per_row else torch.tensor(0.0173)
    b_scale = torch.rand(n, generator=gen(8)) / 100
    bias = torch.randn(n, generator=gen(9)) if with_bias else None
    to = lambda t: None if t is None else t.to(device)
    out = K.int8_gemm(a.to(device), b.to(device), to(a_scale), to(b_scale), to(bias), a_zero=91,
                      backend="triton", out_dtype=out_dtype)
    assert out.dtype == out_dtype and out.shape == (m, n)
    acc = (a.to(torch.int64) - 91) @ b.to(torch.int64).T
    check_epilogue(out, acc, a_scale, b_scale, bias, device)
    check_epilogue(K.int8_gemm(a, b, a_scale, b_scale, bias, a_zero=91, backend="torch", out_dtype=out_dtype),
                   acc, a_scale, b_scale, bias, "cpu")
    # and it is the float product of the dequantised tensors, up to float rounding
    real = ((a.double() - 91) * a_scale.double().reshape(-1, 1)) @ (b.double() * b_scale.double()[:, None]).T
    if bias is not None:
        real = real + bias.double()
    tol = 1e-2 if out_dtype != torch.float32 else 1e-5
    torch.testing.assert_close(out.cpu().double(), real, rtol=tol, atol=tol)


# ---------------------------------------------------------------- int4
def test_pack_int4_layout_and_round_trip():
    w = torch.tensor([[-8, 7, 1], [0, -1, 5]], dtype=torch.int8)
    p = K.pack_int4(w)
    # low nibble first; -8 = 0x8, 7 = 0x7, -1 = 0xF; odd K pads a zero high nibble
    assert p.dtype == torch.uint8
    assert p.tolist() == [[0x78, 0x01], [0xF0, 0x05]]
    assert torch.equal(K.unpack_int4(p, 3), w)
    for k in (1, 2, 77, 128):
        w = rand_int((9, k), -8, 7, torch.int8, k)
        p = K.pack_int4(w)
        assert p.shape == (9, (k + 1) // 2)
        assert torch.equal(K.unpack_int4(p, k), w)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_int4_gemm_i32_exact(device, m, n, k):
    a = rand_int((m, k), -128, 127, torch.int8, 11)
    w = rand_int((n, k), -8, 7, torch.int8, 12)
    exp = int64_mm(a, w)
    p = K.pack_int4(w)
    assert torch.equal(R.int4_gemm_i32(a, p, k).to(torch.int64), exp)
    out = K.int4_gemm_i32(a.to(device), p.to(device), k, backend="triton")
    assert out.dtype == torch.int32 and torch.equal(out.cpu().to(torch.int64), exp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [16, 37])
def test_int4_gemm_zero_point_and_dequant(device, m):
    n, k = 45, 77
    a = rand_int((m, k), 0, 255, torch.uint8, 13)
    w = rand_int((n, k), -8, 7, torch.int8, 14)
    p = K.pack_int4(w)
    acc = (a.to(torch.int64) - 200) @ w.to(torch.int64).T
    out = K.int4_gemm_i32(a.to(device), p.to(device), k, backend="triton", a_zero=200)
    assert torch.equal(out.cpu().to(torch.int64), acc)
    b_scale, bias = torch.rand(n, generator=gen(15)), torch.randn(n, generator=gen(16))
    out = K.int4_gemm(a.to(device), p.to(device), k, 0.25, b_scale.to(device), bias.to(device),
                      a_zero=200, backend="triton")
    check_epilogue(out, acc, 0.25, b_scale, bias, device)


# ---------------------------------------------------------------- binary
def test_pack_bits_layout_and_round_trip():
    x = torch.tensor([[1.0, -2.0, 0.0] + [-1.0] * 28 + [3.0, -0.5]])  # 33 values -> 2 words
    bits = K.pack_bits(x)
    assert bits.dtype == torch.int32 and bits.shape == (1, 2)
    # bit j of word w <-> element 32*w + j; bit 31 set -> a negative int32; padding bits 0
    assert bits[0, 0].item() == (1 | (1 << 2) | (1 << 31)) - (1 << 32)
    assert bits[0, 1].item() == 0
    assert torch.equal(K.unpack_bits(bits, 33), signs(x).to(torch.int8))
    for k in (1, 31, 32, 33, 101):
        x = torch.randn(7, k, generator=gen(k))
        assert torch.equal(K.unpack_bits(K.pack_bits(x), k).to(torch.int64), signs(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,n,k", SHAPES + [(20, 17, 200), (3, 4, 31)])
def test_binary_gemm_i32_exact(device, m, n, k):
    x = torch.randn(m, k, generator=gen(21))
    y = torch.randn(n, k, generator=gen(22))
    y[0] = 1.0  # all +1 and all -1 rows: dot = +-sum of x's signs, extremes +-k
    if n > 1:
        y[1] = -1.0
    x[0] = -1.0
    exp = signs(x) @ signs(y).T
    ab, bb = K.pack_bits(x), K.pack_bits(y)
    assert torch.equal(R.binary_gemm_i32(ab, bb, k).to(torch.int64), exp)
    out = K.binary_gemm_i32(ab.to(device), bb.to(device), k, backend="triton")
    assert out.dtype == torch.int32 and torch.equal(out.cpu().to(torch.int64), exp)


@pytest.mark.parametrize("device", DEVICES)
def test_binary_gemm_dequant(device):
    m, n, k = 37, 45, 77
    x, y = torch.randn(m, k, generator=gen(23)), torch.randn(n, k, generator=gen(24))
    a_scale, b_scale, bias = torch.rand(m, generator=gen(25)), torch.rand(n, generator=gen(26)), torch.randn(n, generator=gen(27))
    out = K.binary_gemm(K.pack_bits(x).to(device), K.pack_bits(y).to(device), k, a_scale.to(device),
                        b_scale.to(device), bias.to(device), backend="triton")
    check_epilogue(out, signs(x) @ signs(y).T, a_scale, b_scale, bias, device)


# ---------------------------------------------------------------- convolutions
# (C, O, kernel, stride, padding, dilation, groups): 3x3 with padding, grouped, depthwise,
# dilated, 1x1, rectangular kernel with asymmetric stride/padding.
CONVS = [
    (6, 8, (3, 3), 2, 1, 1, 2),
    (8, 8, (3, 3), 1, 1, 2, 8),
    (5, 7, (1, 1), 1, 0, 1, 1),
    (4, 6, (3, 2), (1, 2), (2, 0), 1, 1),
    (3, 10, (5, 5), 2, 2, 1, 1),
]


def conv_case(i, geometry):
    c, o, (kh, kw), s, p, d, g = geometry
    x = rand_int((2, c, 9, 10), 0, 255, torch.uint8, 100 + i)
    w = rand_int((o, c // g, kh, kw), -128, 127, torch.int8, 200 + i)
    w4 = rand_int((o, c // g, kh, kw), -8, 7, torch.int8, 300 + i)
    return x, w, w4, dict(stride=s, padding=p, dilation=d, groups=g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("i", range(len(CONVS)))
def test_int8_int4_conv2d(device, backend, i):
    x, w, w4, geo = conv_case(i, CONVS[i])
    o, za = w.shape[0], 113
    w_scale, bias = torch.rand(o, generator=gen(i)) / 50, torch.randn(o, generator=gen(i + 1))
    dev = lambda t: t.to(device)
    for weights, run in [
        (w, lambda: K.int8_conv2d(dev(x), dev(w), 0.02, dev(w_scale), dev(bias), a_zero=za, backend=backend, **geo)),
        (w4, lambda: K.int4_conv2d(dev(x), dev(K.pack_int4(w4.reshape(o, -1))), w4.shape, 0.02, dev(w_scale),
                                   dev(bias), a_zero=za, backend=backend, **geo)),
    ]:
        out = run().cpu()
        # exact integer convolution (float64 holds these sums exactly); padding = the zero point
        acc = F.conv2d(x.double() - za, weights.double(), **geo)
        exp = (acc.float() * 0.02) * w_scale[None, :, None, None] + bias[None, :, None, None]
        if device == "cpu":
            assert torch.equal(out, exp)
        else:
            torch.testing.assert_close(out, exp, rtol=2e-6, atol=1e-5)
        # and F.conv2d on the dequantised tensors
        real = F.conv2d((x.float() - za) * 0.02, weights.float() * w_scale[:, None, None, None], bias, **geo)
        torch.testing.assert_close(out, real, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("i", range(len(CONVS)))
def test_binary_conv2d(device, backend, i):
    c, o, (kh, kw), s, p, d, g = CONVS[i]
    geo = dict(stride=s, padding=p, dilation=d, groups=g)
    x = torch.randn(2, c, 9, 10, generator=gen(400 + i))
    w = torch.randn(o, c // g, kh, kw, generator=gen(500 + i))
    w_scale, bias = torch.rand(o, generator=gen(i)), torch.randn(o, generator=gen(i + 1))
    out = K.binary_conv2d(x.to(device), K.pack_bits(w.reshape(o, -1)).to(device), w.shape, 0.5,
                          w_scale.to(device), bias.to(device), backend=backend, **geo).cpu()
    acc = F.conv2d(signs(x).double(), signs(w).double(), **geo)  # zero padding contributes 0
    exp = (acc.float() * 0.5) * w_scale[None, :, None, None] + bias[None, :, None, None]
    if device == "cpu":
        assert torch.equal(out, exp)
    else:
        torch.testing.assert_close(out, exp, rtol=2e-6, atol=1e-5)


# ---------------------------------------------------------------- dispatch and errors
def test_triton_backend_runs_the_kernels_not_the_reference(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the torch reference ran")

    for name in ("int8_gemm_i32", "int8_gemm", "int4_gemm_i32", "int4_gemm", "binary_gemm_i32",
                 "binary_gemm", "dequantize"):
        monkeypatch.setattr(R, name, boom)
    a = rand_int((17, 33), -128, 127, torch.int8, 1)
    b = rand_int((18, 33), -128, 127, torch.int8, 2)
    s = torch.ones(18)
    K.int8_gemm_i32(a, b, backend="triton")
    K.int8_gemm(a, b, 1.0, s, backend="triton")
    K.int4_gemm(a, K.pack_int4(b.clamp(-8, 7)), 33, 1.0, s, backend="triton")
    K.binary_gemm(K.pack_bits(a), K.pack_bits(b), 33, 1.0, s, backend="triton")
    x = rand_int((1, 4, 5, 5), -128, 127, torch.int8, 3)
    K.int8_conv2d(x, rand_int((6, 4, 3, 3), -128, 127, torch.int8, 4), 1.0, torch.ones(6), padding=1,
                  backend="triton")
    with pytest.raises(AssertionError, match="reference ran"):
        K.int8_gemm_i32(a, b, backend="torch")
    with pytest.raises(AssertionError, match="reference ran"):  # auto on CPU = the reference
        K.int8_gemm_i32(a, b, backend="auto")


def test_errors_name_the_argument():
    a = torch.zeros(4, 8, dtype=torch.int8)
    b = torch.zeros(3, 8, dtype=torch.int8)
    with pytest.raises(TypeError, match=r"^b must have dtype int8, got float32"):
        K.int8_gemm_i32(a, b.float())
    with pytest.raises(TypeError, match=r"^a must have dtype int8, uint8"):
        K.int8_gemm_i32(a.to(torch.int32), b)
    with pytest.raises(ValueError, match=r"share K"):
        K.int8_gemm_i32(a, b[:, :7])
    with pytest.raises(ValueError, match=r"^a must be 2-D"):
        K.int8_gemm_i32(a[None], b)
    with pytest.raises(ValueError, match=r"backend='cuda' is not one of"):
        K.int8_gemm_i32(a, b, backend="cuda")
    with pytest.raises(ValueError, match=r"a_zero=300 is outside"):
        K.int8_gemm_i32(a.to(torch.uint8), b, a_zero=300)
    with pytest.raises(ValueError, match=r"b_scale must be a float tensor of shape \[3\]"):
        K.int8_gemm(a, b, 1.0, torch.ones(4))
    with pytest.raises(ValueError, match=r"a_scale must be a scalar .* or of shape \[4\]"):
        K.int8_gemm(a, b, torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"bias must be None or a float tensor of shape \[3\]"):
        K.int8_gemm(a, b, 1.0, torch.ones(3), bias=torch.ones(2))
    with pytest.raises(ValueError, match=r"^k=9 needs 5 packed columns, got 4"):
        K.int4_gemm_i32(torch.zeros(2, 9, dtype=torch.int8), torch.zeros(3, 4, dtype=torch.uint8), 9)
    with pytest.raises(TypeError, match=r"^w_packed must have dtype uint8"):
        K.int4_gemm_i32(a, b, 8)
    with pytest.raises(ValueError, match=r"^k=40 needs 2 packed columns, got 1"):
        K.binary_gemm_i32(torch.zeros(2, 1, dtype=torch.int32), torch.zeros(2, 1, dtype=torch.int32), 40)
    with pytest.raises(ValueError, match=r"groups=3 must divide"):
        K.int8_conv2d(torch.zeros(1, 4, 5, 5, dtype=torch.int8), torch.zeros(6, 1, 3, 3, dtype=torch.int8),
                      1.0, torch.ones(6), groups=3)
    with pytest.raises(ValueError, match=r"w_packed must be pack_int4"):
        K.int4_conv2d(torch.zeros(1, 4, 5, 5, dtype=torch.int8), torch.zeros(6, 17, dtype=torch.uint8),
                      (6, 4, 3, 3), 1.0, torch.ones(6))
    with pytest.raises(ValueError, match=r"^w must hold int4 values in \[-8, 7\], got \[-9, 0\]"):
        K.pack_int4(torch.tensor([[-9, 0]], dtype=torch.int8))
    with pytest.raises(TypeError, match=r"^w must be a 2-D integer tensor"):
        K.pack_int4(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"^k=5 needs 3 packed columns, got 2"):
        K.unpack_int4(torch.zeros(1, 2, dtype=torch.uint8), 5)
    with pytest.raises(TypeError, match=r"^x must be a 2-D real or integer tensor"):
        K.pack_bits(torch.zeros(3))
    with pytest.raises(ValueError, match=r"^K=70000 is too long for exact int32"):
        K.int8_gemm_i32(torch.zeros(1, 70000, dtype=torch.uint8), torch.zeros(1, 70000, dtype=torch.int8), a_zero=0)
    with pytest.raises(ValueError, match=r"^w_scale must be a float tensor of shape \[6\]"):
        K.int8_conv2d(torch.zeros(1, 4, 5, 5, dtype=torch.int8), torch.zeros(6, 4, 3, 3, dtype=torch.int8),
                      1.0, torch.ones(5))
    with pytest.raises(ValueError, match=r"a_scale of a convolution must be a scalar"):
        K.int8_conv2d(torch.zeros(1, 4, 5, 5, dtype=torch.int8), torch.zeros(6, 4, 3, 3, dtype=torch.int8),
                      torch.ones(2), torch.ones(6))


def test_conv_splits_a_batch_too_big_for_one_launch(monkeypatch):
    from robustart.kernels import conv

    x, w, w4, geo = conv_case(0, CONVS[0])
    x = torch.cat([x, x.flip(0), x[:1]])  # 5 images
    o = w.shape[0]
    xf = torch.randn(5, x.shape[1], 9, 10, generator=gen(7))
    runs = {
        "int8": lambda: K.int8_conv2d(x, w, 0.5, torch.ones(o), a_zero=3, backend="triton", **geo),
        "int4": lambda: K.int4_conv2d(x, K.pack_int4(w4.reshape(o, -1)), w4.shape, 0.5, torch.ones(o),
                                      a_zero=3, backend="triton", **geo),
        "binary": lambda: K.binary_conv2d(xf, K.pack_bits(w.reshape(o, -1).float()), w.shape, 0.5,
                                          torch.ones(o), backend="triton", **geo),
    }
    whole = {name: run() for name, run in runs.items()}
    calls = []
    real_im2col = conv._im2col
    monkeypatch.setattr(conv, "_im2col", lambda x, *a: calls.append(x.shape[0]) or real_im2col(x, *a))
    # room for exactly two images per launch -> launches of 2, 2 and 1 images
    per_image = 5 * 5 * max(x.shape[1] * 9, o)
    monkeypatch.setattr(conv, "MAX_ELEMENTS", 2 * per_image)
    for name, run in runs.items():
        calls.clear()
        assert torch.equal(run(), whole[name]), name
        assert calls == [2, 2, 1], (name, calls)
