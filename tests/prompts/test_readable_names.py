"""Issue 17 point 6: readable class names in prompts, label names unchanged."""
from synth_jax.prompts import readable, templates


def test_imagenet_table_is_shipped_and_complete():
  names = readable.imagenet_names()
  assert len(names) == 1000
  assert names["n01440764"] == "tench" and names["n02085620"] == "Chihuahua"
  assert list(names) == sorted(names)  # tfds imagenet2012's label order (sorted WordNet ids)
  # Parity with timm's ImageNetInfo, the offline source of the table.
  from timm.data import ImageNetInfo
  info = ImageNetInfo()
  assert all(names[info.index_to_label_name(i)] == info.index_to_description(i).split(",")[0]
             for i in range(0, 1000, 37))


def test_dataset_label_forms():
  assert templates.readable("n01440764") == "tench"
  assert templates.readable("n02085620-chihuahua") == "chihuahua"
  assert templates.readable("n02089078-black-and-tan_coonhound") == "black and tan coonhound"
  assert templates.readable("/a/abbey") == "abbey"
  assert templates.readable("/a/apartment_building/outdoor") == "apartment building outdoor"
  assert templates.readable("faces_easy") == "face" and templates.readable("car_side") == "car"
  assert templates.readable("golden_retriever") == "golden retriever"


def test_generate_prompts_use_words_while_labels_stay_ids():
  import os
  from synth_jax import config as config_lib
  from synth_jax.diffusion import generate
  base = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "generate", "base.py")
  g = config_lib.load_config(base, ["class_names=n01440764,/a/abbey"])
  cl = generate.load_classes(g)
  assert cl.names == ["n01440764", "/a/abbey"]  # the real dataset's labels: ids agree
  assert [c["prompts"][0]["text"] for c in cl.classes] == ["a good photo of the tench",
                                                           "a good photo of the abbey"]
