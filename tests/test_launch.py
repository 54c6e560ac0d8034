"""Starting up: which arguments reach jax.distributed.initialize under each launcher
(faked by environment variables, initialize mocked), the launches it cannot serve,
and the accelerator report."""
import logging

import pytest

from dit_jax import accelerators, distributed
from dit_jax.configlib import ConfigError

SRUN = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_PROCID": "1",
        "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "node[01-02]"}
SALLOC = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "node[01-02]"}
SBATCH_ONE_TASK = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
                   "SLURM_LOCALID": "0"}
OMPI4 = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1",
         "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.0.0.1:34911"}
OMPI5 = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}


@pytest.fixture
def calls(monkeypatch):
  """The keyword arguments of every jax.distributed.initialize call; no TPU, no mpi4py."""
  made = []
  monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: made.append(kw))
  monkeypatch.setattr(distributed.jax.config, "update", lambda *a: None)
  monkeypatch.setattr(accelerators, "tpu_chips", lambda: 0)
  monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: None)
  return made


@pytest.mark.parametrize("env,expected", [
    ({}, None),                                   # a plain single process
    (SBATCH_ONE_TASK, None),                      # one task: keep every GPU of the node
    (SRUN, {}),                                   # srun: JAX reads SLURM_* itself
    (OMPI4, {}),                                  # mpirun of Open MPI 4
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, {}),
])
def test_each_launcher_reaches_initialize_with_what_jax_detects_itself(calls, env, expected):
  joined = distributed.initialize(env=env)
  assert joined == (expected is not None)
  assert calls == ([] if expected is None else [expected])


def test_a_cloud_tpu_vm_lets_jax_find_its_slice_without_any_variable(calls, monkeypatch):
  # `gcloud compute tpus tpu-vm ssh --worker=all`: no TPU_WORKER_HOSTNAMES (GKE only)
  monkeypatch.setattr(accelerators, "tpu_chips", lambda: 4)
  assert distributed.initialize(env={})
  assert calls == [{}]
  assert not distributed.initialize(env={"JAX_PLATFORMS": "cpu"})  # the CPU, on purpose
  assert len(calls) == 1


def test_hand_launch_flags_win_over_the_environment(calls):
  assert distributed.initialize("10.0.0.1:1234", 2, 1, env=SRUN)
  assert calls == [dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)]


def test_mpi_without_an_address_jax_reads_goes_through_mpi4py_or_is_refused(
    calls, monkeypatch):
  with pytest.raises(ConfigError, match="pip install mpi4py"):
    distributed.initialize(env=OMPI5)
  assert calls == []
  monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: object())
  assert distributed.initialize(env=OMPI5)
  assert calls == [{"cluster_detection_method": "mpi4py"}]


@pytest.mark.parametrize("flags,match", [
    ((None, None, None), "not started by srun"),           # salloc -n4, then python
    (("10.0.0.1:1234", 2, None), "go together"),
    (("10.0.0.1:1234", 2, 2), r"must be in \[0, --num_processes=2\)"),
])
def test_launches_that_cannot_work_are_clear_errors_before_initialize(calls, flags, match):
  with pytest.raises(ConfigError, match=match):
    distributed.initialize(*flags, env=SALLOC)
  assert calls == []


def test_what_jax_cannot_complete_is_a_clear_error(monkeypatch, calls):
  def incomplete(**kw):
    raise ValueError("Number of processes must be defined.")

  monkeypatch.setattr(distributed.jax.distributed, "initialize", incomplete)
  with pytest.raises(ConfigError, match="from JAX_COORDINATOR_ADDRESS .*Number of processes"):
    distributed.initialize(env={"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
  monkeypatch.setattr(accelerators, "tpu_chips", lambda: 4)
  with pytest.raises(ConfigError, match="make run ACCEL=tpu"):
    distributed.initialize(env={})


def _pci(root, name, vendor, device):
  d = root / name
  d.mkdir()
  (d / "vendor").write_text(vendor + "\n")
  (d / "device").write_text(device + "\n")


def test_tpu_chips_are_counted_from_the_pci_bus_and_gvnic_is_not_one(tmp_path):
  _pci(tmp_path, "0000:00:04.0", "0x1ae0", "0x0042")  # Google's gVNIC network card
  _pci(tmp_path, "0000:00:05.0", "0x10de", "0x2330")  # an NVIDIA H100
  assert accelerators.tpu_chips(str(tmp_path)) == 0
  for i in range(4):
    _pci(tmp_path, f"0000:00:0{6 + i}.0", "0x1ae0", "0x005e")  # TPU v4
  assert accelerators.tpu_chips(str(tmp_path)) == 4


def test_an_accelerator_jax_does_not_use_is_a_loud_warning(monkeypatch, caplog):
  monkeypatch.setattr(accelerators, "present", lambda: "gpu")
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  with caplog.at_level(logging.INFO, logger="dit_jax"):
    assert accelerators.report() == ("gpu", "cpu")  # these tests run on the CPU backend
  assert "backend cpu" in caplog.text
  warning = [r for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warning) == 1 and "make run ACCEL=cuda12" in warning[0].getMessage()
  caplog.clear()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the CPU on purpose: said, not shouted
  with caplog.at_level(logging.INFO, logger="dit_jax"):
    accelerators.report()
  assert "backend cpu" in caplog.text and "ACCEL" not in caplog.text


def test_each_use_of_a_barrier_gets_its_own_key(monkeypatch):
  """Orbax refuses a barrier key used twice; one process passes `dit_jax_loop_0` once
  per sweep point or control run."""
  keys = []
  monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
  monkeypatch.setattr(distributed.ocp.multihost, "get_barrier_sync_fn",
                      lambda: lambda key, timeout_ms: keys.append(key))
  for _ in range(3):
    distributed.barrier("dit_jax_loop_0")
  distributed.barrier("dit_jax_set_aside_damaged")
  assert len(keys) == len(set(keys)) == 4
  assert all(k.startswith("dit_jax_loop_0") for k in keys[:3])
