"""A procedural image generator shared by the multimodal analogues (issue 18: CoBSAT, IC|TC): small RGB images of
one object whose attributes — shape, colour, texture, size, position — each have a text name. Rendered with numpy
from the attribute indices (nothing is downloaded), seeded per member through an explicit torch.Generator.

A scene is one index per attribute, `scene[a] ∈ {0, …, n_a − 1}` where n_a ≤ len(ATTRIBUTES[a]) is how many of the
attribute's values a task uses (its first n_a). Rendering (side S pixels, supersampled 2× and averaged, so edges
are anti-aliased):

    centre   c = (S/2, S/2) + offset(position) + U(−jitter, jitter)²      offsets: centre 0, left/right ∓S/4 on x,
                                                                        top/bottom ∓S/4 on y
    radius   r = S · RADIUS[size]
    mask     m(p) = shape test on (p − c)/r (unit circle, square, diamond, up-pointing triangle, cross, ring)
    pattern  t(p) = 1 on the texture's "on" cells, DIM elsewhere (solid: 1; stripes: rows of 2 px; checks: 2×2 px)
    pixel    x(p) = clip(m(p) · t(p) · RGB[colour] + N(0, noise²), 0, 1)       (background black)

`render` returns (N, 3, S, S) in [0, 1]; `caption(scene)` names it ("a small red striped circle at the left"),
`words(attribute)` the names a caption or a criterion uses. The generator's facts are tested in
tests/test_images.py (each attribute changes the pixels; same generator, same images; values stay in [0, 1]).
"""
from __future__ import annotations

import numpy as np
import torch

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "cross", "diamond", "ring"),
    "colour": ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange"),
    "texture": ("solid", "striped", "checked"),
    "size": ("small", "medium", "large"),
    "position": ("centre", "left", "right", "top", "bottom"),
}
RGB = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.15, 0.25, 0.95), "yellow": (0.9, 0.9, 0.1),
       "magenta": (0.85, 0.1, 0.85), "cyan": (0.1, 0.85, 0.85), "white": (0.9, 0.9, 0.9), "orange": (0.95, 0.55, 0.05)}
RADIUS = {"small": 0.17, "medium": 0.25, "large": 0.33}          # fraction of the side
OFFSET = {"centre": (0, 0), "left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}   # × S/4
DIM = 0.4                                                        # the texture's "off" cells, relative to "on"
SUPERSAMPLE = 2


def words(attribute: str, n_values: int | None = None) -> tuple[str, ...]:
    """The names of an attribute's first n_values values (all of them when None)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; valid: {', '.join(ATTRIBUTES)}")
    names = ATTRIBUTES[attribute]
    return names if n_values is None else names[:n_values]


def vocabulary() -> tuple[str, ...]:
    """Every attribute value's name, attributes in ATTRIBUTES order (names are unique across attributes)."""
    return tuple(w for a in ATTRIBUTES for w in ATTRIBUTES[a])


def sample_scenes(gen: torch.Generator, n: int, n_values: dict[str, int] | None = None,
                  fixed: dict[str, torch.Tensor | int] | None = None) -> dict[str, torch.Tensor]:
    """n scenes: {attribute: (n,) long}, each attribute uniform over its first n_values[a] values (all by default),
    except those in `fixed` (an int, or an (n,) tensor). Draw order: ATTRIBUTES order, one randint each."""
    n_values, fixed = n_values or {}, fixed or {}
    out = {}
    for a, names in ATTRIBUTES.items():
        k = n_values.get(a, len(names))
        if not 1 <= k <= len(names):
            raise ValueError(f"n_values[{a!r}] must be in 1..{len(names)} (got {k})")
        draw = torch.randint(0, k, (n,), generator=gen)
        if a in fixed:
            v = fixed[a]
            draw = torch.full((n,), int(v)) if isinstance(v, int) else torch.as_tensor(v, dtype=torch.long).clone()
        out[a] = draw
    return out


def _shape_masks(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """u, v (N, H, W) coordinates relative to the centre in radii -> (n_shapes, N, H, W) bool, ATTRIBUTES order."""
    rho2 = u * u + v * v
    au, av = np.abs(u), np.abs(v)
    return np.stack([rho2 <= 1.0,                                                   # circle
                     np.maximum(au, av) <= 0.85,                                    # square
                     (v <= 0.8) & (au <= (v + 1.0) * 0.55),                         # triangle (apex up)
                     ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0)),   # cross
                     au + av <= 1.15,                                               # diamond
                     (rho2 <= 1.0) & (rho2 >= 0.55 ** 2)])                          # ring


