"""Host-side image transforms (PIL + numpy), the same maths as torchvision's PIL path.

  decode(data) -> PIL RGB image (gray, CMYK, palette, alpha all become RGB)
  train_image(img, rng, resolution, flip=True, color_jitter=0.0, randaugment=None) -> uint8 HWC
  eval_image(img, resolution, crop_pct=0.875) -> uint8 HWC  (resize shorter side, center crop)
  normalize(uint8 HWC, mean=None, std=None) -> float32 HWC (default: ImageNet mean/std; the
      trainer passes the statistics its checkpoint expects, synth_jax.models.input_norm)

`random_resized_crop_box` follows torchvision's `RandomResizedCrop.get_params` (scale 0.08..1,
log-uniform ratio 3/4..4/3, 10 tries, then a center crop), so a crop box drawn here and passed to
torchvision's `resized_crop` gives the same pixels (tested). JPEGs are decoded with PIL's `draft`
(DCT scaling) when the crop is large enough to stay above the target resolution, which is what
makes 224 px training from full-size JPEGs affordable on the CPU.
"""
from __future__ import annotations

import io
import math

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def open_image(data):
  """bytes / path / array -> a lazily decoded PIL image (header read only)."""
  from PIL import Image
  if isinstance(data, Image.Image):
    return data
  if isinstance(data, np.ndarray):
    return Image.fromarray(data)
  if isinstance(data, (bytes, bytearray, memoryview)):
    return Image.open(io.BytesIO(bytes(data)))
  return Image.open(data)


def to_rgb(img):
  """Any PIL mode -> RGB; alpha is composited on white so transparent pixels are not black."""
  from PIL import Image
  if img.mode == "RGB":
    return img
  if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
    img = img.convert("RGBA")
    background = Image.new("RGB", img.size, (255, 255, 255))
    background.paste(img, mask=img.getchannel("A"))
    return background
  return img.convert("RGB")  # L, I, F, CMYK, YCbCr, P ...


def decode(data):
  """Fully decodes to an RGB PIL image; raises on a corrupt or truncated file."""
  img = open_image(data)
  img.load()
  return to_rgb(img)


