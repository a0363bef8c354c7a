"""slacjax: SLAC (Stochastic Latent Actor-Critic) in JAX/Flax. docs/api.md lists the modules."""

__version__ = "0.1.0"
