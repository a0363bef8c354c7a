"""Flax modules of SLAC (docs/algorithm.md §2, §4), all built by `build` from one AgentConfig.

Glorot-uniform weights, zero biases; frames channels-last [N, 64, 64, 3] floats in [0, 1].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from slacjax import convolutions
from slacjax.config import SEED_CONVS, AgentConfig

glorot = nn.initializers.xavier_uniform()
LEAKY_SLOPE = 0.2
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
# The convolution strategy of a single agent's program: plain lax convolutions.
PLAIN_CONV = "grouped"


def leaky_relu(x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, LEAKY_SLOPE)


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last)."""

    features: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = leaky_relu if self.activation == "leaky_relu" else nn.relu
        for i, width in enumerate(self.features):
            x = nn.Dense(width, kernel_init=glorot)(x)
            if i < len(self.features) - 1:
                x = act(x)
        return x


def gaussian(out: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A head's raw output [..., 2·dim] -> mean, std [..., dim]; std = softplus(raw) + 1e-5."""
    mean, raw_std = jnp.split(out, 2, axis=-1)
    return mean, jax.nn.softplus(raw_std) + 1e-5


class GaussianHead(nn.Module):
    """MLP hidden-hidden (leaky ReLU 0.2) → diagonal Gaussian: [..., in] -> mean, std [..., dim].

    std = softplus(raw) + 1e-5 (docs/algorithm.md §2).
    """

    dim: int
    hidden_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return gaussian(MLP((self.hidden_dim, self.hidden_dim, 2 * self.dim), "leaky_relu")(x))


def head_layers(head_params: dict) -> dict:
    """A GaussianHead's dense layers by name (Dense_0..2), each {"kernel", "bias"}."""
    return head_params["params"]["MLP_0"]


def dense(layer: dict, x: jax.Array) -> jax.Array:
    """What nn.Dense computes with `layer`'s parameters: x [..., in] -> [..., out]."""
    return x @ layer["kernel"] + layer["bias"]


def gaussian_head_after_first(head_params: dict, first: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A GaussianHead from its first layer's output before the activation (x·W0 + b0,
    [..., hidden]) -> mean, std: the head, for callers that compute its first layer in parts."""
    layers = head_layers(head_params)
    hidden = leaky_relu(dense(layers["Dense_1"], leaky_relu(first)))
    return gaussian(dense(layers["Dense_2"], hidden))


# ---------------------------------------------------------------------------------------------
# Convolutions with per-seed weights. vmap of a convolution whose weights are batched emits one
# grouped convolution (vmap's own rule, "grouped"), which XLA runs slowly; the other strategies
# compute the same function otherwise. `seed_conv` is a static attribute of the conv modules,
# so another strategy is another compiled program. Outside vmap all three are one convolution.
#   "grouped"  vmap's own rule: one grouped convolution per layer.
#   "loop"     under vmap, one ordinary convolution per seed (unrolled), forward and backward.
#   "patches"  im2col (strided slices, concatenated) + a matmul: under vmap a batched matmul.
# With "grouped" (and always for one agent) the convolutions are computed the way the backend
# runs fastest (`convolutions.formulation_for`).


def check_seed_conv(name: str) -> None:
    if name not in SEED_CONVS:
        raise ValueError(f"seed_conv must be one of {', '.join(SEED_CONVS)}, got {name!r}")


lax_conv = convolutions.conv_lax


def _per_seed(fun):
    """`fun`, which vmap runs once per index of the mapped axis (unrolled) instead of batching."""

    @jax.custom_batching.custom_vmap
    def mapped(*args):
        return fun(*args)

    @mapped.def_vmap
    def rule(axis_size, in_batched, *args):
        outs = [fun(*(a[i] if batched else a for a, batched in zip(args, in_batched)))
                for i in range(axis_size)]
        out = jax.tree.map(lambda *seeds: jnp.stack(seeds), *outs)
        return out, jax.tree.map(lambda _: True, out)

    return mapped


@functools.lru_cache(maxsize=None)
def _looped_conv(strides: tuple[int, int], padding: tuple[tuple[int, int], tuple[int, int]]):
    # custom_vmap has no reverse mode (jax 0.10): custom_vjp goes outside it, and the backward's
    # two convolutions (input and kernel gradients) are unrolled over seeds too.
    conv = functools.partial(lax_conv, strides=strides, padding=padding)
    forward = _per_seed(conv)
    backward = _per_seed(lambda x, kernel, g: jax.vjp(conv, x, kernel)[1](g))

    @jax.custom_vjp
    def looped(x, kernel):
        return forward(x, kernel)

    looped.defvjp(lambda x, kernel: (forward(x, kernel), (x, kernel)),
                  lambda res, g: backward(*res, g))
    return looped


def loop_conv(x, kernel, strides, padding) -> jax.Array:
    """`lax_conv`; under vmap, one ordinary convolution per seed."""
    return _looped_conv(tuple(strides), tuple(map(tuple, padding)))(x, kernel)


# "patches": im2col + one matmul, which under vmap batches over seeds.
CONVS = {"grouped": lax_conv, "loop": loop_conv, "patches": convolutions.conv_as_gemm}


def conv_for(seed_conv: str, formulation: str):
    """The convolution of a conv module: a seed strategy's where seeds batch it (not
    "grouped"), else the backend formulation's (`convolutions.FORMULATIONS`)."""
    if seed_conv != PLAIN_CONV:
        return CONVS[seed_conv]
    return convolutions.FORMULATIONS[formulation].conv


