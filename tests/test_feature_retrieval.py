"""`feature_retrieval` (issue 18 item 3, papers.md §10 ANALOGUE): the catalogue and query generator's properties,
the hashing, the retrieval metrics against brute-force oracles (ties included), TF-IDF, the distillation loss, the
pretrain -> teacher -> student chain through recorded runs (the student's view of its teacher equals the teacher's
own recorded numbers), the `task.teacher` resolution errors (one line, exit 2), and one tiny `ftsweep run` + report
of sweeps/feature_distill.yaml on a real local Ray."""
import json
from pathlib import Path

import pytest
import torch

from ftcore.config import member_from_dict
from ftcore.fit import build_pack
from ftcore.tasks import feature_catalogue as fc
from ftcore.tasks.feature_metrics import kind_metrics, ranks, tfidf_scores
from ftcore.tasks.feature_retrieval import _kl
from ftcore.tasks.text_hashing import grams, hash_text, hash_texts
from sweeps.cli import main
from tests.trained_sources import record_pack as record

REPO = Path(__file__).resolve().parents[1]
SMALL = {"name": "feature_retrieval", "n": 32, "hash_dim": 64, "dim": 8, "batch_size": 8}
MLP = {"name": "mlp", "width": 16, "depth": 2, "last_activation": False}


# ------------------------------------------------------------------------------------------------ generator

def test_catalogue_is_fixed_by_its_seed_and_names_are_distinct():
    a, b, c = fc.build_catalogue(256, 0), fc.build_catalogue(256, 0), fc.build_catalogue(256, 1)
    assert a == b and a.features != c.features
    assert len(set(a.names)) == len(set(a.features)) == 256
    for name, text in zip(a.names, a.texts):
        assert text.startswith(name + ":") and "useful when" in text
    with pytest.raises(ValueError, match="task.n"):
        fc.build_catalogue(fc.MAX_FEATURES + 1, 0)


def _object_phrase(kind: str, o: int, text: str) -> int:
    """Which of object o's query phrases (synonym or situation index >= 1) a contextual query uses."""
    phrases = fc.OBJECTS[o][1] if kind == "paraphrase" else fc.OBJECTS[o][2]
    hits = [k for k in range(1, len(phrases)) if phrases[k] in text]
    assert len(hits) == 1, (text, hits)
    return hits[0]


def test_split_holds_out_combinations_and_phrases():
    cat = fc.build_catalogue(256, 0)
    sp = fc.split_queries(cat, 1, 2, 0)
    assert sp == fc.split_queries(cat, 1, 2, 0) and sp != fc.split_queries(cat, 1, 2, 1)
    for s, per in (("test", 2), ("val", 1)):
        for kind in fc.KINDS:
            assert sp.kind[s].count(kind) == 256 * per
    seen = {s: {} for s in ("train", "val", "test")}
    for s in seen:
        for t, f, k in zip(sp.text[s], sp.feature[s], sp.kind[s]):
            seen[s].setdefault((f, k), set()).add(t)
    held = {}
    for (f, k), tests in seen["test"].items():
        assert not tests & seen["train"][(f, k)] and not tests & seen["val"][(f, k)]
        if k in fc.CONTEXTUAL:                   # one held-out phrase per object, in no train or val query
            o = cat.features[f][0]
            phr = {_object_phrase(k, o, t) for t in tests}
            assert len(phr) == 1
            assert held.setdefault((o, k), phr) == phr
            others = seen["train"][(f, k)] | seen["val"][(f, k)]
            assert all(_object_phrase(k, o, t) not in phr for t in others)
    kw_words = {w for o in fc.OBJECTS for w in [o[0], *o[1][:2]]} | {w for a in fc.ACTIONS for w in [a[0], *a[1][:2]]}
    for t, k in zip(sp.text["test"], sp.kind["test"]):
        if k == "keyword":
            assert any(t == f"{x} {y}" for x in kw_words for y in kw_words)
    with pytest.raises(ValueError, match="n_test"):
        fc.split_queries(cat, 3, 1, 0)


def test_hashing_is_stable_normalised_and_order_aware():
    a = hash_text("Turn ON dark mode", 64)
    assert torch.equal(a, hash_text("turn on dark mode", 64)) and torch.equal(a, hash_texts(["turn on dark mode"], 64)[0])
    assert abs(float(a.norm()) - 1) < 1e-6 and float(hash_text("", 64).norm()) == 0
    assert grams("a b c") == ["a", "b", "c", "a b", "b c"]
    b = hash_text("dark mode turn on", 64)                  # same unigrams, other bigrams
    assert not torch.equal(a, b) and float(a @ b) > 0.3