def random_resized_crop_box(rng: np.random.Generator, width: int, height: int,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """(top, left, h, w) as torchvision's RandomResizedCrop.get_params draws it."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height  # fallback: the whole image, clamped to the ratio range
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def _draft(img, box_hw: tuple[int, int], resolution: int):
  """Lets libjpeg decode at 1/2..1/8 scale if the crop stays >= resolution; returns the factor."""
  if getattr(img, "format", None) != "JPEG":
    return 1.0
  h, w = box_hw
  scale = min(h, w) / resolution
  if scale < 2:
    return 1.0
  full = img.size
  img.draft("RGB", (int(full[0] / scale), int(full[1] / scale)))
  return img.size[0] / full[0]


def resized_crop(img, top: int, left: int, h: int, w: int, size: int):
  """Crop (top, left, h, w) of `img` resized to size x size, bilinear (as torchvision on PIL)."""
  from PIL import Image
  return img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)


def color_jitter(img, rng: np.random.Generator, strength: float):
  """Brightness, contrast, saturation factors in [1-s, 1+s], applied in a random order."""
  from PIL import ImageEnhance
  ops = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
  for i in rng.permutation(len(ops)):
    img = ops[i](img).enhance(float(rng.uniform(max(0.0, 1 - strength), 1 + strength)))
  return img


def _rand_ops():
  from PIL import Image, ImageOps, ImageEnhance

  def affine(img, m):  # (a, b, c, d, e, f) maps output -> input
    return img.transform(img.size, Image.AFFINE, m, resample=Image.BILINEAR, fillcolor=(128,) * 3)

  return {
      "identity": lambda img, v: img,
      "autocontrast": lambda img, v: ImageOps.autocontrast(img),
      "equalize": lambda img, v: ImageOps.equalize(img),
      "rotate": lambda img, v: img.rotate(30 * v, resample=Image.BILINEAR, fillcolor=(128,) * 3),
      "solarize": lambda img, v: ImageOps.solarize(img, int(256 - 256 * abs(v))),
      "posterize": lambda img, v: ImageOps.posterize(img, max(1, int(8 - 4 * abs(v)))),
      "sharpness": lambda img, v: ImageEnhance.Sharpness(img).enhance(1 + 0.9 * v),
      "contrast": lambda img, v: ImageEnhance.Contrast(img).enhance(1 + 0.9 * v),
      "shear_x": lambda img, v: affine(img, (1, 0.3 * v, 0, 0, 1, 0)),
      "shear_y": lambda img, v: affine(img, (1, 0, 0, 0.3 * v, 1, 0)),
      "translate_x": lambda img, v: affine(img, (1, 0, 0.45 * v * img.size[0], 0, 1, 0)),
      "translate_y": lambda img, v: affine(img, (1, 0, 0, 0, 1, 0.45 * v * img.size[1])),
  }


_OPS = None


def randaugment(img, rng: np.random.Generator, num_ops: int = 2, magnitude: float = 9.0):
  """RandAugment-lite: `num_ops` ops from a 12-op list, magnitude m/30 with a random sign."""
  global _OPS
  if _OPS is None:
    _OPS = _rand_ops()
  names = sorted(_OPS)
  for i in rng.integers(0, len(names), num_ops):
    v = (magnitude / 30.0) * (1 if rng.random() < 0.5 else -1)
    img = _OPS[names[i]](img, v)
  return img


def train_image(data, rng: np.random.Generator, resolution: int, flip: bool = True,
                color_jitter_strength: float = 0.0, randaugment_ops: int = 0,
                randaugment_magnitude: float = 9.0, scale=(0.08, 1.0)) -> np.ndarray:
  """Decode + random resized crop + flip (+ jitter / RandAugment) -> uint8 HWC (res, res, 3)."""
  img = open_image(data)
  width, height = img.size
  top, left, h, w = random_resized_crop_box(rng, width, height, scale=scale)
  factor = _draft(img, (h, w), resolution)
  img = to_rgb(img)
  if factor != 1.0:  # the decoded image is smaller: scale the box into its coordinates
    top, left = int(top * factor), int(left * factor)
    h = max(1, min(int(round(h * factor)), img.size[1] - top))
    w = max(1, min(int(round(w * factor)), img.size[0] - left))
  img = resized_crop(img, top, left, h, w, resolution)
  do_flip = flip and rng.random() < 0.5
  if do_flip:
    from PIL import Image
    img = img.transpose(Image.FLIP_LEFT_RIGHT)
  if color_jitter_strength > 0:
    img = color_jitter(img, rng, color_jitter_strength)
  if randaugment_ops > 0:
    img = randaugment(img, rng, randaugment_ops, randaugment_magnitude)
  return np.asarray(img, np.uint8)


def eval_image(data, resolution: int, crop_pct: float = 0.875) -> np.ndarray:
  """Resize the shorter side to resolution/crop_pct, then center crop (torchvision semantics)."""
  from PIL import Image
  img = open_image(data)
  resize = int(resolution / crop_pct)
  width, height = img.size
  if getattr(img, "format", None) == "JPEG" and min(width, height) >= 2 * resize:
    img.draft("RGB", (width * resize // min(width, height), height * resize // min(width, height)))
    width, height = img.size
  img = to_rgb(img)
  if width <= height:  # torchvision Resize(int): shorter side -> resize, the other truncated
    new_w, new_h = resize, int(resize * height / width)
  else:
    new_h, new_w = resize, int(resize * width / height)
  img = img.resize((new_w, new_h), Image.BILINEAR)
  top = int(round((new_h - resolution) / 2.0))
  left = int(round((new_w - resolution) / 2.0))
  return np.asarray(img.crop((left, top, left + resolution, top + resolution)), np.uint8)


_SCALE = (1.0 / STD).astype(np.float32)
_SHIFT = (-MEAN / STD).astype(np.float32)


def normalize(image: np.ndarray, mean=None, std=None) -> np.ndarray:
  """uint8 HWC -> float32 HWC with `mean`/`std` in [0, 1] units (None: ImageNet's), in two
  passes: x * 1/std + (-mean/std)."""
  scale, shift = _SCALE, _SHIFT
  if mean is not None or std is not None:
    m = np.asarray(MEAN / 255 if mean is None else mean, np.float32) * 255
    s = np.asarray(STD / 255 if std is None else std, np.float32) * 255
    scale, shift = (1.0 / s).astype(np.float32), (-m / s).astype(np.float32)
  out = np.multiply(image, scale, dtype=np.float32)
  out += shift
  return out
