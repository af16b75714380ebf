"""How fast is one jitted MAPPO update (rollout + GAE + PPO epochs), and does any of it run \
outside XLA?

Two envs go through the same learner (`rl.learner.make_update`, settings from configs/default.py's
`ppo` and `game` sections):

- pruning: the token-pruning game (`rl.pruning_env`) on the Fashion-MNIST benchmark ViT geometry
  (28 px, patch 4: 49 patches + CLS, 6 blocks, so 5 pruning points), random weights and images
  (timing does not depend on them);
- toy: the ViT-free keep/prune game (`rl.toy_env`), E=256 envs x A=64 agents, i.e. the learner's
  own speed.

For each, the update is jitted once with the learner state donated, compiled ahead of time, called
once to warm up, then called --updates times. Each call is timed twice: when it returns (async
dispatch: the Python and runtime work of launching it) and when its outputs are ready (total).
Since the call does nothing but launch one XLA executable, dispatch / total bounds the share of the
update spent outside XLA; it should be ~0. Two checks back this up: the timed calls run under
`jax.transfer_guard('disallow')` (any implicit host<->device transfer raises), and the compiled HLO
is searched for host callbacks, infeed/outfeed and send/recv (there must be none).

Token decisions per update are the acting agent slots summed over the rollout
(acting_fraction * T * E * A), i.e. one keep/prune sample per (step, image, kept patch). That count
falls as the freshly initialised policy learns to prune during the timed updates, while the
update's cost does not (shapes are static), so the rate over all agent slots (T * E * A per update)
is printed too. Run from the repository root:

  PYTHONPATH=. python benchmarks/learner_speed.py [--json out.json]
"""

import argparse
import json
import os
import re
import statistics
import time
from collections.abc import Sequence
from typing import Any, Optional

import jax
import ml_collections

from configs import default
from vitprune_jax.models import vit
from vitprune_jax.rl import learner, networks, pruning_env, toy_env

# HLO ops that would move data between host and device in the middle of the step.
HOST_OP_PATTERN = re.compile(
  r'custom_call_target="[^"]*callback[^"]*"|\b(?:infeed|outfeed|send|recv)\('
)
SHARE_TARGET = 0.01  # Outside-XLA share of the update that still counts as ~0.


def load_config() -> ml_collections.ConfigDict:
  """configs/default.py's config (`configs` is installed with the package)."""
  return default.get_config()


def fashion_mnist_vit() -> vit.ViTConfig:
  """The Fashion-MNIST benchmark model's geometry: 49 patches + CLS, 6 blocks."""
  return vit.ViTConfig(
    num_classes=10,
    image_size=28,
    patch_size=4,
    hidden_size=96,
    num_layers=6,
    num_heads=3,
    mlp_dim=192,
    num_channels=1,
  )


def pruning_setup(
  config: ml_collections.ConfigDict, num_envs: int, key: jax.Array, action_mode: str = 'free'
) -> tuple[learner.EnvFns, dict[str, jax.Array], int]:
  """The token-pruning env over a random-weight ViT and E random images (budget mode: budgets
  spread over `game.budget_range`); returns (env, inputs, A)."""
  cfg = fashion_mnist_vit()
  model_key, image_key, label_key = jax.random.split(key, 3)
  images = jax.random.normal(
    image_key, (num_envs, cfg.image_size, cfg.image_size, cfg.num_channels)
  )
  labels = jax.random.randint(label_key, (num_envs,), 0, cfg.num_classes)
  model = vit.VisionTransformer(cfg)
  params = jax.jit(model.init)(model_key, images[:1])['params']
  g = config.game
  env = pruning_env.make_env(
    model,
    params,
    accuracy_weight=g.accuracy_weight,
    efficiency_weight=g.efficiency_weight,
    points=tuple(g.pruning_points),
    accuracy_clip=g.accuracy_clip,
    action_mode=action_mode,
  )
  inputs = {'image': images, 'label': labels}
  if action_mode == 'budget':
    inputs['budget'] = jax.numpy.linspace(*g.budget_range, num_envs)
  return env, inputs, cfg.num_tokens


def toy_setup(
  num_envs: int, num_agents: int, num_steps: int, num_features: int, key: jax.Array
) -> tuple[learner.EnvFns, jax.Array, int]:
  """The toy game; its inputs are the fixed distractor features (E, A, F - 1)."""
  env = toy_env.make_toy_env(num_agents, num_features, num_steps)
  return env, toy_env.make_toy_inputs(key, num_envs, num_agents, num_features), num_agents