# ------------------------------------------------------------------------------------------------ metrics

def test_ranks_against_a_brute_force_oracle_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (2, 9, 5), generator=g).float()       # many ties
    truth = torch.randint(0, 5, (9,), generator=g)
    kinds = ["keyword", "paraphrase", "situation"] * 3
    rank, top1 = ranks(scores, truth)
    m = kind_metrics(scores, truth, kinds, "x")
    for e in range(2):
        rr = []
        for t in range(9):
            s, f = scores[e, t].tolist(), int(truth[t])
            above = sum(v > s[f] for v in s)
            tied = sum(v == s[f] for j, v in enumerate(s) if j != f)
            assert rank[e, t] == 1 + above + tied / 2
            assert abs(float(top1[e, t]) - (1 / (1 + tied) if above == 0 else 0.0)) < 1e-6
            rr.append(1 / (1 + above + tied / 2))
        assert abs(float(m["x/mrr"][e]) - sum(rr) / 9) < 1e-6
        ctx = [r for r, k in zip(rr, kinds) if k != "keyword"]
        assert abs(float(m["x/mrr/contextual"][e]) - sum(ctx) / len(ctx)) < 1e-6
        assert abs(float(m["x/mrr/keyword"][e]) - sum(rr[0::3]) / 3) < 1e-6


def test_tfidf_exact_text_first_and_no_overlap_is_the_middle_rank():
    cat = fc.build_catalogue(16, 0)
    s = tfidf_scores(cat.texts, [cat.texts[3], "zzz qqq"])
    m = kind_metrics(s, torch.tensor([3, 5]), ["keyword", "situation"], "tfidf")
    assert float(m["tfidf/mrr/keyword"]) == 1.0
    assert abs(float(m["tfidf/mrr/situation"]) - 1 / 8.5) < 1e-9          # all 16 tied: rank (16 + 1) / 2
    assert abs(float(m["tfidf/top1/situation"]) - 1 / 16) < 1e-9


# ------------------------------------------------------------------------------------------------ loss, teacher

def member(task=None, model=MLP, seed=0, **train):
    return {"model": dict(model), "adapter": {"name": "full"}, "task": {**SMALL, **(task or {})},
            "train": {"steps": 12, "eval_every": 6, "lr": 3e-3, "early_stop": False, **train}, "seed": seed}


def test_kl_is_zero_iff_the_distributions_agree():
    z = torch.randn(2, 3, 4, 4)
    assert _kl(z, z, -1).abs().max() < 1e-6 and _kl(z, z + 5.0, -1).abs().max() < 1e-5   # shift-invariant
    assert (_kl(z, torch.randn(2, 3, 4, 4), -2) > 0).all()


