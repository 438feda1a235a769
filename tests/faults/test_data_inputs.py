"""README "What happens when..." rows for input data: image folders (data import) and shards.

CLI rows run `synth_jax.cli.main` in process (the same code path as `python -m synth_jax.cli`,
without a 10 s interpreter start per row); test_empty_class_folder runs a real subprocess.
"""
import errno
import io as pyio
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from synth_jax import cli
from synth_jax.data import digits, folder, sources
from synth_jax.errors import IntegrityError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "data", "import.py")


def _photos(root, n=3):
  for c, color in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
    os.makedirs(root / c, exist_ok=True)
    for i in range(n):
      Image.new("RGB", (24 + i, 20), color).save(root / c / f"{i}.jpg", quality=95)
  return root


def _import(tmp_path, source, *extra):
  return cli.main(["data", "import", "--config", CONFIG + ":name=pets",
                   f"--config.data.source={source}", f"--config.workdir={tmp_path / 'run'}",
                   *extra])


def _error_line(err):
  """The CLI's one error line; everything else on stderr is logging, never a traceback."""
  assert "Traceback" not in err
  errors = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, err
  return errors[0]


def test_missing_image_folder(tmp_path, capfd):
  assert _import(tmp_path, tmp_path / "phtos") == 2
  line = _error_line(capfd.readouterr().err)
  assert f"image folder '{tmp_path / 'phtos'}' does not exist" in line
  assert "root/<class>/*.jpg" in line


def test_empty_class_folder(tmp_path):
  _photos(tmp_path / "photos")
  os.makedirs(tmp_path / "photos" / "bird")
  (tmp_path / "photos" / "bird" / "readme.txt").write_text("no images here")
  out = subprocess.run(
      [sys.executable, "-m", "synth_jax.cli", "data", "import", "--config", CONFIG,
       f"--config.data.source={tmp_path / 'photos'}", f"--config.workdir={tmp_path / 'run'}"],
      capture_output=True, text=True, cwd=REPO, timeout=120,
      env=dict(os.environ, SYNTH_JAX_NO_PROGRESS="1"))
  assert out.returncode == 2
  line = _error_line(out.stderr)
  assert f"class folder '{tmp_path / 'photos' / 'bird'}' has no images" in line
  assert "add images or remove the folder" in line
  assert not (tmp_path / "run" / "tfds").exists()  # refused before writing anything


def test_corrupt_jpeg_is_skipped_and_named(tmp_path, capfd):
  _photos(tmp_path / "photos")
  good = tmp_path / "photos" / "cat" / "0.jpg"
  (tmp_path / "photos" / "cat" / "broken.jpg").write_bytes(good.read_bytes()[:200])  # truncated
  assert _import(tmp_path, tmp_path / "photos") == 0
  err = capfd.readouterr().err
  assert "Traceback" not in err
  warn = [line for line in err.splitlines() if "skipping corrupt image" in line]
  assert len(warn) == 1 and str(tmp_path / "photos" / "cat" / "broken.jpg") in warn[0]
  report = json.loads((tmp_path / "run" / "data_import.json").read_text())
  assert report["counts"] == {"train": 6}
  assert report["skipped_corrupt"] == [str(tmp_path / "photos" / "cat" / "broken.jpg")]


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_images_become_rgb(tmp_path, mode):
  """Converted with PIL's own convert("RGB") and re-encoded; never a 1- or 4-channel record."""
  y, x = np.mgrid[0:20, 0:24]  # smooth: JPEG's chroma subsampling keeps it within a few levels
  rgb = np.stack([x * 10, y * 12, 255 - x * 5], -1).astype(np.uint8)
  src = Image.fromarray(rgb).convert(mode)
  os.makedirs(tmp_path / "f" / "a")
  src.save(tmp_path / "f" / "a" / "x.jpg", quality=95)
  splits, names = folder.scan_folder(str(tmp_path / "f"))
  dataset_dir = folder.import_images(splits, names, str(tmp_path / "tfds"), "modes").dataset_dir
  record = sources.open_split(dataset_dir, "train").source[0]
  stored = Image.open(pyio.BytesIO(record["image"]))
  assert stored.mode == "RGB" and stored.format == "JPEG"
  want = np.asarray(Image.open(tmp_path / "f" / "a" / "x.jpg").convert("RGB"), np.float32)
  assert np.abs(np.asarray(stored, np.float32) - want).mean() < 2.0  # one JPEG re-encode at q95


def _listing(directory):
  return {f: (directory / f).read_bytes() for f in sorted(os.listdir(directory))
          if not f.startswith(".") and f.endswith(tuple("0123456789"))}


