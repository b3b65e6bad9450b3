"""The digits contrastive task (real images, papers.md §3(a) real-data analogue): augmentations, the batch layout
the loss reads, the loss against a hand computation, and short fits that learn (full loss down, retrieval and
1-NN accuracy up from the random encoder's) under the strategies feasible at this size."""
import pytest
import torch

import ftcore
from ftcore.batching import symmetric_infonce
from ftcore.fit import build_pack
from ftcore.tasks.digits_contrastive import augment


def members(selection="task", steps=0, seeds=(0, 1), **task):
    t = {"name": "digits_contrastive", "n": 64, "n_test": 128, "dim": 16, "batch_size": 16, **task}
    return [ftcore.member_from_dict({"model": {"name": "mlp", "width": 64, "depth": 2, "last_activation": False},
                                     "adapter": {"name": "full"}, "task": t,
                                     "train": {"steps": steps, "lr": 3e-3, "schedule": "constant",
                                               "eval_every": max(steps, 1), "batch_selection": selection},
                                     "seed": s}) for s in seeds]


def test_augment_identity_and_shift():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(5, 64, generator=g)
    torch.testing.assert_close(augment(img, 0.0, 0, g), img)
    dot = torch.zeros(50, 64)
    dot[:, 3 * 8 + 4] = 1.0                                                       # one lit pixel at (3, 4)
    out = augment(dot, 0.0, 1, g)
    assert torch.equal(out.sum(1), torch.ones(50))                               # shifted, not lost
    r, c = out.argmax(1) // 8, out.argmax(1) % 8
    assert int((r - 3).abs().max()) <= 1 and int((c - 4).abs().max()) <= 1
    assert len(set(zip(r.tolist(), c.tolist()))) > 1
    noisy = augment(img, 0.1, 0, torch.Generator().manual_seed(1))
    assert 0.05 < float((noisy - img).std()) < 0.15


def test_layout_and_loss_match_a_hand_computation():
    task, model = build_pack(members(), torch.float32)
    idx = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed(e))[:32].reshape(2, 16)
                       for e in range(2)])                                        # (E, M=2, B=16)
    x, y, w = task.batch_of(idx)
    assert x.shape == (2, 2 * 2 * 16, 64) and y.shape == (2, 64, 16) and w.shape == (2, 64)
    rows = y[..., 0].reshape(2, 2, 2, 16)                                         # [m][view][b]
    assert torch.equal(rows[:, :, 0], idx.float()) and torch.equal(rows[:, :, 1], idx.float())
    assert torch.equal(y[..., 1].reshape(2, 2, 32), torch.arange(2.0).view(1, 2, 1).expand(2, 2, 32))
    with torch.no_grad():
        p = torch.nn.functional.normalize(model(x), dim=-1).reshape(2, 2, 2, 16, 16)
        want = torch.stack([torch.stack([symmetric_infonce(p[e, m, 0] @ p[e, m, 1].T / 0.1) for m in range(2)]).mean()
                            for e in range(2)])
        torch.testing.assert_close(task.loss(model(x), y, w), want, rtol=1e-5, atol=1e-6)


def test_enumerating_strategies_are_refused_at_real_sizes():
    with pytest.raises(ValueError, match=r"^train\.batch_selection: .*C\(512,32\)"):
        members("osgd", n=512, batch_size=32)


@pytest.mark.parametrize("selection", ["shuffle", "spectral"])
def test_short_fit_learns(selection):
    ms = members(selection, steps=120)
    res = ftcore.fit(ms)
    for r in res:
        assert r.status == "ok"
        first, last = r.curve[0], r.curve[-1]
        assert last["full/loss"] < first["full/loss"] - 0.3
        assert last["test/knn_acc"] > first["test/knn_acc"] + 0.03                 # random features already ~0.6
        assert last["test/retrieval"] > first["test/retrieval"] + 0.03
