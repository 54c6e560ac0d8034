"""Images and plots written to the workdir.

Figures are made with matplotlib's object API (matplotlib.figure.Figure), not
pyplot: no backend is selected and no global state is touched, so importing
this module changes nothing for a notebook that imports it too.
"""
import os

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from dit_jax import sample_metrics

MIN_PIXELS = 64  # each image in a grid is upscaled (nearest) to at least this many pixels
MEMORIZED = 1 / 3  # |x - NN1| <= MEMORIZED |x - NN2|: the memorization criterion


def new_figure(cols=1, width=5.0, height=3.8):
  """(figure, row of axes): a Figure of `cols` panels, without pyplot."""
  fig = Figure(figsize=(width * cols, height))
  return fig, fig.subplots(1, cols, squeeze=False)[0]


def to_uint8(x, value_range=(-1.0, 1.0)):
  """Model-space images to uint8; data without a fixed range is min-max scaled."""
  x = np.asarray(x, np.float32)
  lo, hi = value_range if value_range is not None else (x.min(), x.max())
  return np.clip(np.round((x - lo) / max(hi - lo, 1e-8) * 255), 0, 255).astype(np.uint8)


def save_grid(images_NHWC, path, value_range=(-1.0, 1.0), scale=None, cols=None):
  """Saves N images as a near-square grid PNG; each image is upscaled by an integer
  factor (nearest) to at least MIN_PIXELS pixels, so 8x8 images are visible."""
  imgs = to_uint8(images_NHWC, value_range)
  if imgs.shape[-1] not in (1, 3):  # e.g. a 2-channel gmm layout: show the first channel
    imgs = imgs[..., :1]
  n, h, w, c = imgs.shape
  cols = cols or int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  grid = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = imgs[i]
  scale = scale or max(1, -(-MIN_PIXELS // min(h, w)))
  img = Image.fromarray(grid[..., 0] if c == 1 else grid)
  img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path


def save_figure(fig, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def _series(rows, key):
  pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), float)]
  return np.array(pts).T if pts else None


def plot_gap_curves(rows, path, prefix="memo_ema"):
  """Losses on the fixed probes over training, and where the model sits between scores."""
  fig, (ax1, ax2) = new_figure(2)
  for key, label, style in [(f"{prefix}/train_loss", "model, train probe", "-"),
                            (f"{prefix}/heldout_loss", "model, held-out probe", "-"),
                            ("memo/gt_loss", "ground-truth score", "--"),
                            ("memo/emp_loss", "empirical score", ":")]:
    xy = _series(rows, key)
    if xy is not None:
      ax1.plot(*xy, style, label=label)
  ax1.set(xlabel="step", ylabel="denoising loss", title="loss on fixed probes")
  ax1.legend(fontsize=8)
  if _series(rows, f"{prefix}/index") is not None:
    ax2.plot(*_series(rows, f"{prefix}/index"), label="memo index")
    ax2.axhline(1, color="gray", lw=0.5, ls=":")
    ax2.set(title="memo index: 0 at the true score, 1 at the empirical")
  else:  # no known density: the held-out minus train gap, overall and at small t
    for key, label in [(f"{prefix}/gap", "all t"), (f"{prefix}/gap_t0", "smallest t bucket")]:
      xy = _series(rows, key)
      if xy is not None:
        ax2.plot(*xy, label=label)
    ax2.set(title="held-out loss - train loss")
  ax2.axhline(0, color="gray", lw=0.5)
  ax2.set(xlabel="step")
  ax2.legend(fontsize=8)
  return save_figure(fig, path)


