"""The criterion-clustering analogue (IC|TC, papers.md §9): the clustering scores against hand-computed cases and
brute-force / library oracles, the k-means baseline on an easy case, the captioning data (the training text is the
generator's caption under the prompt), the word-to-cluster step on oracle captioners, config errors, and one short
fit in which the criterion-conditioned clusters beat the criterion-blind ones on a criterion pixels hide (shape)."""
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

import ftcore
from ftcore.fit import build_pack, fit
from ftcore.tasks import images
from ftcore.tasks.cluster_metrics import contingency, hungarian_accuracy, kmeans, nmi
from ftcore.tasks.criterion_clustering import (
    VOCAB,
    WORD_ID,
    CriterionClusteringConfig,
    caption_word_ids,
    cluster_by_words,
    n_values,
    targets,
)

# -- the scores ------------------------------------------------------------------------------------------------

def brute_accuracy(pred, truth):
    """Oracle: the best accuracy over every injective relabelling of the clusters (small K only)."""
    ks, ls = sorted(set(pred)), sorted(set(truth))
    best = 0
    targets_ = ls + [None] * max(0, len(ks) - len(ls))
    for perm in itertools.permutations(targets_, len(ks)):
        m = dict(zip(ks, perm))
        best = max(best, sum(m[p] == t for p, t in zip(pred, truth)))
    return best / len(pred)


@pytest.mark.parametrize("pred, truth, acc", [
    ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),            # a renaming is free
    ([0, 0, 1, 1], [0, 1, 0, 1], 0.5),            # independent
    ([0, 0, 0, 1], [0, 0, 1, 1], 0.75),
    ([5, 5, 5, 5], [0, 1, 2, 3], 0.25),           # one cluster: only one label can be matched
    ([0, 1, 2, 3], [7, 7, 7, 7], 0.25),           # more clusters than labels: the unmatched count as wrong
])
def test_hungarian_accuracy_hand_cases(pred, truth, acc):
    assert hungarian_accuracy(np.array(pred), np.array(truth)) == pytest.approx(acc)


def test_hungarian_accuracy_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n, k, l = rng.integers(5, 14), rng.integers(1, 5), rng.integers(1, 5)
        pred, truth = rng.integers(0, k, n), rng.integers(0, l, n)
        assert hungarian_accuracy(pred, truth) == pytest.approx(brute_accuracy(list(pred), list(truth)))


@pytest.mark.parametrize("pred, truth, value", [
    ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),
    ([0, 0, 1, 1], [0, 1, 0, 1], 0.0),            # independent: I = 0
    ([3, 3, 3], [1, 1, 1], 1.0),                  # the same single cluster
    ([0, 0, 0, 0], [0, 0, 1, 1], 0.0),            # one side one cluster
])
def test_nmi_hand_cases(pred, truth, value):
    assert nmi(np.array(pred), np.array(truth)) == pytest.approx(value, abs=1e-12)


def test_nmi_by_hand_and_against_sklearn():
    # pred [0,0,1,1], truth [0,0,0,1]: H(pred) = log 2, H(truth) = −(¾ log ¾ + ¼ log ¼),
    # I = ½ log(½/(½·¾)) + ¼ log(¼/(½·¾)) + ¼ log(¼/(½·¼))
    h_p, h_t = np.log(2), -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    mi = 0.5 * np.log(0.5 / 0.375) + 0.25 * np.log(0.25 / 0.375) + 0.25 * np.log(0.25 / 0.125)
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx(mi / ((h_p + h_t) / 2))
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = rng.integers(4, 40)
        pred, truth = rng.integers(0, rng.integers(1, 6), n), rng.integers(0, rng.integers(1, 6), n)
        assert nmi(pred, truth) == pytest.approx(normalized_mutual_info_score(truth, pred), abs=1e-10)


def test_contingency_counts():
    c = contingency(np.array([2, 2, 9, 9, 9]), np.array([0, 1, 1, 1, 0]))
    assert c.tolist() == [[1, 1], [1, 2]]


