"""DESIGN.md §8 as a lint: a sentence of the README or of a shipped sweep's header that says an effect
"reproduces", shows "as published" or is "comparable" must carry its number with a CI ("[lo, hi]") or say
"does not show". The reports' own sentences are built from `analysis.verdict` claims (tested per report)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHRASE = re.compile(r"\b(reproduc(?:e|es|ed|ing)|as published|comparable)\b", re.I)
CI = re.compile(r"\[[-−+0-9.eE]+,\s*[-−+0-9.eE]+\]")


def sentences(text: str) -> list[str]:
    """Sentences of prose (YAML comment markers and line breaks folded; code blocks dropped)."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"^\s*#\s?", "", text, flags=re.M)
    text = re.sub(r"^(\|.*)$", r"\1\n", text, flags=re.M)               # a table row is its own sentence
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text)                            # fold single line breaks
    return [s.strip() for s in re.split(r"(?<=[.!?;])\s+|\n\s*\n", text)]


def unsupported(text: str) -> list[str]:
    return [s for s in sentences(text) if PHRASE.search(s) and not CI.search(s) and "does not show" not in s]


def headers() -> list[Path]:
    return sorted((ROOT / "sweeps").glob("*.yaml")) + [ROOT / "README.md"]


@pytest.mark.parametrize("path", headers(), ids=lambda p: p.name)
def test_effect_statements_carry_a_ci(path):
    text = path.read_text()
    if path.suffix == ".yaml":
        text = "\n".join(l for l in text.splitlines() if l.lstrip().startswith("#"))
    bad = unsupported(text)
    assert not bad, f"{path.name}: effect statements without a CI or 'does not show':\n" + "\n".join(bad)


def test_lint_catches_and_passes():
    assert unsupported("Attention beats Mamba, as published.") == ["Attention beats Mamba, as published."]
    assert not unsupported("Ratio 1.6 [1.2, 2.1]: comparable within 2.5.")
    assert not unsupported("The rise does not show here, though the paper reproduces it at scale.")
