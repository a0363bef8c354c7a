"""Module shapes, sizes from the config, initialisation, and the backend formulations of the
convolutions giving one network."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slacjax import convolutions, latent, networks
from slacjax.convolutions import _phase_taps
from tests.helpers import ACTION_DIM, NETS, SMALL, TINY


@pytest.mark.parametrize("module", ["encoder", "decoder"])
def test_formulations_give_the_same_networks(module):
    """The backend formulations (`convolutions.FORMULATIONS`) are one function: the same
    outputs and gradients from the same parameters; each against the definition is
    tests/test_convolutions.py's."""
    nets = {name: networks.build(TINY, ACTION_DIM, formulation=name)
            for name in convolutions.FORMULATIONS}
    inputs = (jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3)) if module == "encoder"
              else jax.random.normal(jax.random.PRNGKey(1), (2, TINY.z_dim)))
    params = getattr(nets["phases"], module).init(jax.random.PRNGKey(0), inputs)

    def value_and_grad(name):
        apply = getattr(nets[name], module).apply
        return jax.jit(jax.value_and_grad(lambda p: jnp.sum(jnp.sin(apply(p, inputs)))))(params)

    value_a, grads_a = value_and_grad("phases")
    for name in set(nets) - {"phases"}:
        value_b, grads_b = value_and_grad(name)
        np.testing.assert_allclose(value_a, value_b, rtol=1e-4, err_msg=name)
        for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * float(jnp.abs(a).max()),
                                       err_msg=name)


def test_phase_taps_cover_every_kernel_tap_once():
    for kernel, padding in [(3, 1), (5, 2)]:
        taps, _, _ = _phase_taps(kernel, 2, padding)
        used = taps[taps < kernel]
        assert sorted(used.tolist()) == list(range(kernel))


def test_shapes_at_module_boundaries():
    key = jax.random.PRNGKey(0)
    frames = jnp.zeros((3, 64, 64, 3))
    enc_params = NETS.encoder.init(key, frames)
    chex.assert_shape(NETS.encoder.apply(enc_params, frames), (3, 256))
    z = jnp.zeros((3, 288))
    dec_params = NETS.decoder.init(key, z)
    chex.assert_shape(NETS.decoder.apply(dec_params, z), (3, 64, 64, 3))
    actor_in = jnp.zeros((3, 8 * 256 + 7 * ACTION_DIM))
    mean, log_std = NETS.actor.apply(NETS.actor.init(key, actor_in), actor_in)
    chex.assert_shape([mean, log_std], (3, ACTION_DIM))
    action = jnp.zeros((3, ACTION_DIM))
    q1, q2 = NETS.critic.apply(NETS.critic.init(key, z, action), z, action)
    chex.assert_shape([q1, q2], (3,))


def test_every_size_comes_from_the_config():
    nets = networks.build(SMALL, ACTION_DIM, "patches")
    assert (nets.encoder.feature_dim, nets.actor.action_dim) == (SMALL.feature_dim, ACTION_DIM)
    assert nets.encoder.seed_conv == nets.decoder.seed_conv == "patches"
    heads = [getattr(nets, name) for name in networks.LATENT_NETWORKS[2:]]
    assert {head.hidden_dim for head in heads + [nets.actor, nets.critic]} == {SMALL.hidden_dim}
    assert [head.dim for head in heads] == [SMALL.z1_dim, SMALL.z1_dim, SMALL.z2_dim,
                                            SMALL.z1_dim, SMALL.z2_dim, 1]
    with pytest.raises(ValueError, match="seed_conv must be one of"):
        networks.build(SMALL, ACTION_DIM, "depthwise")


def test_log_std_is_clipped():
    actor_in = jnp.full((1, 8 * 256 + 7 * ACTION_DIM), 1e4)
    params = NETS.actor.init(jax.random.PRNGKey(1), actor_in)
    _, log_std = NETS.actor.apply(params, actor_in)
    assert jnp.all(log_std >= -20) and jnp.all(log_std <= 2)


def test_latent_networks_have_spec_sizes_glorot_weights_and_zero_biases():
    params = latent.init_latent_params(TINY, ACTION_DIM, jax.random.PRNGKey(0))
    assert sorted(params) == ["decoder", "encoder", "reward", "z1_posterior", "z1_posterior_init",
                              "z1_prior", "z2_prior", "z2_prior_init"]
    enc = params["encoder"]["params"]
    assert [enc[f"Conv_{i}"]["kernel"].shape for i in range(5)] == [
        (5, 5, 3, 32), (3, 3, 32, 64), (3, 3, 64, 128), (3, 3, 128, 256), (4, 4, 256, 256)]
    dec = params["decoder"]["params"]
    assert [dec[f"ConvTranspose_{i}"]["kernel"].shape for i in range(5)] == [
        (4, 4, 288, 256), (3, 3, 256, 128), (3, 3, 128, 64), (3, 3, 64, 32), (5, 5, 32, 3)]
    head = params["z1_posterior"]["params"]["MLP_0"]
    assert [head[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [
        (256 + 256 + ACTION_DIM, 256), (256, 256), (256, 64)]
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(path)
        if name.endswith("['bias']"):
            assert jnp.all(leaf == 0), name
        else:  # Glorot uniform: |w| ≤ sqrt(6 / (fan_in + fan_out)), std = limit / sqrt(3)
            receptive = int(np.prod(leaf.shape[:-2]))
            limit = np.sqrt(6.0 / (receptive * (leaf.shape[-2] + leaf.shape[-1])))
            assert float(jnp.max(jnp.abs(leaf))) <= limit * (1 + 1e-6), name
            if leaf.size > 10_000:
                assert abs(float(jnp.std(leaf)) - limit / np.sqrt(3)) < 0.05 * limit, name
