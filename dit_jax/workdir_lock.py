"""One training run per workdir, and a workdir it can write to.

`acquire(workdir)` takes an exclusive flock on WORKDIR/.lock for the whole run. The
kernel drops a flock when its holder dies, so a run killed with -9 leaves no stale
lock behind; a second run on the same workdir is refused with the holder's pid.
"""
import errno
import fcntl
import os
import shutil
import tempfile

LOCK_NAME = ".lock"


class WorkdirError(ValueError):
  """The workdir cannot be used: taken by another run, read-only or full."""


def lock_name(process_index=0):
  """Each process of a run holds its own lock file: process 0 `.lock` (as a
  single-process run does), process i `.lock.i`. A second launch of the same run
  collides on every one of them, and a single-process run on process 0's."""
  return LOCK_NAME if process_index == 0 else f"{LOCK_NAME}.{process_index}"


# flock errors that mean "this filesystem has no flock", not "someone holds it":
# Lustre mounted without -o flock answers ENOSYS, some NFS and FUSE mounts ENOLCK or
# EOPNOTSUPP
NO_FLOCK = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)


def acquire(workdir, need_bytes=0, process_index=0, tool=None):
  """Checks that workdir is writable with need_bytes free, then locks it; -> the lock.

  `tool` names a program other than a training run that takes the lock to write the
  workdir's files (e.g. "scripts/evaluate.py"); its refusal says so. Release with
  release(lock) (or by exiting). The lock file stays: deleting it would let a third
  run lock a new file while the second still holds the old one.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    _probe_write(workdir)
  except OSError as e:
    raise _unusable(workdir, e) from e
  free = shutil.disk_usage(workdir).free
  if free < need_bytes:
    raise WorkdirError(
        f"workdir {workdir} has {free / 2**20:.1f} MiB free, but one checkpoint of this "
        f"model takes about {need_bytes / 2**20:.1f} MiB; free space or use another --workdir.")
  path = os.path.join(workdir, lock_name(process_index))
  lock = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    lock.close()
    if e.errno in NO_FLOCK:
      raise _no_flock(workdir, e) from e
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise _unusable(workdir, e) from e
    raise _taken(workdir, holder_pid(path), tool) from None
  return lock


def _taken(workdir, pid, tool):
  who = f"another run (pid {pid})" if pid else "another run"
  if pid == os.getpid():  # e.g. a failed run whose traceback still holds its lock
    who = "an earlier run in this process"
  if tool is None:
    return WorkdirError(
        f"{who} is training in workdir {workdir}; wait for it to finish or stop it, or "
        "use another --workdir. (A run that crashed holds no lock.)")
  return WorkdirError(
      f"{who} holds workdir {workdir} (a training run, or another evaluation): it writes "
      f"eval.json and report/ there too, so {tool} does not run beside it. Run it again "
      "when that one has finished (a run evaluates at its end), or stop it first.")


def _no_flock(workdir, error):
  return WorkdirError(
      f"workdir {workdir} is on a filesystem without file locks ({error}): Lustre mounted "
      "without -o flock does this, as do some NFS and FUSE mounts. The lock is what "
      "keeps a second run from writing the same workdir, so the run does not go on "
      "without it. Use a workdir on a filesystem with flock (local disk, NFS with its lock "
      "service, Lustre mounted with -o flock; ask the cluster's admins), and copy the "
      "results to shared storage after the run.")


def release(lock):
  if lock is not None and not lock.closed:
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


def holder_pid(path):
  """The pid holding a flock on path, from /proc/locks (Linux); None if unknown."""
  try:
    inode = os.stat(path).st_ino
    with open("/proc/locks", encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError:
    return None
  for line in lines:
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters have a "->" field
    parts = line.split()
    if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].split(":")[-1] == str(inode):
      return int(parts[4]) or None
  return None


def _probe_write(workdir):
  """Writes, syncs and removes a small file: read-only or full disks fail here."""
  fd, path = tempfile.mkstemp(prefix=".write_probe.", dir=workdir)
  try:
    os.write(fd, b"\0" * 4096)
    os.fsync(fd)
  finally:
    os.close(fd)
    os.remove(path)


def _unusable(workdir, error):
  if error.errno in (errno.ENOSPC, errno.EDQUOT):
    problem = "the disk is full"
  elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
    problem = "it is not writable"
  else:
    problem = "it cannot be written"
  return WorkdirError(f"workdir {workdir} cannot be used: {problem} ({error}). Free space, "
                      "fix its permissions, or use another --workdir.")
