"""Every formulation of slacjax.convolutions against the definition, gradients included."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slacjax import convolutions as convs

# SLAC's layers, scaled down: (kernel, stride, padding, input size) as in the encoder
# (4 on 4: the last layer, a dense one) / decoder.
CONV_LAYERS = [(5, 2, 2, 8), (3, 2, 1, 8), (4, 1, 0, 8), (4, 1, 0, 4), (3, 1, 1, 8)]
TRANSPOSE_LAYERS = [(3, 2, 1), (5, 2, 2)]
TOL = dict(rtol=2e-4, atol=2e-4)


def transpose_definition(x, kernel, stride, padding):
    """y[stride·i − padding + j] += x[i] · kernel[j], cropped to stride·H (jnp, differentiable)."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    full = jnp.zeros((n, stride * (h - 1) + k, stride * (w - 1) + k, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            tap = jnp.einsum("nhwc,cd->nhwd", x, kernel[i, j])
            full = full.at[:, i:i + stride * (h - 1) + 1:stride,
                           j:j + stride * (w - 1) + 1:stride].add(tap)
    return full[:, padding:padding + stride * h, padding:padding + stride * w]


def value_and_grads(fun, x, kernel, cotangent):
    """fun's output and the gradients of <fun(x, kernel), cotangent> for x and kernel."""
    def run(x, kernel, cotangent):
        out, vjp = jax.vjp(fun, x, kernel)
        return (out, *vjp(cotangent))
    return jax.jit(run)(x, kernel, cotangent)


def random_inputs(shape_x, shape_k, seed=0):
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(seed), 3)
    return jax.random.normal(kx, shape_x), jax.random.normal(kk, shape_k) * 0.3, kg


@pytest.mark.parametrize("formulation",
                         ["conv_as_gemm", "conv_canonical", "conv_gemm_grads",
                          "conv_phase_grads"])
@pytest.mark.parametrize("kernel_size,stride,pad,size", CONV_LAYERS)
def test_convolution_formulations_match_xla(formulation, kernel_size, stride, pad, size):
    x, kernel, kg = random_inputs((2, size, size, 3), (kernel_size, kernel_size, 3, 4))
    strides, padding = (stride, stride), ((pad, pad), (pad, pad))
    fun = getattr(convs, formulation)
    want_out = convs.conv_lax(x, kernel, strides, padding)
    cotangent = jax.random.normal(kg, want_out.shape)
    got = value_and_grads(lambda a, b: fun(a, b, strides, padding), x, kernel, cotangent)
    want = value_and_grads(lambda a, b: convs.conv_lax(a, b, strides, padding), x, kernel,
                           cotangent)
    for name, g, w in zip(("output", "input grad", "kernel grad"), got, want):
        np.testing.assert_allclose(g, w, **TOL, err_msg=name)


@pytest.mark.parametrize("formulation", ["conv_canonical", "conv_gemm_grads"])
def test_custom_gradients_hold_inside_a_loop(formulation):
    """The custom backward is what a scan differentiates (the case it exists for)."""
    x, kernel, _ = random_inputs((2, 8, 8, 3), (3, 3, 3, 4))
    strides, padding = (2, 2), ((1, 1), (1, 1))

    def loss(kernel, conv):
        def body(carry, _):
            return carry + jnp.sum(jnp.tanh(conv(x, kernel * carry, strides, padding))), None
        return jax.lax.scan(body, jnp.float32(1.0), None, length=2)[0]

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    np.testing.assert_allclose(grad(kernel, getattr(convs, formulation)),
                               grad(kernel, convs.conv_lax), **TOL)


@pytest.mark.parametrize("formulation", convs.TRANSPOSE_FORMULATIONS)
@pytest.mark.parametrize("kernel_size,stride,pad", TRANSPOSE_LAYERS)
def test_transposed_formulations_match_the_definition(formulation, kernel_size, stride, pad):
    x, kernel, kg = random_inputs((2, 4, 4, 3), (kernel_size, kernel_size, 3, 5))
    fun = convs.TRANSPOSE_FORMULATIONS[formulation]
    want_out = transpose_definition(x, kernel, stride, pad)
    assert want_out.shape == (2, 8, 8, 5)
    cotangent = jax.random.normal(kg, want_out.shape)
    got = value_and_grads(lambda a, b: fun(a, b, stride, pad), x, kernel, cotangent)
    want = value_and_grads(lambda a, b: transpose_definition(a, b, stride, pad), x, kernel,
                           cotangent)
    for name, g, w in zip(("output", "input grad", "kernel grad"), got, want):
        np.testing.assert_allclose(g, w, **TOL, err_msg=name)


def test_formulation_for_keeps_the_accelerator_default():
    assert convs.formulation_for("gpu") == convs.formulation_for("tpu") == "phases"
    assert convs.formulation_for("gpu", scanned=True) == "phases"
    assert convs.formulation_for("cpu") == "phase_grads"
    assert convs.formulation_for("cpu", scanned=True) == "gemm"
    assert set(convs.FORMULATIONS) == {"phases", "phase_grads", "gemm"}
    with pytest.raises(ValueError, match="backend"):
        convs.formulation_for("abacus")


def test_cpu_compiler_options_turn_the_ynn_convolution_fusion_off():
    x, kernel, _ = random_inputs((288, 32, 32, 32), (3, 3, 32, 64))  # YNN takes it by default
    conv = functools.partial(convs.conv_lax, strides=(2, 2), padding=((1, 1), (1, 1)))

    def optimised_hlo(options):
        return jax.jit(conv, compiler_options=options).lower(x, kernel).compile().as_text()

    assert "__ynn_fusion" in optimised_hlo(None)
    assert "__ynn_fusion" not in optimised_hlo(convs.compiler_options_for("cpu"))
    assert convs.compiler_options_for("gpu") is None
