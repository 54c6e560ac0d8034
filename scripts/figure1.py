"""The paper's Figure 1 at CPU scale, from exact scores (no training).

Loss-Gap_t = E_{P_hat_t} ||grad log p_hat_t - grad log p_t||^2 for the paper's
mixture (K=8, mu_k ~ N(0, 4 I_d), identity covariance) and several sample sizes n:
it grows as t -> 0 like d / s_t^2 and shrinks as n grows.

  python scripts/figure1.py --out docs/figure1.png      # also writes docs/figure1.json
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dit_jax import cli, diffusion, memorization, report

FLAGS = flags.FLAGS
flags.DEFINE_integer("d", 32, "Dimension.")
flags.DEFINE_integer("k", 8, "Mixture components.")
flags.DEFINE_list("n", ["64", "256", "1024", "4096"], "Training set sizes.")
flags.DEFINE_integer("queries", 1024, "Noised training points per (n, t).")
flags.DEFINE_integer("seed", 0, "Seed for the means, the data and the noise.")
flags.DEFINE_string("out", "docs/figure1.png", "Plot path; the numbers go beside it as .json.")


def loss_gap_curve(train_ND, gmm, sched, ts, queries, key):
  """Score-form Loss-Gap at each t, with its Monte Carlo standard error."""
  n = len(train_ND)
  means, stds = [], []
  for i, t in enumerate(ts):
    k1, k2 = jax.random.split(jax.random.fold_in(key, i))
    x0 = train_ND[jax.random.randint(k1, (queries,), 0, n)]
    a, s = sched.alpha_sigma(jnp.full((queries,), t))
    x = a[:, None] * x0 + s[:, None] * jax.random.normal(k2, x0.shape)
    diff = (memorization.empirical_eps(x, a, s, train_ND)
            - memorization.gmm_eps(x, a, s, *gmm)) / s[:, None]  # eps -> score units
    per = np.asarray(jnp.sum(diff ** 2, -1))
    means.append(float(per.mean()))
    stds.append(float(per.std() / np.sqrt(queries)))
  return means, stds


def main(argv):
  del argv
  cli.setup()
  rng = np.random.default_rng(FLAGS.seed)
  d, k = FLAGS.d, FLAGS.k
  mu = rng.normal(0, 2, (k, d)).astype(np.float32)
  gmm = (jnp.asarray(mu), jnp.ones(d), jnp.full((k,), 1 / k))
  sched = diffusion.Schedule("vp", t0=1e-3, t_max=10.0)
  ts = np.geomspace(1e-3, 3.0, 16)
  results = {"d": d, "k": k, "t": ts.tolist(), "curves": {}}
  fig, (ax,) = report.new_figure(width=5.5, height=4)
  for n in map(int, FLAGS.n):
    comp = rng.integers(0, k, n)
    train = jnp.asarray(mu[comp] + rng.normal(size=(n, d)).astype(np.float32))
    mean, se = loss_gap_curve(train, gmm, sched, ts, FLAGS.queries,
                              jax.random.PRNGKey(FLAGS.seed + n))
    results["curves"][str(n)] = {"loss_gap": mean, "stderr": se}
    ax.errorbar(ts, mean, yerr=se, marker="o", ms=3, label=f"n = {n}")
    print(f"n={n:5d}  loss_gap at t={ts[0]:.0e}: {mean[0]:.4g}   at t={ts[-1]:.1f}: {mean[-1]:.4g}")
  s2 = -np.expm1(-ts)
  ax.plot(ts, d / s2, "k--", lw=0.8, label="d / s_t^2")
  ax.set(xscale="log", yscale="log", xlabel="t", ylabel="Loss-Gap_t (score units)",
         title=f"Loss-Gap from exact scores, K={k}, d={d}")
  ax.legend(fontsize=8)
  report.save_figure(fig, FLAGS.out)
  with open(os.path.splitext(FLAGS.out)[0] + ".json", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
