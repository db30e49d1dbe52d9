"""``--download``: preparing tensorflow-datasets sources, offline.

The preparation path runs for real (``tfds.builder(...).download_and_prepare()`` writing
``array_record`` files) on small local builders registered here, whose
``_split_generators`` make their examples from a seeded generator instead of the network
(``Tensor`` image features, which tfds stores without TensorFlow; the catalogue's builders
encode PNGs with TensorFlow, hence the ``download`` extra). The failure paths (no network,
missing requirements, a source that is not from tfds) are one-line errors.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds

from unlearn_jax import cli
from unlearn_jax.protocol import run as protocol_run
from unlearn_jax.data import download, load_dataset

SIZES = {"train": 6, "test": 4}


def _examples(split: str):
  rng = np.random.default_rng(SIZES[split])
  for i in range(SIZES[split]):
    yield i, {"image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "label": int(rng.integers(0, 3))}


# tensorflow-datasets 4.9 imports importlib_resources to locate the checksum file of a builder
# defined inside a package (the ``download`` extra installs it); a top-level module name makes
# tfds skip that lookup, so these builders prepare in an environment without it.
BUILDER_MODULE = "unlearn_jax_test_builders"


class UnlearnJaxTinyImages(tfds.core.GeneratorBasedBuilder):
  """Ten 4x4 RGB images in 3 classes, generated locally (registered as ``unlearn_jax_tiny_images``)."""

  __module__ = BUILDER_MODULE
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SIZES}

  def _generate_examples(self, split="train"):
    yield from _examples(split)


class UnlearnJaxOfflineImages(UnlearnJaxTinyImages):
  """Fails as tfds' downloader does without a network (it raises requests' ConnectionError after retries)."""

  __module__ = BUILDER_MODULE

  def _split_generators(self, dl_manager):
    raise requests.exceptions.ConnectionError("HTTPSConnectionPool(host='www.cs.toronto.edu', port=443): "
                                              "Max retries exceeded (Failed to resolve)")


def _one_line_error(capsys, argv) -> str:
  code = cli.main(argv)
  err = capsys.readouterr().err
  assert code == 2, err
  assert err.startswith("unlearn-jax: error: ") and err.count("\n") == 1, err
  return err


def test_prepare_writes_array_record_files_that_the_loader_reads(tmp_path):
  lines = []
  where = download.prepare_tfds("unlearn_jax_tiny_images", str(tmp_path / "data"), lines.append)
  files = sorted(os.listdir(where))
  assert "unlearn_jax_tiny_images-train.array_record-00000-of-00001" in files
  assert "unlearn_jax_tiny_images-test.array_record-00000-of-00001" in files
  ds = load_dataset("tfds:unlearn_jax_tiny_images", str(tmp_path / "data"))
  expect = [e for _, e in _examples("train")] + [e for _, e in _examples("test")]
  assert ds.images.shape == (10, 4, 4, 3) and ds.num_classes == 3
  # tfds shuffles examples by key hash when it writes them: compare as sets of (image, label)
  got = sorted((im.tobytes(), int(y)) for im, y in zip(ds.images, ds.labels))
  assert got == sorted((e["image"].tobytes(), e["label"]) for e in expect)
  np.testing.assert_array_equal(ds.train_idx, np.arange(6))
  assert any("preparing unlearn_jax_tiny_images" in line for line in lines)
  # prepared once: a second call reuses it
  assert download.prepare_tfds("unlearn_jax_tiny_images", str(tmp_path / "data"), lines.append) == where
  assert "already prepared" in lines[-1]


def test_evaluate_download_prepares_before_the_protocol_and_checks_arguments_first(tmp_path, capsys, monkeypatch):
  data_dir = tmp_path / "data"
  common = ["evaluate", "--config", "tiny", "--dataset", "tfds:unlearn_jax_tiny_images", "--data-dir",
            str(data_dir), "--download", "--output-dir", str(tmp_path / "o")]
  err = _one_line_error(capsys, [*common, "--method", "nope"])
  assert "unknown method 'nope'" in err and not data_dir.exists()  # nothing downloaded for a bad command
  seen = {}

  def protocol(config, progress):  # stands in for the protocol: what data does it find?
    seen["images"] = load_dataset(config.dataset, config.data_dir).images.shape
    return None

  monkeypatch.setattr(protocol_run, "evaluate", protocol)
  assert cli.main(common) == 0
  assert seen["images"] == (10, 4, 4, 3)
  assert "[download] preparing unlearn_jax_tiny_images" in capsys.readouterr().err


def test_download_without_network_is_one_line_naming_the_command(tmp_path, capsys):
  data_dir = tmp_path / "data"
  err = _one_line_error(capsys, ["train", "--dataset", "tfds:unlearn_jax_offline_images", "--download",
                                 "--data-dir", str(data_dir)])
  assert "could not download and prepare tfds dataset 'unlearn_jax_offline_images' (ConnectionError:" in err
  assert ("on a machine with internet run `pip install 'unlearn_jax[download]' && python -c \"import "
          "tensorflow_datasets as tfds; tfds.builder('unlearn_jax_offline_images', "
          f"data_dir={str(data_dir)!r}, file_format='array_record').download_and_prepare()\"`") in err
  assert "--dataset cifar10_tarball" in err
  assert not os.path.exists(data_dir / "unlearn_jax_offline_images" / "1.0.0")  # nothing half-prepared


def test_download_with_missing_requirements_names_the_extra(tmp_path, capsys, monkeypatch):
  # the catalogue's cifar10 needs TensorFlow to prepare; a requirement that is surely absent stands for it
  monkeypatch.setattr(download, "REQUIREMENTS", ("unlearn_jax_absent_requirement",))
  err = _one_line_error(capsys, ["evaluate", "--config", "tiny", "--dataset", "cifar10", "--download",
                                 "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "o")])
  assert "--download needs unlearn_jax_absent_requirement to prepare tfds dataset 'cifar10': run " \
         "`pip install 'unlearn_jax[download]' && python -c" in err
  assert "tfds.builder('cifar10'" in err and "cifar10_tarball" in err
  assert not os.path.exists(tmp_path / "data" / "downloads")  # refused before downloading anything


@pytest.mark.parametrize("command", ["evaluate", "train", "sweep"])
def test_download_of_a_source_that_is_not_from_tfds(tmp_path, capsys, command):
  err = _one_line_error(capsys, [command, "--dataset", "digits", "--download"] +
                        (["--config", "tiny", "--output-dir", str(tmp_path)] if command != "train" else []) +
                        (["--grid", "lr=0.1,0.2"] if command == "sweep" else []))
  assert "--download prepares the tensorflow-datasets sources ['cifar10', 'cifar100', 'mnist', " \
         "'fashion_mnist', 'svhn_cropped'] (or tfds:<name>), not 'digits'" in err
  assert "cifar10_tarball" in err