def test_disk_full_while_writing_a_shard(tmp_path, capfd, monkeypatch):
  """ENOSPC in the 2nd shard: one error line naming it, shard 1 intact, rerun == uninterrupted."""
  from array_record.python import array_record_module as arm
  _photos(tmp_path / "photos", n=4)
  shards = ["--config.data.shard_size=4"]
  assert _import(tmp_path / "ref", tmp_path / "photos", *shards) == 0
  ref_dir = tmp_path / "ref" / "run" / "tfds" / "pets" / "1.0.0"
  real_writer = arm.ArrayRecordWriter
  opened = []

  class FullDisk:
    def __init__(self, path, options):
      opened.append(path)
      self._w = real_writer(path, options)
      self._path = path

    def write(self, data):
      if len(opened) == 2:
        raise OSError(errno.ENOSPC, "No space left on device", self._path)
      self._w.write(data)

    def close(self):
      self._w.close()

  monkeypatch.setattr(arm, "ArrayRecordWriter", FullDisk)
  capfd.readouterr()
  assert _import(tmp_path, tmp_path / "photos", *shards) == 1
  line = _error_line(capfd.readouterr().err)
  assert line.startswith("error: disk full writing ") and opened[1] in line
  assert "free space or point --config.workdir elsewhere, then rerun to resume" in line
  out_dir = tmp_path / "run" / "tfds" / "pets" / "1.0.0"
  first = "pets-train.array_record-00000-of-00002"
  assert _listing(out_dir) == {first: _listing(ref_dir)[first]}  # no partial 2nd shard
  monkeypatch.undo()
  assert _import(tmp_path, tmp_path / "photos", *shards) == 0
  assert _listing(out_dir) == _listing(ref_dir)


@pytest.fixture()
def digits_dir(tmp_path):
  return digits.write_digits(str(tmp_path), name="digits8", size=8)


def test_truncated_shard_is_detected_on_read(digits_dir):
  shard = os.path.join(digits_dir, "digits8-train.array_record-00001-of-00002")
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.truncate(size - 100)
  with pytest.raises(IntegrityError) as e:
    sources.open_split(digits_dir, "train")
  assert str(e.value) == (f"{shard} has {size - 100} bytes, {size} were written (truncated or "
                          "altered); delete it and rerun the stage to rewrite it")
  assert len(sources.open_split(digits_dir, "test")) > 0  # the other split's shards are fine


def test_altered_shard_is_detected_on_read(digits_dir):
  shard = os.path.join(digits_dir, "digits8-test.array_record-00000-of-00002")
  data = bytearray(open(shard, "rb").read())
  data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
  with open(shard, "wb") as f:
    f.write(bytes(data))
  with pytest.raises(IntegrityError, match=r"digits8-test.array_record-00000-of-00002 does not "
                     r"match its sha256 in manifest.json"):
    sources.open_split(digits_dir, "test")


def test_import_kill9_at_seeded_points_then_rerun_equals_uninterrupted(tmp_path):
  """kill -9 at seeded "atomic_write" hits of `data import` (hits 3..8: a shard renamed into
  place, its manifest record not yet written; 9: data_import.json); the rerun rewrites what was
  not recorded and the dataset directory ends byte-identical to an uninterrupted import."""
  import random
  source = tmp_path / "photos"
  for c in ("a", "b", "c"):
    os.makedirs(source / c)
    for i in range(2):
      Image.new("RGB", (8 + i, 8), (i * 90, 40, 200)).save(source / c / f"{i}.jpg")
  args = ["data", "import", "--config", CONFIG + ":name=p,test_fraction=0.5",
          f"--config.data.source={source}", "--config.data.shard_size=1"]
  assert cli.main(args + [f"--config.workdir={tmp_path / 'ref'}"]) == 0
  want = _tree(tmp_path / "ref" / "tfds")
  assert sum(".array_record-" in f for f in want) == 6
  cmd = [sys.executable, "-m", "synth_jax.cli", *args]
  env = dict(os.environ, SYNTH_JAX_NO_PROGRESS="1")
  for point in sorted(random.Random(0).sample(range(3, 10), 2)):
    work = tmp_path / f"killed{point}"
    killed = subprocess.run(cmd + [f"--config.workdir={work}"], cwd=REPO, capture_output=True,
                            env=dict(env, SYNTH_JAX_KILL_AT=f"atomic_write:{point}"))
    assert killed.returncode == -9, killed.stderr[-2000:]
    again = subprocess.run(cmd + [f"--config.workdir={work}"], cwd=REPO, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _tree(work / "tfds") == want, point


def _tree(root):
  """{relative path: bytes} of every visible file (dataset_info.json without its timestamps)."""
  out = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      if f.startswith("."):
        continue
      path = os.path.join(dirpath, f)
      data = open(path, "rb").read()
      if f == "dataset_info.json":
        info = json.loads(data)
        info.pop("releaseNotes", None)
        data = json.dumps(info, sort_keys=True).encode()
      out[os.path.relpath(path, root)] = data
  return out