def test_kmeans_recovers_the_one_attribute_that_varies():
    """Criterion-blind k-means on pixels works when only one attribute varies (colour): acc = 1; and it is
    deterministic under its seed."""
    g = torch.Generator().manual_seed(0)
    scenes = images.sample_scenes(g, 120, {"colour": 4}, fixed={"shape": 0, "texture": 0, "size": 1, "position": 0})
    x = images.render(scenes, g, jitter=0.0).flatten(1).numpy()
    ids = kmeans(x, 4, seed=3)
    assert hungarian_accuracy(ids, scenes["colour"].numpy()) == 1.0
    assert np.array_equal(ids, kmeans(x, 4, seed=3))


# -- the captioning data --------------------------------------------------------------------------------------

CRITERIA = list(images.ATTRIBUTES)


def test_caption_words_are_the_prompted_attribute_values():
    g = torch.Generator().manual_seed(1)
    scenes = images.sample_scenes(g, 40)
    prompts = torch.arange(40) % (len(CRITERIA) + 1)
    ids = caption_word_ids(scenes, prompts, CRITERIA)
    for i, (p, words) in enumerate(zip(prompts.tolist(), ids)):
        expect = CRITERIA if p == len(CRITERIA) else [CRITERIA[p]]
        assert sorted(words) == sorted(WORD_ID[images.ATTRIBUTES[a][int(scenes[a][i])]] for a in expect)
    q = targets(ids)
    torch.testing.assert_close(q.sum(1), torch.ones(40))
    assert q.shape == (40, len(VOCAB)) and set((q > 0).sum(1).tolist()) == {1, len(CRITERIA)}


def test_every_attribute_varies_over_its_first_k_values():
    cfg = CriterionClusteringConfig(n_clusters=5, n_eval=400)
    assert n_values(cfg) == {"shape": 5, "colour": 5, "texture": 3, "size": 3, "position": 5}
    task, _ = build_pack([member(5, n_eval=400)], torch.float32)
    for c in CRITERIA:
        assert set(task.truth[0][c].tolist()) == set(range(n_values(cfg)[c])), c
    x, y, w = task.batch(0)
    assert x.shape == (1, 64, 3 * 16 * 16 + len(CRITERIA) + 1)
    prompt = x[0, :, 3 * 16 * 16:]
    assert bool((prompt.sum(1) == 1).all()) and bool((prompt.sum(0) > 0).all())   # one prompt per row, all drawn


# -- clustering from the captions --------------------------------------------------------------------------------

def word_logits(word_ids: np.ndarray, scale: float = 10.0) -> np.ndarray:
    """An oracle captioner: logits (N, V) that emit exactly `word_ids`."""
    out = np.zeros((len(word_ids), len(VOCAB)))
    out[np.arange(len(word_ids)), word_ids] = scale
    return out


def test_words_to_clusters_on_oracle_captioners():
    g = torch.Generator().manual_seed(2)
    scenes = images.sample_scenes(g, 300, dict.fromkeys(images.ATTRIBUTES, 3))
    shape = scenes["shape"].numpy()
    # a captioner that names the criterion: perfect clusters, named by the criterion's words
    ids, names = cluster_by_words(word_logits(shape + WORD_ID["circle"]), 3)
    assert hungarian_accuracy(ids, shape) == 1.0 and nmi(ids, shape) == pytest.approx(1.0)
    assert sorted(names.tolist()) == [WORD_ID[w] for w in ("circle", "square", "triangle")]
    # one that names another attribute (position) clusters by position: no better than blind on shape
    pos = scenes["position"].numpy()
    ids, names = cluster_by_words(word_logits(pos + WORD_ID["centre"]), 3)
    assert hungarian_accuracy(ids, shape) == pytest.approx(hungarian_accuracy(pos, shape))
    assert not set(names.tolist()) & {WORD_ID[w] for w in images.ATTRIBUTES["shape"]}
    # more distinct words than K: the K most frequent are the names, the rest go to their highest-logit name
    words = np.array([0] * 5 + [1] * 4 + [2] * 3 + [3] * 1)
    lg = word_logits(words)
    lg[-1, 2] = 5.0                          # the rare word's second choice is word 2
    ids, names = cluster_by_words(lg, 3)
    assert names.tolist() == [0, 1, 2] and ids.tolist() == [0] * 5 + [1] * 4 + [2] * 4