def test_loss_reads_the_layout_of_several_batches():
    task, model = build_pack([member_from_dict(member(seed=s)) for s in (0, 1)], torch.float32)
    idx = torch.randperm(32, generator=torch.Generator().manual_seed(0))[:16].reshape(1, 2, 8).expand(2, 2, 8)
    pos = task._draw(idx, [torch.Generator().manual_seed(s) for s in (0, 1)])
    x, y, w = task.batch_of(idx, pos)
    both = task.loss(model(x), y, w)
    parts = [task.loss(model(xx), yy, ww) for xx, yy, ww in
             (task.batch_of(idx[:, m:m + 1], pos[:, m:m + 1]) for m in range(2))]
    torch.testing.assert_close(both, (parts[0] + parts[1]) / 2)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Recorded pretrain (stage 1) and teacher (model.from it, shuffle batches) runs, both saved."""
    root = tmp_path_factory.mktemp("chain")
    pre = record(root / "pre", [member({"stage": "pretrain"}, save="final")], "p0")[0]
    src = {"name": "mlp", "from": {"run_id": pre["run_id"], "dir": str(root / "pre")}}
    teach = record(root / "teach", [member(model=src, save="final", batch_selection="shuffle", seed=s)
                                    for s in (0, 1)], "t0")
    return root, pre, teach


def test_student_sees_its_teacher_as_recorded(chain):
    root, pre, teach = chain
    assert all(r["model.from.run_id"] == pre["run_id"] for r in teach)
    t = teach[0]
    task_cfg = {"teacher_run_id": t["run_id"], "teacher_dir": str(root / "teach"), "with_corpus": True}
    rows = record(root / "students", [member(task_cfg, model={**MLP, "width": 4}, seed=s) for s in (0, 1)], "s0")
    for r in rows:
        assert r["status"] == "ok" and r["task.teacher_run_id"] == t["run_id"]
        assert r["teacher/mrr"] == pytest.approx(t["test/mrr"], abs=1e-6)            # the same queries, same model
        assert r["teacher/mrr/situation"] == pytest.approx(t["test/mrr/situation"], abs=1e-6)
        assert r["teacher/width"] == 16 and r["distill/mrr_ratio"] == pytest.approx(r["test/mrr"] / t["test/mrr"])
        assert r["tfidf/mrr"] == pytest.approx(t["tfidf/mrr"])
    other = member_from_dict(member({**task_cfg, "distill_alpha": 1.0}, model={**MLP, "width": 4}))
    assert other.run_id() != rows[0]["run_id"]


def _spec(tmp_path, teacher: str, extra: str = "") -> Path:
    p = tmp_path / "d.yaml"
    p.write_text(f"name: d\nmodel: {{name: mlp, width: 4, depth: 2, last_activation: false}}\nadapter: {{name: full}}\n"
                 f"task: {{name: feature_retrieval, n: 32, hash_dim: 64, dim: 8, batch_size: 8, teacher: {teacher}"
                 f"{extra}}}\ntrain: {{steps: 6, eval_every: 3}}\nseeds: 2\n")
    return p


@pytest.mark.parametrize("case", ["ok", "missing-dir", "best-not-a-column", "other-catalogue", "both", "no-teacher-task",
                                  "where-matches-nothing", "id-and-best"])
def test_teacher_resolution_and_its_mistakes(case, chain, tmp_path, capsys):
    root = chain[0]
    d = json.dumps(str(root / "teach"))
    teacher, extra, expect = f"{{dir: {d}, best: val/mrr, mode: max}}", "", None
    if case == "missing-dir":
        teacher, expect = f"{{dir: {json.dumps(str(tmp_path / 'nope'))}, best: val/mrr, mode: max}}", "task.teacher.dir"
    elif case == "best-not-a-column":
        teacher, expect = f"{{dir: {d}, best: val/nope, mode: max}}", "task.teacher.best"
    elif case == "other-catalogue":
        extra, expect = ", catalogue_seed: 3", "task.catalogue_seed"
    elif case == "both":
        extra, expect = f", teacher_run_id: {chain[2][0]['run_id']}, teacher_dir: {d}", "not both"
    elif case == "id-and-best":
        teacher, expect = f"{{dir: {d}, run_id: abc, best: val/mrr, mode: max}}", "task.teacher: give exactly one"
    elif case == "where-matches-nothing":
        teacher, expect = f"{{dir: {d}, best: val/mrr, mode: max, where: {{train.batch_selection: full}}}}", "no run"
    spec = _spec(tmp_path, teacher, extra)
    if case == "no-teacher-task":
        spec.write_text(spec.read_text().replace("name: feature_retrieval, n: 32, hash_dim: 64, dim: 8, batch_size: 8",
                                                 "name: digits_contrastive, n: 32, n_test: 16, dim: 8, batch_size: 8"))
        expect = "does not distil"
    code = main(["validate", str(spec)])
    err = capsys.readouterr().err.strip().splitlines()
    if case == "ok":
        assert code == 0, err
        return
    assert code == 2 and len(err) == 1 and err[0].startswith("ftsweep: error:") and expect in err[0], err


# ------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_distill_sweep_runs_and_reports(chain, tmp_path):
    """sweeps/feature_distill.yaml, tiny, over the recorded teacher: rows, a width claim, claims.json."""
    from e2e import ftsweep, read_dataset
    out = tmp_path / "dist"
    ftsweep("run", str(REPO / "sweeps" / "feature_distill.yaml"), f"task.teacher.dir={chain[0] / 'teach'}",
            "task.n=32", "task.hash_dim=64", "task.dim=8", "task.batch_size=8", "model.depth=2", "model.width=[4,16]",
            "task.distill_alpha=0.0", "seeds=2", "train.steps=10", "train.eval_every=5", "--out", str(out), cwd=tmp_path)
    rows = read_dataset(out / "runs").to_pylist()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    best = min(chain[2], key=lambda r: (-r["val/mrr"], r["run_id"]))      # model.from's tie rule
    assert {r["task.teacher_run_id"] for r in rows} == {best["run_id"]}
    md = (out / "report" / "report.md").read_text()
    assert "Distillation: width keeping 0.95" in md and "ANALOGUE" in md
    claims = json.loads((out / "report" / "claims.json").read_text())
    assert sum("narrower than the teacher" in c["statement"] for c in claims) == 1