def plot_gap_vs_t(row, t_centers, path, prefix="memo_ema"):
  """Per-bucket gaps at one step against the diffusion time (small t first)."""
  fig, (ax,) = new_figure()
  b = len(t_centers)
  for key, label in [(f"{prefix}/gap", "model: held-out - train"),
                     ("memo/loss_gap", "Loss-Gap: gt - emp (exact)")]:
    ys = [row.get(f"{key}_t{i}") for i in range(b)]
    if all(isinstance(y, float) for y in ys):
      ax.plot(t_centers, ys, "o-", label=label)
  ax.set(xscale="log", xlabel="t (bucket centre)", ylabel="loss difference",
         title=f"gaps by noise level, step {row.get('step')}")
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def plot_ratio_hist(d1sq, d2sq, path, threshold=MEMORIZED):
  ratio = sample_metrics.d_ratio(d1sq, d2sq)
  fig, (ax,) = new_figure()
  ax.hist(ratio, bins=50, range=(0, 1))
  ax.axvline(threshold, color="red", ls="--", label=f"memorized if <= {threshold:.2f}")
  ax.set(xlabel="d(NN1) / d(NN2)", ylabel="samples",
         title=f"{np.mean(ratio <= threshold):.1%} of {len(ratio)} samples memorized")
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def _display(x_HWC, value_range):
  """uint8 (H, W) or (H, W, 3) for imshow; other channel counts show the first."""
  img = to_uint8(x_HWC, value_range)
  return img if img.shape[-1] == 3 else img[..., 0]


def save_nn_pairs(samples_NHWC, train_NHWC, nn_idx, d1sq, d2sq, path, value_range, num=16):
  """Each generated sample beside its nearest training image, labelled with the
  distance ratio |x - NN1| / |x - NN2| and whether that counts as memorized."""
  n = min(num, len(samples_NHWC))
  cols = 4
  rows = -(-n // cols)
  fig = Figure(figsize=(2.2 * cols, 1.35 * rows + 0.3))
  axes = fig.subplots(rows, 2 * cols, squeeze=False)
  ratio = sample_metrics.d_ratio(d1sq, d2sq)
  for ax in axes.flat:
    ax.axis("off")
  for i in range(n):
    a_s, a_t = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
    a_s.imshow(_display(samples_NHWC[i], value_range), cmap="gray", interpolation="nearest")
    a_t.imshow(_display(train_NHWC[int(nn_idx[i])], value_range), cmap="gray",
               interpolation="nearest")
    tag = "memorized" if ratio[i] <= MEMORIZED else ""
    a_s.set_title(f"sample r={ratio[i]:.2f}", fontsize=7, color="red" if tag else "black")
    a_t.set_title(f"nearest train {tag}", fontsize=7, color="red" if tag else "black")
  fig.suptitle("samples (left) and their nearest training image (right); r = d1 / d2, "
               f"memorized if r <= {MEMORIZED:.2f}", fontsize=8)
  return save_figure(fig, path)


# metric names in words for axis labels; a name not here is shown as it is
METRIC_LABELS = {
    "memo_ema/index": "memo index, EMA (0: true score, 1: memorizing)",
    "memo/index": "memo index (0: true score, 1: memorizing)",
    "memo_ema/gap": "held-out minus training loss, EMA",
    "memo/gap": "held-out minus training loss",
    "train/loss": "training loss",
}


def compare_runs(runs, labels, key, path, title=None):
  """One metric over training for several runs (lists of metrics rows; e.g. small vs large n).

  An index is drawn with its landmarks, 0 (the true score) and 1 (the memorizing
  score); a gap with its 0 (no generalization gap)."""
  fig, (ax,) = new_figure(width=5.5)
  for rows, label in zip(runs, labels):
    xy = _series(rows, key)
    if xy is not None:
      ax.plot(*xy, label=label)
  name = METRIC_LABELS.get(key, key)
  for y in (0.0, 1.0) if key.endswith("/index") else (0.0,) if key.endswith("/gap") else ():
    ax.axhline(y, color="k", lw=0.5, ls="--")
  ax.set(xlabel="training step", ylabel=name, title=title or name)
  ax.legend(fontsize=8)
  return save_figure(fig, path)
