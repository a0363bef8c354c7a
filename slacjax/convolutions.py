"""Convolutions and transposed convolutions, each computed several ways (same function).

x is NHWC, kernels HWIO; `padding` is ((top, bottom), (left, right)) for convolutions and the
PyTorch-style `padding` of a transposed convolution, whose output is stride·H × stride·W
(output_padding chosen so). Which way is fastest depends on the backend: `formulation_for`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NHWC_HWIO = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]


def conv_lax(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
             padding: Padding) -> jax.Array:
    """x [N, H, W, Cin], kernel [kh, kw, Cin, Cout] -> [N, H', W', Cout]: XLA's convolution."""
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC_HWIO)


def _taps(x: jax.Array, kh: int, kw: int, strides: tuple[int, int], padding: Padding):
    """The kh·kw strided views of padded x that a convolution reads: list of [N, H', W', C]."""
    (sh, sw), ((top, bottom), (left, right)) = strides, padding
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, h, w, c = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    return [jax.lax.slice(x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                          (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]


def conv_as_gemm(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: Padding) -> jax.Array:
    """`conv_lax` as one matrix multiply over patches gathered by strided slices.

    Its gradients are matrix multiplies too (plus pads and adds), on every backend and inside
    loops: none of them is a convolution XLA:CPU could leave to its naive loop emitter.
    """
    kh, kw, c_in, c_out = kernel.shape
    patches = jnp.concatenate(_taps(x, kh, kw, strides, padding), axis=-1)  # the kernel's order
    return jnp.einsum("nhwk,kd->nhwd", patches, kernel.reshape(kh * kw * c_in, c_out))


@functools.lru_cache(maxsize=None)
def _canonical_conv(strides: tuple[int, int], padding: Padding):
    # XLA:CPU (jax 0.10) rewrites autodiff's backward convolutions into the NHWC/HWIO form its
    # libraries take in the program's top level but not inside a while loop's body (its
    # optimised HLO), where they fall to the naive loop emitter (lax.scan: 10× slower). Here
    # they are written in that form, with the transposes explicit.
    (sh, sw), ((top, _), (left, _)) = strides, padding

    @jax.custom_vjp
    def conv(x, kernel):
        return conv_lax(x, kernel, strides, padding)

    def forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def backward(res, g):
        x, kernel = res
        kh, kw = kernel.shape[:2]
        h, w = x.shape[1:3]
        ho, wo = g.shape[1:3]
        rows_used, cols_used = (ho - 1) * sh + kh, (wo - 1) * sw + kw  # of padded x
        flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # [kh, kw, Cout, Cin]
        dx = jax.lax.conv_general_dilated(
            g, flipped, (1, 1),
            ((kh - 1 - top, h - 1 - (ho - 1) * sh + top),
             (kw - 1 - left, w - 1 - (wo - 1) * sw + left)),
            lhs_dilation=strides, dimension_numbers=NHWC_HWIO)
        # Weight gradient: Cin plays the batch, N the input feature, g the kernel.
        dk = jax.lax.conv_general_dilated(
            jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), (1, 1),
            ((top, rows_used - h - top), (left, cols_used - w - left)),
            rhs_dilation=strides, dimension_numbers=NHWC_HWIO)  # [Cin, kh, kw, Cout]
        return dx, jnp.transpose(dk, (1, 2, 0, 3))

    conv.defvjp(forward, backward)
    return conv


def conv_canonical(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                   padding: Padding) -> jax.Array:
    """`conv_lax` whose backward convolutions are NHWC/HWIO -> NHWC (library form) anywhere."""
    return _canonical_conv(tuple(strides), tuple(map(tuple, padding)))(x, kernel)


def _library_or_dense(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                      padding: Padding) -> jax.Array:
    """`conv_lax`, or a matmul where the window covers the whole input (a dense layer)."""
    kh, kw = kernel.shape[:2]
    (top, bottom), (left, right) = padding
    if (x.shape[1] + top + bottom, x.shape[2] + left + right) == (kh, kw):
        return conv_as_gemm(x, kernel, strides, padding)
    return conv_lax(x, kernel, strides, padding)


@functools.lru_cache(maxsize=None)
def _gemm_grad_conv(strides: tuple[int, int], padding: Padding):
    # Forward: XLA's convolution (a library call). Backward: the kernel gradient as one matrix
    # multiply of the patches with the output gradient (XLA:CPU's kernel-gradient convolution
    # is several times slower), the input gradient as one matrix multiply and the patches'
    # transpose (pads and adds) instead of an input-dilated convolution.
    @jax.custom_vjp
    def conv(x, kernel):
        return _library_or_dense(x, kernel, strides, padding)

    def forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def backward(res, g):
        x, kernel = res
        kh, kw, c_in, c_out = kernel.shape
        patches, patches_vjp = jax.vjp(
            lambda x: jnp.concatenate(_taps(x, kh, kw, strides, padding), axis=-1), x)
        flat_g = g.reshape(-1, c_out)
        dk = (patches.reshape(-1, kh * kw * c_in).T @ flat_g).reshape(kernel.shape)
        dx, = patches_vjp((flat_g @ kernel.reshape(-1, c_out).T).reshape(patches.shape))
        return dx, dk

    conv.defvjp(forward, backward)
    return conv


def conv_gemm_grads(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                    padding: Padding) -> jax.Array:
    """`conv_lax` (a library convolution; a matmul where the window covers the input) with
    `conv_as_gemm`'s gradients: matrix multiplies, pads and adds, XLA:CPU's fastest pieces,
    also inside loops."""
    return _gemm_grad_conv(tuple(strides), tuple(map(tuple, padding)))(x, kernel)


@functools.lru_cache(maxsize=None)
def _phase_grad_conv(strides: tuple[int, int], padding: Padding):
    # A strided layer's input gradient is a transposed convolution of the output gradient.
    # XLA computes it as an input-dilated convolution (at stride 2, three quarters of the
    # multiply-adds on inserted zeros), which XLA:CPU runs several times slower than the same
    # transposed convolution split by output phase into stride-1 convolutions.
    (sh, sw), ((top, _), (left, _)) = strides, padding
    plain = functools.partial(_library_or_dense, strides=strides, padding=padding)

    @jax.custom_vjp
    def conv(x, kernel):
        return plain(x, kernel)

    def forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def backward(res, g):
        x, kernel = res
        kh, kw = kernel.shape[:2]
        if not (sh == sw > 1 and top == left and kh == kw and kh - sh - top >= 0
                and x.shape[1:3] == (sh * g.shape[1], sw * g.shape[2])):
            return jax.vjp(plain, x, kernel)[1](g)
        dx = conv_transpose_phases(g, jnp.swapaxes(kernel, 2, 3).astype(g.dtype), sh, top)
        dk, = jax.vjp(lambda kernel: conv_lax(x, kernel, strides, padding), kernel)[1](g)
        return dx, dk

    conv.defvjp(forward, backward)
    return conv


def conv_phase_grads(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                     padding: Padding) -> jax.Array:
    """`conv_lax` (a matmul for a dense layer) whose input gradient, for a strided layer, is
    `conv_transpose_phases` of the output gradient; XLA's kernel gradient."""
    return _phase_grad_conv(tuple(strides), tuple(map(tuple, padding)))(x, kernel)


def _transpose_pads(kernel_size: int, stride: int, padding: int) -> tuple[int, int]:
    """Low / high padding of the stride-dilated input so a stride-1 convolution with the
    flipped kernel yields the transposed convolution's stride·H outputs."""
    low = kernel_size - 1 - padding
    assert low >= 0, "padding larger than kernel_size - 1"
    return low, stride - 1 + padding


def conv_transpose_direct(x: jax.Array, kernel: jax.Array, stride: int,
                          padding: int) -> jax.Array:
    """Transposed convolution as XLA's input-dilated convolution (`lax.conv_transpose`'s).

    x [N, H, W, Cin], kernel [k, k, Cin, Cout] -> [N, stride·H, stride·W, Cout]:
    y[stride·i − padding + j] += x[i] · kernel[j].
    """
    pads = _transpose_pads(kernel.shape[0], stride, padding)
    return jax.lax.conv_general_dilated(x, kernel[::-1, ::-1].astype(x.dtype), (1, 1),
                                        (pads, pads), lhs_dilation=(stride, stride),
                                        dimension_numbers=NHWC_HWIO)


def conv_transpose_dilated(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                           conv=conv_lax) -> jax.Array:
    """`conv_transpose_direct` with the dilation as an explicit interior pad, then a stride-1
    convolution (`conv`): stride² the multiply-adds, but only plain convolutions."""
    low, high = _transpose_pads(kernel.shape[0], stride, padding)
    dilated = jax.lax.pad(x, jnp.zeros((), x.dtype),
                          ((0, 0, 0), (low, high, stride - 1), (low, high, stride - 1), (0, 0, 0)))
    return conv(dilated, kernel[::-1, ::-1].astype(x.dtype), (1, 1), ((0, 0), (0, 0)))


def _depth_to_space(y: jax.Array, stride: int) -> jax.Array:
    """[N, H, W, s·s·C] ordered (row phase, column phase, C) -> [N, s·H, s·W, C]."""
    n, h, w, c = y.shape
    y = y.reshape(n, h, w, stride, stride, c // stride**2).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * stride, w * stride, c // stride**2)


def _phase_taps(kernel_size: int, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """Kernel taps of a strided transposed convolution, split by output phase.

    Input i writes outputs o = stride·i − padding + j for taps j. With o = stride·m + r,
    output phase r reads the coarse input m + e through tap j = r + padding − stride·e.
    Returns taps[e − e_min, r] (= kernel_size for "no tap", which indexes a zero row) and the
    offset range [e_min, e_max].
    """
    pairs = {}
    for r in range(stride):
        for j in range(kernel_size):
            if (r + padding - j) % stride == 0:
                pairs[((r + padding - j) // stride, r)] = j
    offsets = [e for e, _ in pairs]
    e_min, e_max = min(offsets), max(offsets)
    taps = np.full((e_max - e_min + 1, stride), kernel_size, dtype=np.int32)
    for (e, r), j in pairs.items():
        taps[e - e_min, r] = j
    return taps, e_min, e_max


def conv_transpose_phases(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                          conv=conv_lax) -> jax.Array:
    """`conv_transpose_direct` as one stride-1 convolution (`conv`) over the coarse grid with
    stride² output phases, then depth-to-space; the phases' missing taps are zeros
    (1.4–1.8× the multiply-adds for SLAC's decoder), but no dilated convolution anywhere."""
    k, _, c_in, c_out = kernel.shape
    taps, e_min, e_max = _phase_taps(k, stride, padding)
    assert e_min <= 0, "padding too small for the phase split"
    n_off = e_max - e_min + 1
    zero_tap = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    # [eh, rh, kw+1, Cin, Cout] -> [eh, rh, ew, rw, Cin, Cout] -> [eh, ew, Cin, rh, rw, Cout]
    phased = zero_tap[taps][:, :, taps]
    phased = phased.transpose(0, 2, 4, 1, 3, 5).reshape(n_off, n_off, c_in, stride**2 * c_out)
    pads = (-e_min, e_max)
    return _depth_to_space(conv(x, phased.astype(x.dtype), (1, 1), (pads, pads)), stride)


def conv_transpose_gemm(x: jax.Array, kernel: jax.Array, stride: int,
                        padding: int) -> jax.Array:
    """`conv_transpose_direct` as one matrix multiply (every input pixel times every tap,
    exactly the definition's multiply-adds) and an overlap-add of the taps' products.

    The overlap-add runs per output phase on the coarse grid: tap j = stride·q + r lands on
    phase r, shifted by q coarse pixels; then depth-to-space and the crop of `padding`.
    """
    k, _, c_in, c_out = kernel.shape
    n, h, w, _ = x.shape
    q_max = (k - 1) // stride
    products = jnp.einsum("nhwc,ijcd->nhwijd", x, kernel.astype(x.dtype))
    phases = []
    for r_h in range(stride):
        for r_w in range(stride):
            total = None
            for j_h in range(r_h, k, stride):
                for j_w in range(r_w, k, stride):
                    q_h, q_w = j_h // stride, j_w // stride
                    shifted = jnp.pad(products[:, :, :, j_h, j_w],
                                      ((0, 0), (q_h, q_max - q_h), (q_w, q_max - q_w), (0, 0)))
                    total = shifted if total is None else total + shifted
            phases.append(total)
    full = _depth_to_space(jnp.concatenate(phases, axis=-1), stride)  # [N, s(H+q), s(W+q), C]
    return full[:, padding:padding + stride * h, padding:padding + stride * w]


@functools.lru_cache(maxsize=None)
def _adjoint_transpose(stride: int, padding: int, kernel_size: int):
    # The transposed convolution is the adjoint of the strided convolution `adjoint` below
    # (same kernel, input and output channels swapped): its input gradient is that forward
    # convolution, its value the adjoint of a patch gather, its kernel gradient one matrix
    # multiply of the output gradient's patches with x. No zero taps, no dilated convolution.
    strides = (stride, stride)
    pads = ((padding, kernel_size - stride - padding),) * 2
    k = kernel_size

    def patches(y):
        return jnp.concatenate(_taps(y, k, k, strides, pads), axis=-1)  # [N, H, W, k·k·Cout]

    @jax.custom_vjp
    def transpose(x, kernel):
        n, h, w, _ = x.shape
        c_out = kernel.shape[-1]
        y_shape = jax.ShapeDtypeStruct((n, stride * h, stride * w, c_out), x.dtype)
        cols = jnp.einsum("nhwc,ijcd->nhwijd", x, kernel.astype(x.dtype))
        return jax.linear_transpose(patches, y_shape)(cols.reshape(n, h, w, k * k * c_out))[0]

    def forward(x, kernel):
        return transpose(x, kernel), (x, kernel)

    def backward(res, g):
        x, kernel = res
        c_in, c_out = kernel.shape[2:]
        dx = conv_lax(g, jnp.swapaxes(kernel, 2, 3).astype(g.dtype), strides, pads)
        dk = patches(g).reshape(-1, k * k * c_out).T @ x.reshape(-1, c_in)  # [k·k·Cout, Cin]
        return dx, jnp.swapaxes(dk.reshape(k, k, c_out, c_in), 2, 3).astype(kernel.dtype)

    transpose.defvjp(forward, backward)
    return transpose


def conv_transpose_adjoint(x: jax.Array, kernel: jax.Array, stride: int,
                           padding: int) -> jax.Array:
    """`conv_transpose_direct` written as the adjoint of a strided convolution: value and
    kernel gradient as matrix multiplies over patches, input gradient a plain convolution."""
    assert kernel.shape[0] - stride - padding >= 0, "padding too large for the adjoint form"
    return _adjoint_transpose(stride, padding, kernel.shape[0])(x, kernel)


class Formulation(NamedTuple):
    """How a network computes its convolutions and strided transposed convolutions."""

    conv: Callable[[jax.Array, jax.Array, tuple[int, int], Padding], jax.Array]
    conv_transpose: Callable[[jax.Array, jax.Array, int, int], jax.Array]


TRANSPOSE_FORMULATIONS = {"phases": conv_transpose_phases, "direct": conv_transpose_direct,
                          "dilated": conv_transpose_dilated, "gemm": conv_transpose_gemm,
                          "adjoint": conv_transpose_adjoint}


# "phases": XLA's convolutions, the decoder split by output phase (measured best on an H100).
# "phase_grads": the same, with the strided convolutions' input gradients split by output phase
# too (XLA:CPU with its YNNPACK fusion off, one update per call: the encoder's forward and
# backward 2.1× faster, BENCHMARKS.md). Unmeasured on a GPU.
# "gemm": gradients as matrix multiplies, the decoder as the adjoint of a strided convolution:
# no backward convolution for XLA:CPU's naive loop emitter inside a lax.scan (44× faster
# there). Unmeasured on a GPU.
FORMULATIONS = {"phases": Formulation(conv_lax, conv_transpose_phases),
                "phase_grads": Formulation(conv_phase_grads, conv_transpose_phases),
                "gemm": Formulation(conv_gemm_grads, conv_transpose_adjoint)}


def formulation_for(backend: str, scanned: bool = False) -> str:
    """The name in FORMULATIONS to use on a jax backend ("cpu", "gpu", "tpu", ...), for
    programs that run the networks inside a loop (`scanned`) or not."""
    if backend == "cpu":
        return "gemm" if scanned else "phase_grads"
    if backend in ("gpu", "cuda", "rocm", "tpu"):
        return "phases"
    raise ValueError(f"unknown backend {backend!r}")


def compiler_options_for(backend: str) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for the networks' programs on `backend`.

    XLA:CPU (jax 0.10) hands convolutions to YNNPACK fusions by default; its Eigen
    convolutions ran SLAC's fused update 2.8× faster on a 2-core AVX2 machine (BENCHMARKS.md).
    An empty list of YNN fusion types turns the fusion off for that program only.
    """
    return {"xla_cpu_experimental_ynn_fusion_type": ""} if backend == "cpu" else None
