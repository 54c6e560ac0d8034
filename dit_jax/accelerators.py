"""Which accelerator the machine has, and whether JAX is using it.

Probed from the operating system, not from JAX: a machine with an NVIDIA GPU or a
TPU whose JAX install has only the CPU backend still shows its hardware here, and
the start-up report says so loudly instead of training on the CPU in silence.
The Makefile's ACCEL=auto asks the same question (`python -m dit_jax.accelerators`).
"""
import glob
import logging
import os
import shutil
import sys

log = logging.getLogger("dit_jax")

# PCI ids: Google's vendor id, and the device ids of its TPU chips (v3 .. TPU7x); other
# Google PCI devices (the gVNIC network card) share the vendor id
GOOGLE_VENDOR = "0x1ae0"
TPU_DEVICES = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")
# device nodes the NVIDIA driver creates (the last: GPUs under WSL2)
NVIDIA_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")
# the pip extra (setup.py) that installs JAX's plugin for each
EXTRA = {"gpu": "cuda12", "tpu": "tpu"}


def tpu_chips(sysfs="/sys/bus/pci/devices"):
  """The number of TPU chips on the PCI bus (0 on anything but a TPU VM)."""
  count = 0
  for vendor in glob.glob(os.path.join(sysfs, "*", "vendor")):
    try:
      with open(vendor, encoding="ascii") as f:
        if f.read().strip() != GOOGLE_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor), "device"), encoding="ascii") as f:
        count += f.read().strip() in TPU_DEVICES
    except OSError:
      continue
  return count


def nvidia_gpu():
  """Whether an NVIDIA GPU and its driver are there."""
  return shutil.which("nvidia-smi") is not None or any(map(os.path.exists, NVIDIA_NODES))


def present():
  """'tpu', 'gpu' or 'cpu': the accelerator this machine has."""
  if tpu_chips():
    return "tpu"
  if nvidia_gpu():
    return "gpu"
  return "cpu"


def report():
  """Logs the backend and devices JAX uses; warns loudly when the machine has an
  accelerator JAX is not using (unless JAX_PLATFORMS=cpu asks for the CPU).
  -> (hardware, backend)."""
  import jax  # pylint: disable=import-outside-toplevel  # the Makefile's probe runs without it
  backend = jax.default_backend()
  devices = jax.local_devices()
  kinds = sorted({d.device_kind for d in devices})
  log.info("JAX %s: backend %s, %d local device(s) (%s), %d in all", jax.__version__,
           backend, len(devices), ", ".join(kinds), jax.device_count())
  hardware = present()
  if hardware != "cpu" and backend == "cpu" and os.environ.get("JAX_PLATFORMS") != "cpu":
    log.warning(
        "\n%s\nThis machine has a %s but JAX runs on the CPU: the JAX install has no %s "
        "backend. Install it with `make run ACCEL=%s` (or pip install -e '.[%s]' with "
        "-c constraints.txt), or set JAX_PLATFORMS=cpu to train on the CPU on purpose.\n%s",
        "!" * 72, hardware.upper(), hardware.upper(), EXTRA[hardware], EXTRA[hardware], "!" * 72)
  return hardware, backend


def _main():
  """Prints the pip extra for this machine: cuda12, tpu, or cpu (none)."""
  print(EXTRA.get(present(), "cpu"))


if __name__ == "__main__":
  sys.exit(_main())