# -- config errors and one short fit --------------------------------------------------------------------------------

@pytest.mark.parametrize("over, field", [({"criteria": ["hue"]}, "task.criteria"), ({"criteria": []}, "task.criteria"),
                                          ({"criteria": ["shape", "shape"]}, "task.criteria"),
                                          ({"n_clusters": 1}, "task.n_clusters"), ({"n_clusters": 9}, "task.n_clusters"),
                                          ({"n_eval": 4}, "task.n_eval")])
def test_config_errors_name_the_field(over, field):
    with pytest.raises(ValueError, match=field):
        CriterionClusteringConfig(**over)


def member(k=3, seed=0, width=32, steps=0, **task):
    return ftcore.member_from_dict({"model": {"name": "mlp", "width": width, "depth": 2, "last_activation": False},
                                    "adapter": {"name": "full"},
                                    "task": {"name": "criterion_clustering", "n_clusters": k, **task},
                                    "train": {"method": "adam", "steps": steps, "lr": 3e-3, "eval_every": max(steps, 1)},
                                    "seed": seed})


def test_short_fit_clusters_by_the_criterion_where_blind_clustering_cannot():
    """400 steps of a width-48 captioner: on shape (pixels hide it: linear separability 0.61) its clusters beat both
    criterion-blind baselines, and the captioner speaks of the criterion (its cluster names are shapes)."""
    (r,) = fit([member(3, seed=1, width=48, steps=400, criteria=["shape", "position"], n_eval=256)])
    m = r.metrics
    assert m["on_criterion/shape"] == 1.0 and m["on_criterion/position"] == 1.0
    assert m["acc/shape"] > m["base_pixels/acc/shape"] + 0.15
    assert m["acc/shape"] > m["base_encoder/acc/shape"] + 0.15
    assert m["acc/position"] > 0.95 and m["nmi/position"] > 0.8


def test_sweep_end_to_end_shrunk(tmp_path):
    """`sweeps/criterion_clustering.yaml` on local Ray, shrunk (1 width × 2 K × 2 seeds, 150 steps: one pack, as K
    is per member), then its report: every criterion's metrics on the rows, the verdict table and claims with both
    baselines."""
    import json
    from pathlib import Path

    from e2e import ftsweep, read_dataset

    from analysis import write_report
    root, out = Path(__file__).parent.parent, tmp_path / "ictc"
    ftsweep("run", str(root / "sweeps" / "criterion_clustering.yaml"), "model.width=[8]", "task.n_clusters=[3,5]",
            "seeds=2", "train.steps=150", "train.eval_every=150", "task.n_eval=96", "task.batch_size=32",
            "task.kmeans_init=1", "--out", str(out), cwd=tmp_path)
    runs = read_dataset(out / "runs").to_pandas()
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    for c in CRITERIA:
        for m in (f"acc/{c}", f"nmi/{c}", f"base_pixels/acc/{c}", f"base_encoder/acc/{c}"):
            assert runs[m].between(0, 1).all(), m
    md = write_report(out, n_boot=100).read_text()
    assert "### Does the paper's effect show?" in md and "ANALOGUE" in md
    claims = json.loads((out / "report" / "claims.json").read_text())
    assert len(claims) == 2 * len(CRITERIA) * 2                     # K × criteria × baselines
    assert {c["baseline"] for c in claims} == {"base_pixels", "base_encoder"}
    assert {c["verdict"] for c in claims} <= {"shows", "does not show"}