def _patterns(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Pixel-grid coordinates (H, W) at render resolution -> (n_textures, H, W) in {DIM, 1}, ATTRIBUTES order."""
    s = SUPERSAMPLE * 2                                               # 2 output pixels per stripe / check cell
    stripes = (py // s) % 2 == 0
    checks = ((px // s) + (py // s)) % 2 == 0
    return np.stack([np.ones_like(px, dtype=float), np.where(stripes, 1.0, DIM), np.where(checks, 1.0, DIM)])


def render(scenes: dict[str, torch.Tensor], gen: torch.Generator, side: int = 16, jitter: float = 1.0,
           noise: float = 0.02) -> torch.Tensor:
    """scenes {attribute: (N,)} -> images (N, 3, side, side) float32 in [0, 1] (module docstring). Draw order on
    gen: the centre jitter (N, 2), then the pixel noise (N, 3, side, side)."""
    if side < 8:
        raise ValueError(f"side must be >= 8 pixels (got {side})")
    idx = {a: np.asarray(scenes[a], dtype=np.int64) for a in ATTRIBUTES}
    n, hi = len(idx["shape"]), side * SUPERSAMPLE
    jit = (torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1).numpy() * jitter          # (N, 2) pixels
    offsets = np.array([OFFSET[p] for p in ATTRIBUTES["position"]], dtype=float)[idx["position"]] * side / 4
    centre = side / 2 + offsets + jit                                                            # (N, 2) x, y
    radius = np.array([RADIUS[s] for s in ATTRIBUTES["size"]])[idx["size"]] * side               # (N,)
    py, px = np.mgrid[0:hi, 0:hi]
    gx, gy = (px + 0.5) / SUPERSAMPLE, (py + 0.5) / SUPERSAMPLE                                   # (H, W) pixels
    u = (gx[None] - centre[:, 0, None, None]) / radius[:, None, None]                            # (N, H, W)
    v = (gy[None] - centre[:, 1, None, None]) / radius[:, None, None]
    mask = np.take_along_axis(_shape_masks(u, v), idx["shape"][None, :, None, None], 0)[0]       # (N, H, W)
    pattern = _patterns(px, py)[idx["texture"]]                                                  # (N, H, W)
    colour = np.array([RGB[c] for c in ATTRIBUTES["colour"]])[idx["colour"]]                     # (N, 3)
    img = (mask * pattern)[:, None] * colour[:, :, None, None]                                    # (N, 3, H, W)
    img = img.reshape(n, 3, side, SUPERSAMPLE, side, SUPERSAMPLE).mean((3, 5))                   # (N, 3, S, S)
    out = torch.from_numpy(img).float()
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=gen)
    return out.clamp_(0.0, 1.0)


def caption(scenes: dict[str, torch.Tensor], i: int, attributes: tuple[str, ...] | None = None) -> str:
    """The text of scene i: "a small red striped circle at the left" (all attributes), or only the named ones
    in that template's order ("a red circle", "an orange square", "an object at the left")."""
    keep = set(attributes or ATTRIBUTES)
    name = {a: ATTRIBUTES[a][int(scenes[a][i])] for a in ATTRIBUTES if a in keep}
    head = " ".join(name[a] for a in ("size", "colour", "texture") if a in name)
    noun = name.get("shape", "object")
    tail = f" at the {name['position']}" if "position" in name else ""
    text = f"{head + ' ' if head else ''}{noun}{tail}"
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"
