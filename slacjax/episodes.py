"""Running the policy in environments: one episode in this process, or a batch of episodes side
by side in worker processes with one batched policy call per step (`run_episode_batches`: any
number of episodes, of one agent or of several agents' stacked params, in batches).

Every episode has its own reset seed and its own action key (`root_key`, folded with the step
index), so an episode's return does not depend on whether it ran alone or in a batch, nor on
which episodes shared its batch (up to the float rounding of a batched network call).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from slacjax import policy
from slacjax.config import AgentConfig

push_history = jax.jit(policy.history_push)
reset_history = jax.jit(policy.history_reset, static_argnums=(1, 2))


@functools.partial(jax.jit, static_argnames=("cfg",))
def policy_action(params, history: policy.History, root_key, index, greedy, cfg: AgentConfig):
    """The policy's action with the key fold_in(root_key, index): one dispatch per step."""
    key = jax.random.fold_in(root_key, index)
    return policy.act(params, history.frames, history.actions, key, greedy, cfg)


@functools.partial(jax.jit, static_argnames=("cfg", "stacked_params"))
def policy_actions(params, histories: policy.History, root_keys, index, greedy, cfg: AgentConfig,
                   stacked_params: bool = False):
    """`policy_action` for N windows at once: histories and root_keys [N, ·] -> actions [N, A].

    One agent's params for every window, or with `stacked_params` N agents' stacked [N, ·]
    (window i acts with agent i: the seeds of a multi-seed run).
    """
    def one(agent_params, history, root_key):
        return policy_action(agent_params, history, root_key, index, greedy, cfg)

    return jax.vmap(one, in_axes=(0 if stacked_params else None, 0, 0))(params, histories,
                                                                         root_keys)


@functools.partial(jax.jit, static_argnums=(1, 2))
def reset_histories(first_frames, action_dim: int, sequence_length: int) -> policy.History:
    """Episode starts of N envs: frames uint8 [N, H, W, 3] -> N stacked windows."""
    return jax.vmap(lambda frame: policy.history_reset(frame, action_dim, sequence_length))(
        first_frames)


push_histories = jax.jit(jax.vmap(policy.history_push))


def episode_keys(root_key: jax.Array, streams) -> jax.Array:
    """One action key per episode: fold_in(root_key, stream) for each stream -> [N, 2]."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        root_key, np.asarray(streams, np.uint32))


def run_episode(env, params, agent_cfg: AgentConfig, key, greedy: bool, reset_seed: int,
                record: bool = False) -> tuple[float, list[np.ndarray]]:
    """One episode of the policy in `env` -> (return, its frames if `record`)."""
    obs, _ = env.reset(seed=reset_seed)
    action_dim = int(env.action_space.shape[0])
    history = reset_history(obs, action_dim, agent_cfg.sequence_length)
    frames = [obs] if record else []
    total, step, done = 0.0, 0, False
    while not done:
        action = np.asarray(policy_action(params, history, key, np.int32(step), greedy,
                                          agent_cfg))
        obs, reward, terminated, truncated, _ = env.step(action)
        history = push_history(history, action, obs)
        if record:
            frames.append(obs)
        total += float(reward)
        step += 1
        done = terminated or truncated
    return total, frames


def run_episodes(vector_env, params, agent_cfg: AgentConfig, keys: jax.Array, greedy: bool,
                 reset_seeds, stacked_params: bool = False) -> np.ndarray:
    """One episode in each env of a vector env, stepped in lockstep -> returns [N].

    keys [N, 2] and reset_seeds (N ints) are the episodes' own, as `run_episode` takes them;
    `params` one agent's, or with `stacked_params` N agents' stacked [N, ·] (env i's episode
    acts with agent i). An env whose episode has ended keeps being stepped (the vector env
    resets it) until every episode has ended; what it does then is not counted.
    """
    count = vector_env.num_envs
    if len(reset_seeds) != count or keys.shape[0] != count:
        raise ValueError(f"{count} envs need {count} keys and reset seeds, got "
                         f"{keys.shape[0]} and {len(reset_seeds)}")
    obs, _ = vector_env.reset(seed=[int(seed) for seed in reset_seeds])
    action_dim = int(vector_env.single_action_space.shape[0])
    histories = reset_histories(obs, action_dim, agent_cfg.sequence_length)
    totals = np.zeros(count)
    running = np.ones(count, bool)
    step = 0
    while running.any():
        actions = np.asarray(policy_actions(params, histories, keys, np.int32(step), greedy,
                                            agent_cfg, stacked_params=stacked_params))
        obs, rewards, terminated, truncated, _ = vector_env.step(actions)
        totals += np.where(running, rewards, 0.0)
        running &= ~(terminated | truncated)
        histories = push_histories(histories, actions, obs)
        step += 1
    return totals


def run_episode_batches(env, params, agent_cfg: AgentConfig, keys: jax.Array, greedy: bool,
                        reset_seeds, agents=None) -> np.ndarray:
    """N episodes, each with its own key (keys [N, 2]) and reset seed -> their returns [N].

    A single env runs them one after another in this process (`run_episode`); a vector env of M
    envs runs them M at a time (`run_episodes`), a last partial batch padded with repeats of
    the last episode, whose returns are dropped. `params`: one agent's for every episode, or
    with `agents` (N indices) several agents' stacked [A, ·], episode i acting with agent
    agents[i], so the seeds of a multi-seed run share batches.
    """
    import gymnasium  # already loaded: `env` exists

    def params_for(episode_indices):
        if agents is None:
            return params
        # A copy per env of a batch: the vmapped policy takes each env's agent along the batch.
        chosen = np.asarray(agents)[episode_indices]
        return jax.tree.map(lambda leaf: leaf[chosen], params)

    count = len(reset_seeds)
    reset_seeds = np.asarray(reset_seeds)
    if not isinstance(env, gymnasium.vector.VectorEnv):
        return np.array([run_episode(env, params_for(index), agent_cfg, keys[index], greedy,
                                     int(reset_seeds[index]))[0] for index in range(count)])
    width = env.num_envs
    padded = np.minimum(np.arange(-(-count // width) * width), count - 1)
    returns = [run_episodes(env, params_for(batch), agent_cfg, keys[batch], greedy,
                            reset_seeds[batch], stacked_params=agents is not None)
               for batch in padded.reshape(-1, width)]
    return np.concatenate(returns)[:count] if returns else np.zeros(0)