def conv_transpose_for(seed_conv: str, formulation: str):
    """The strided transposed convolution of the decoder, chosen as `conv_for` does."""
    if seed_conv != PLAIN_CONV:
        return functools.partial(convolutions.conv_transpose_phases, conv=CONVS[seed_conv])
    return convolutions.FORMULATIONS[formulation].conv_transpose


def _flax_conv_fn(conv):
    """nn.Conv's conv_general_dilated computed by `conv` (None: flax's own lax call)."""
    if conv is lax_conv:
        return None

    def conv_general_dilated(x, kernel, strides, padding, *, lhs_dilation, rhs_dilation,
                             dimension_numbers, feature_group_count, precision):
        assert set(lhs_dilation) == set(rhs_dilation) == {1} and feature_group_count == 1
        assert precision is None and dimension_numbers == jax.lax.conv_dimension_numbers(
            x.shape, kernel.shape, convolutions.NHWC_HWIO)
        return conv(x, kernel, tuple(strides), tuple(map(tuple, padding)))

    return conv_general_dilated


class Encoder(nn.Module):
    """[N, 64, 64, 3] in [0, 1] -> [N, feature_dim]: five convolutions, leaky ReLU after each."""

    feature_dim: int
    dtype: jnp.dtype
    seed_conv: str
    formulation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _flax_conv_fn(conv_for(self.seed_conv, self.formulation))
        layers = (  # (channels, kernel, stride, padding): 64 → 32 → 16 → 8 → 4 → 1
            (32, 5, 2, 2), (64, 3, 2, 1), (128, 3, 2, 1), (256, 3, 2, 1),
            (self.feature_dim, 4, 1, 0),
        )
        for channels, kernel, stride, pad in layers:
            x = nn.Conv(channels, (kernel, kernel), (stride, stride), [(pad, pad), (pad, pad)],
                        kernel_init=glorot, dtype=self.dtype, conv_general_dilated=conv)(x)
            x = leaky_relu(x)
        return x.reshape(x.shape[0], -1)


class ConvTranspose(nn.Module):
    """Transposed convolution with a [k, k, Cin, Cout] kernel; stride 1 only on a 1×1 input."""

    features: int
    kernel_size: int
    stride: int
    padding: int
    dtype: jnp.dtype
    seed_conv: str
    formulation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", glorot, (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = x.astype(self.dtype)
        if self.stride == 1:
            # A 1×1 input with no padding: every tap lands on its own output pixel.
            assert x.shape[1:3] == (1, 1) and self.padding == 0
            y = jnp.einsum("nc,hwcd->nhwd", x[:, 0, 0], kernel.astype(self.dtype))
        else:
            conv_transpose = conv_transpose_for(self.seed_conv, self.formulation)
            y = conv_transpose(x, kernel.astype(self.dtype), self.stride, self.padding)
        return y + bias.astype(self.dtype)