def count_dots(jaxpr) -> int:
  """dot_general equations in a jaxpr, through every sub-jaxpr: the rollout's matmul count."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == 'dot_general'
    for sub in jax.core.jaxprs_in_params(eqn.params):
      count += count_dots(sub)
  return count


def host_ops(hlo_text: str) -> list[str]:
  """Host callbacks and host transfers in the compiled step; a step that never leaves XLA has
  none."""
  return [m.group(0) for m in HOST_OP_PATTERN.finditer(hlo_text)]


def bench(
  config: ml_collections.ConfigDict,
  env: learner.EnvFns,
  inputs: Any,
  num_agents: int,
  updates: int,
  key: jax.Array,
) -> dict[str, Any]:
  """Compiles, warms up and times `updates` calls of the donated, jitted update; returns every
  figure."""
  ppo = learner.PPOConfig(**{k: config.ppo[k] for k in learner.PPOConfig._fields})
  init_key, reset_key, run_key = jax.random.split(key, 3)
  actor, critic = networks.Actor(config.ppo.hidden_size), networks.Critic(config.ppo.hidden_size)
  _, sample_obs = jax.jit(env.reset)(reset_key, inputs)
  state = jax.jit(lambda k: learner.init_learner(k, ppo, actor, critic, sample_obs))(init_key)
  keys = list(jax.random.split(run_key, updates + 1))
  num_envs = jax.tree_util.tree_leaves(inputs)[0].shape[0]
  slots = env.num_steps * num_envs * num_agents

  start = time.perf_counter()
  update = jax.jit(learner.make_update(ppo, env, actor, critic), donate_argnums=(0,))
  compiled = update.lower(state, inputs, keys[0]).compile()
  compile_s = time.perf_counter() - start
  found = host_ops(compiled.as_text())

  start = time.perf_counter()
  state, metrics = jax.block_until_ready(compiled(state, inputs, keys[0]))
  first_call_s = time.perf_counter() - start

  dispatch, total, all_metrics = [], [], []
  with jax.transfer_guard('disallow'):
    for step_key in keys[1:]:
      start = time.perf_counter()
      state, metrics = compiled(state, inputs, step_key)
      returned = time.perf_counter()
      jax.block_until_ready((state, metrics))
      done = time.perf_counter()
      dispatch.append(returned - start)
      total.append(done - start)
      all_metrics.append(metrics)

  # The rollout alone (same state, inputs and keys), so the update splits into rollout + PPO phase.
  roll = jax.jit(lambda s, i, k: learner.rollout(k, s, env, actor, critic, i)[0].reward)
  roll_compiled = roll.lower(state, inputs, keys[0]).compile()
  rollout_dots = count_dots(jax.make_jaxpr(roll)(state, inputs, keys[0]).jaxpr)
  jax.block_until_ready(roll_compiled(state, inputs, keys[0]))
  rollout_total = []
  for step_key in keys[1:]:
    start = time.perf_counter()
    jax.block_until_ready(roll_compiled(state, inputs, step_key))
    rollout_total.append(time.perf_counter() - start)

  decisions = [round(float(m['acting_fraction']) * slots) for m in all_metrics]
  median_total = statistics.median(total)
  median_dispatch = statistics.median(dispatch)
  mean_decisions = statistics.fmean(decisions)
  share = median_dispatch / median_total
  return {
    'num_envs': num_envs,
    'num_agents': num_agents,
    'num_steps': env.num_steps,
    'agent_slots': slots,
    'features': int(sample_obs.obs.shape[-1]),
    'global_state': int(sample_obs.global_state.shape[-1]),
    'sgd_steps': ppo.update_epochs * ppo.num_minibatches,
    'updates': updates,
    'compile_seconds': compile_s,
    'first_call_seconds': first_call_s,
    'median_update_seconds': median_total,
    'median_rollout_seconds': statistics.median(rollout_total),
    'median_ppo_seconds': median_total - statistics.median(rollout_total),
    'rollout_matmuls': rollout_dots,
    'median_dispatch_seconds': median_dispatch,
    'median_xla_wait_seconds': statistics.median(t - d for t, d in zip(total, dispatch)),
    'updates_per_second': 1.0 / median_total,
    'decisions_per_update': mean_decisions,
    'decisions_per_second': mean_decisions / median_total,
    'agent_slots_per_second': slots / median_total,
    'outside_xla_share': share,
    'outside_xla_share_max': max(d / t for d, t in zip(dispatch, total)),
    'transfer_guard': 'disallow',
    'host_ops_in_hlo': found,
    'no_host_work': share <= SHARE_TARGET and not found,
    'final_metrics': {k: float(v) for k, v in all_metrics[-1].items()},
    'samples_seconds': {'total': total, 'dispatch': dispatch},
    'decisions': decisions,
  }


def print_report(name: str, r: dict[str, Any]) -> None:
  """A few lines per env: sizes, compile, throughput, and the outside-XLA checks."""
  print(
    f'[{name}] E={r["num_envs"]} A={r["num_agents"]} T={r["num_steps"]} '
    f'({r["agent_slots"]} agent slots, '
    f'F={r["features"]}, G={r["global_state"]}), {r["sgd_steps"]} minibatch steps per update'
  )
  print(
    f'  compile {r["compile_seconds"]:.1f} s, first call {r["first_call_seconds"] * 1e3:.0f} ms'
  )
  print(
    f'  update {r["median_update_seconds"] * 1e3:.1f} ms (median of {r["updates"]}): '
    f'{r["updates_per_second"]:.2f} updates/s, '
    f'{r["decisions_per_update"]:.0f} token decisions per update, '
    f'{r["decisions_per_second"]:,.0f} decisions/s '
    f'(all agent slots: {r["agent_slots_per_second"]:,.0f}/s)'
  )
  print(
    f'  split: rollout {r["median_rollout_seconds"] * 1e3:.1f} ms '
    f'({r["rollout_matmuls"]} matmuls in its program), PPO phase '
    f'{r["median_ppo_seconds"] * 1e3:.1f} ms (update minus rollout)'
  )
  print(
    f'  outside XLA: dispatch {r["median_dispatch_seconds"] * 1e6:.0f} us of '
    f'{r["median_update_seconds"] * 1e3:.1f} ms = {r["outside_xla_share"] * 100:.3f} % '
    f'(max {r["outside_xla_share_max"] * 100:.3f} %); '
    'no implicit transfer under transfer_guard(disallow); '
    f'host ops in HLO: {len(r["host_ops_in_hlo"])}'
  )
  verdict = 'met' if r['no_host_work'] else 'NOT met'
  print(f'  ~0 outside XLA (share <= {SHARE_TARGET * 100:.0f} %, no host ops): {verdict}')


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--num-envs', type=int, default=64, help='images per update in the pruning env'
  )
  parser.add_argument('--updates', type=int, default=10, help='timed updates; medians are reported')
  parser.add_argument('--toy-envs', type=int, default=256)
  parser.add_argument('--toy-agents', type=int, default=64)
  parser.add_argument(
    '--toy-steps', type=int, default=5, help='default: as many as the pruning env has points'
  )
  parser.add_argument('--toy-features', type=int, default=8)
  parser.add_argument('--skip-toy', action='store_true', help='time only the pruning env')
  parser.add_argument(
    '--action-mode',
    choices=pruning_env.ACTION_MODES,
    default='free',
    help='the pruning game: free (RL4EViT) or budget (a joint top-k draw per point)',
  )
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
    '--json', default=None, metavar='PATH', help='also write every figure to this file'
  )
  args = parser.parse_args(argv)
  if args.updates < 1:
    parser.error('--updates must be >= 1')

  config = load_config()
  device = jax.devices()[0]
  print(
    f'jax {jax.__version__}, device {device} ({os.cpu_count()} cores visible); ppo: '
    f'{config.ppo.update_epochs} epochs x {config.ppo.num_minibatches} minibatches, '
    f'hidden {config.ppo.hidden_size}'
  )
  pruning_key, toy_key = jax.random.split(jax.random.PRNGKey(args.seed))
  result = {
    'jax_version': jax.__version__,
    'device': str(device),
    'backend': device.platform,
    'ppo': config.ppo.to_dict(),
    'game': config.game.to_dict(),
    'outside_xla_share_target': SHARE_TARGET,
  }
  setup_key, run_key = jax.random.split(pruning_key)
  result['pruning'] = bench(
    config,
    *pruning_setup(config, args.num_envs, setup_key, args.action_mode),
    args.updates,
    run_key,
  )
  print_report(f'pruning env ({args.action_mode} mode), Fashion-MNIST ViT', result['pruning'])
  if not args.skip_toy:
    setup_key, run_key = jax.random.split(toy_key)
    env_inputs_agents = toy_setup(
      args.toy_envs, args.toy_agents, args.toy_steps, args.toy_features, setup_key
    )
    result['toy'] = bench(config, *env_inputs_agents, args.updates, run_key)
    print_report('toy env, no ViT', result['toy'])
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
