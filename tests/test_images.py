"""The procedural image generator of the multimodal analogues (ftcore/tasks/images.py): every attribute changes the
pixels the way its name says, rendering is a pure function of the scene and the generator, and the values it
promises (range, shape, names) hold."""
import pytest
import torch

from ftcore.tasks.images import ATTRIBUTES, RGB, caption, render, sample_scenes, vocabulary, words


def scene(**kw) -> dict[str, torch.Tensor]:
    base = {"shape": 0, "colour": 0, "texture": 0, "size": 1, "position": 0}
    return {a: torch.tensor([kw.get(a, base[a])]) for a in ATTRIBUTES}


def clean(**kw) -> torch.Tensor:
    """One image (3, S, S), no jitter and no noise."""
    return render(scene(**kw), torch.Generator().manual_seed(0), jitter=0.0, noise=0.0)[0]


def test_same_generator_same_images_other_seed_other_images():
    g1, g2, g3 = (torch.Generator().manual_seed(s) for s in (5, 5, 6))
    a = render(sample_scenes(g1, 32), g1)
    b = render(sample_scenes(g2, 32), g2)
    c = render(sample_scenes(g3, 32), g3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (32, 3, 16, 16) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


@pytest.mark.parametrize("attribute", list(ATTRIBUTES))
def test_every_value_of_every_attribute_renders_differently(attribute):
    imgs = [clean(**{attribute: i}) for i in range(len(ATTRIBUTES[attribute]))]
    for i in range(len(imgs)):
        for j in range(i):
            assert (imgs[i] - imgs[j]).abs().max() > 0.2, (attribute, ATTRIBUTES[attribute][i], ATTRIBUTES[attribute][j])


def test_attributes_mean_what_their_names_say():
    for k, name in enumerate(ATTRIBUTES["colour"]):          # a solid object's brightest pixel has its colour
        img = clean(colour=k, size=2)
        flat = img.reshape(3, -1)
        peak = flat[:, flat.sum(0).argmax()]
        assert torch.allclose(peak, torch.tensor(RGB[name]), atol=1e-6), name
    area = [float(clean(size=s).sum()) for s in range(3)]     # small < medium < large
    assert area[0] < area[1] < area[2]
    mass = lambda img: img.sum(0)                              # noqa: E731  (S, S) brightness
    xs = torch.arange(16.0)
    cx = {p: float((mass(clean(position=i)).sum(0) * xs).sum() / mass(clean(position=i)).sum())
          for i, p in enumerate(ATTRIBUTES["position"])}
    cy = {p: float((mass(clean(position=i)).sum(1) * xs).sum() / mass(clean(position=i)).sum())
          for i, p in enumerate(ATTRIBUTES["position"])}
    assert cx["left"] < cx["centre"] - 2 < cx["right"] - 4 and cy["top"] < cy["centre"] - 2 < cy["bottom"] - 4
    solid, striped = clean(texture=0, size=2), clean(texture=1, size=2)
    assert float(striped.sum()) < 0.9 * float(solid.sum())    # the texture's dim cells
    ring, circle = clean(shape=ATTRIBUTES["shape"].index("ring")), clean(shape=0)
    assert float(ring[:, 8, 8].sum()) < 0.05 < float(circle[:, 8, 8].sum())   # a ring is empty in the middle


def test_sampling_respects_n_values_and_fixed():
    g = torch.Generator().manual_seed(1)
    s = sample_scenes(g, 500, n_values={"colour": 3, "shape": 2}, fixed={"size": 2, "position": torch.arange(500) % 5})
    assert set(s["colour"].tolist()) == {0, 1, 2} and set(s["shape"].tolist()) == {0, 1}
    assert set(s["size"].tolist()) == {2} and torch.equal(s["position"], torch.arange(500) % 5)
    assert set(s["texture"].tolist()) == set(range(len(ATTRIBUTES["texture"])))
    with pytest.raises(ValueError, match="n_values"):
        sample_scenes(g, 2, n_values={"colour": 0})


def test_names_and_captions():
    voc = vocabulary()
    assert len(voc) == len(set(voc)) == sum(len(v) for v in ATTRIBUTES.values())
    assert words("colour", 2) == ("red", "green")
    with pytest.raises(ValueError, match="valid"):
        words("smell")
    s = scene(shape=1, colour=2, texture=1, size=0, position=1)
    assert caption(s, 0) == "a small blue striped square at the left"
    assert caption(s, 0, ("colour", "shape")) == "a blue square"
    assert caption(s, 0, ("position",)) == "an object at the left"
    assert caption(scene(colour=ATTRIBUTES["colour"].index("orange")), 0, ("colour",)) == "an orange object"
