"""The standard hybrid's learned positions (papers.md §5): `pos_std` sets wpe ~ N(0, pos_std²). At the CPU width
the reference's N(0, 1) swamps the read-in (std ≈ 0.06 with the GPT-2 read-in init) and the hybrid stayed at chance
on MQAR; 0.02 (GPT-2's wpe) retrieves — measured in sweeps/mamba_icl.yaml's header."""
import pytest
import torch

from ftcore.models import build_model
from ftcore.models.hybrid import HybridConfig
from ftcore.seeding import generators


def hybrid(pos_std=None, seeds=(0, 1)):
    kw = {} if pos_std is None else {"pos_std": pos_std}
    cfg = HybridConfig(n_embd=32, n_layer=4, n_head=2, d_state=8, n_positions=65, **kw)
    return build_model(cfg, 8, 8, generators(list(seeds), "base"))


def test_pos_std_scales_the_same_draws():
    ref, small = hybrid(), hybrid(0.02)
    assert abs(ref.wpe.std().item() - 1.0) < 0.05                     # nn.Embedding default (the reference)
    torch.testing.assert_close(small.wpe, ref.wpe * 0.02)              # same draws, rescaled
    torch.testing.assert_close(small.read_in.weight, ref.read_in.weight, rtol=0, atol=0)
    x = torch.randn(2, 3, 17, 8, generator=torch.Generator().manual_seed(0))
    assert small(x).shape == (2, 3, 17, 8)


def test_pos_std_validation():
    with pytest.raises(ValueError, match="model.pos_std"):
        HybridConfig(pos_std=-1.0)