class Decoder(nn.Module):
    """[N, z1 + z2] -> [N, 64, 64, 3]: the mean image; leaky ReLU after every layer.

    docs/algorithm.md §2.
    """

    dtype: jnp.dtype
    seed_conv: str
    formulation: str

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = z[:, None, None, :]
        layers = (  # (channels, kernel, stride, padding): 1 → 4 → 8 → 16 → 32 → 64
            (256, 4, 1, 0), (128, 3, 2, 1), (64, 3, 2, 1), (32, 3, 2, 1), (3, 5, 2, 2),
        )
        for channels, kernel, stride, pad in layers:
            x = leaky_relu(ConvTranspose(channels, kernel, stride, pad, self.dtype,
                                         self.seed_conv, self.formulation)(x))
        return x


class Actor(nn.Module):
    """[N, T·F + (T−1)·A] -> mean, log_std [N, A]; log_std clipped to [-20, 2]."""

    action_dim: int
    hidden_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP((self.hidden_dim, self.hidden_dim, 2 * self.action_dim))(x)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class TwinCritic(nn.Module):
    """Two independent Q networks: z [N, Z], a [N, A] -> q1, q2 [N]."""

    hidden_dim: int

    @nn.compact
    def __call__(self, z: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = jnp.concatenate([z, action], axis=-1)
        q1 = MLP((self.hidden_dim, self.hidden_dim, 1), name="q1")(x)
        q2 = MLP((self.hidden_dim, self.hidden_dim, 1), name="q2")(x)
        return q1[..., 0], q2[..., 0]


# The latent model's networks, by name; p(z1_0) is N(0, I) and has none (docs/algorithm.md §2).
LATENT_NETWORKS = ("encoder", "decoder", "z1_posterior_init", "z1_posterior", "z2_prior_init",
                   "z1_prior", "z2_prior", "reward")


@dataclasses.dataclass(frozen=True)
class Networks:
    """Every module of one agent (hashable: a static argument of jitted functions).

    `z2_prior` and `z2_prior_init` are also the z2 posteriors: the same parameters, so their KL
    is zero and never computed.
    """

    encoder: Encoder
    decoder: Decoder
    z1_posterior_init: GaussianHead  # q(z1_0 | x_0)
    z1_posterior: GaussianHead  # q(z1_t+1 | x_t+1, z2_t, a_t)
    z2_prior_init: GaussianHead  # p(z2_0 | z1_0)
    z1_prior: GaussianHead  # p(z1_t+1 | z2_t, a_t)
    z2_prior: GaussianHead  # p(z2_t+1 | z1_t+1, z2_t, a_t)
    reward: GaussianHead  # p(r_t | z_t, a_t, z_t+1)
    actor: Actor
    critic: TwinCritic

    @property
    def latent(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in LATENT_NETWORKS}


def build(cfg: AgentConfig, action_dim: int, seed_conv: str = PLAIN_CONV,
          formulation: str | None = None) -> Networks:
    """The agent's modules with cfg's sizes. `seed_conv` (SEED_CONVS) only matters under vmap;
    `formulation` (`convolutions.FORMULATIONS`; None: the default backend's) is how the
    convolutions are computed where no seed strategy is."""
    check_seed_conv(seed_conv)
    formulation = formulation or convolutions.formulation_for(jax.default_backend())
    dtype = jnp.dtype(cfg.dtype)
    hidden = cfg.hidden_dim
    return Networks(
        encoder=Encoder(cfg.feature_dim, dtype, seed_conv, formulation),
        decoder=Decoder(dtype, seed_conv, formulation),
        z1_posterior_init=GaussianHead(cfg.z1_dim, hidden),
        z1_posterior=GaussianHead(cfg.z1_dim, hidden),
        z2_prior_init=GaussianHead(cfg.z2_dim, hidden),
        z1_prior=GaussianHead(cfg.z1_dim, hidden),
        z2_prior=GaussianHead(cfg.z2_dim, hidden),
        reward=GaussianHead(1, hidden),
        actor=Actor(action_dim, hidden),
        critic=TwinCritic(hidden),
    )
