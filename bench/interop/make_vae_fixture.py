"""Writes a tiny random-weight diffusers AutoencoderKL and its reference outputs.

Runs in a torch venv with diffusers, never in dit_jax's:
  python3 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch==2.13.0 diffusers numpy
  /tmp/torchref/bin/python bench/interop/make_vae_fixture.py --out tests/data/vae_interop

The autoencoder is diffusers' own AutoencoderKL with kl-f8's block structure (four
DownEncoderBlock2D / UpDecoderBlock2D stages, two resnets each, the mid block's
attention, 8x down-sampling to 4 latent channels) but 4-8 channels and 2 norm
groups, on 16x16 images. save_pretrained writes the two files a user of
stabilityai/sd-vae-ft-ema has: config.json and diffusion_pytorch_model.safetensors.
Every weight, GroupNorm scales and shifts included, is perturbed away from its init.
reference.npz: x (NCHW in [-1, 1]), the encoder's latent mean (unscaled), z, and
decode(z) (z unscaled, as diffusers' decode takes it).
"""
import argparse
import json
import os

import numpy as np


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  import torch  # after the flags: --help works without torch or diffusers
  from diffusers import AutoencoderKL
  torch.manual_seed(0)
  vae = AutoencoderKL(in_channels=3, out_channels=3,
                      down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4,
                      block_out_channels=(4, 4, 8, 8), layers_per_block=2,
                      latent_channels=4, norm_num_groups=2, sample_size=16,
                      scaling_factor=0.18215).eval()
  with torch.no_grad():
    for p in vae.parameters():
      p.add_(0.1 * torch.randn_like(p))
  vae.save_pretrained(args.out, safe_serialization=True)
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
  z = rng.standard_normal((2, 4, 2, 2)).astype(np.float32)
  with torch.no_grad():
    mean = vae.encode(torch.from_numpy(x)).latent_dist.mean.numpy()
    decoded = vae.decode(torch.from_numpy(z)).sample.numpy()
  np.savez(os.path.join(args.out, "reference.npz"), x=x, mean=mean, z=z, decoded=decoded)
  sizes = {k: os.path.getsize(os.path.join(args.out, k)) for k in sorted(os.listdir(args.out))}
  print(json.dumps(sizes))


if __name__ == "__main__":
  main()
