"""What the project's own TFDS builders share: data made here, no download, one split."""
import tensorflow_datasets as tfds
from etils import epath


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose records come from _generate_examples() into one 'train' split."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # TFDS's own lookup imports importlib_resources for package modules; not installed.
    return epath.Path(__file__)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples()}
