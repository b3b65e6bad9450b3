"""analysis.report_kinds: a contract over every report kind (Config, row columns read back through Parquet and
SweepMeta, the section's signature, one-line errors), and each kind's checks, passing and failing."""
import dataclasses
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import read_runs
from analysis.meta import SweepMeta
from analysis.report_kinds import (
    FIELDS,
    LORA_Y,
    REPORTS,
    ReportConfig,
    check_rule,
    config_from_columns,
    report_config_class,
)
from analysis.synthetic import write_parts

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"task.n", "task.k", "task.dim", "task.n_dicts", "task.delta", "task.name", "task.n_pairs",
           "task.pretrained", "task.target_depth", "adapter.depth", "adapter.width", "adapter.rank", "adapter.name",
           "model.name", "model.width", "model.depth", "model.n_embd", "model.activation", "train.method",
           "train.lr", "train.batch_selection", "seed"}

# one valid section per kind (as the shipped sweeps write them), with the search kind it needs
VALID = {
    "capacity": ({"x": "task.n", "panel_by": ["adapter.depth"], "curve_by": ["train.method"],
                  "theory": {"adapter.depth=2": 1.0, "adapter.depth=3": 0.5}}, "capacity"),
    "rank_curve": ({"x": "adapter.rank", "y": "test/mse", "select": "val/mse", "curve_by": ["train.method"],
                    "panel_by": ["task.pretrained"]}, "optuna"),
    "icl_curve": ({"curve_by": ["model.name"], "select": "model.name=transformer",
                   "theory": {"error_ratio_within": 2.5, "param_ratio_below": 0.1, "loop_ratio_below": 1.25}}, "grid"),
    "accuracy_table": ({"y": "val/acc", "x": "task.n_pairs", "panel_by": ["task.name"], "curve_by": ["model.name"],
                        "theory": {"task.name=mqar,model.name=mamba": 0.8}}, "grid"),
    "retrieval": ({"x": "task.n_dicts", "curve_by": ["model.n_embd"], "select": "acc/mean>=0.5"}, "grid"),
    "batch_selection": ({"select": "opt/gap<=0.1; opt/gap<=0.03", "y": "full/loss", "panel_by": ["task.n"]}, "grid"),
    "needles": ({"curve_by": ["adapter.name", "adapter.rank"], "theory": {"retain_tol": 0.02}}, "grid"),
    "dual_modes": ({"curve_by": ["task.delta"]}, "grid"),
    "lora_threshold": ({"x": "adapter.rank", "y": "test/mse_rel", "select": "val/mse", "curve_by": ["train.method"],
                        "panel_by": ["model.activation", "model.width", "model.depth", "task.target_depth"],
                        "theory": {"epsilon": 0.01}}, "grid"),
    "criterion_clustering": ({"x": "model.width", "panel_by": ["task.n"]}, "grid"),
    "t2i_icl": ({"curve_by": ["model.name"], "theory": {"k_low": 2}}, "grid"),
    "feature_retrieval": ({"curve_by": ["train.batch_selection"], "theory": {"keep": 0.95}}, "grid"),
}


def config(kind: str, **values) -> ReportConfig:
    return report_config_class(kind)(kind=kind, **values)


def test_registry_holds_every_kind_with_a_valid_example():
    assert set(VALID) == set(REPORTS)
    assert len({e.FIGURE for e in REPORTS.values()}) == len(REPORTS)       # one figure file name per kind


def test_import_loads_no_dataframe_stack():
    """The sweep spec loader imports this module: no pandas, numpy, matplotlib or pyarrow behind it."""
    code = "import sys, analysis.report_kinds; print(sorted({m.split('.')[0] for m in sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert not {"pandas", "numpy", "matplotlib", "pyarrow"} & set(eval(out.stdout))


# ----------------------------------------------------------------------------------------------- contract

@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_config_schema_and_defaults(kind):
    entry = REPORTS[kind]
    assert entry.registry_name == kind and issubclass(entry.Config, ReportConfig)
    assert report_config_class(kind) is entry.Config
    assert tuple(f.name for f in dataclasses.fields(entry.Config)) == FIELDS    # old spec.yaml files stay valid
    cfg = entry.Config()
    assert cfg.kind == kind and (cfg.x, cfg.y, cfg.select, cfg.curve_by, cfg.panel_by, cfg.theory) == (
        "", "", "", [], [], {})     # rows of a spec that omits a field carry what they carried before


@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_columns_round_trip_through_parquet_and_sweep_meta(kind, tmp_path):
    section, search = VALID[kind]
    for i, cfg in enumerate((REPORTS[kind].Config(), config(kind, **section))):
        cols = cfg.columns()
        assert set(cols) == {f"report.{f}" for f in FIELDS} and all(isinstance(v, str) for v in cols.values())
        rows = pd.DataFrame([{"sweep": "s", "run_id": f"r{j}", "status": "ok", "search.kind": search, **cols}
                             for j in range(2)])
        write_parts(rows, tmp_path / str(i), n_parts=1)
        meta = SweepMeta.from_runs(read_runs(tmp_path / str(i)))
        assert type(meta.report) is REPORTS[kind].Config and meta.report == cfg and meta.report_kind == kind
        assert (meta.x, meta.y, meta.select) == (cfg.x or None, cfg.y or None, cfg.select or None)
        assert (list(meta.curve_by), list(meta.panel_by), meta.theory) == (cfg.curve_by, cfg.panel_by, cfg.theory)


@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_section_has_the_uniform_signature(kind):
    sig = inspect.signature(REPORTS[kind].section_function())
    params = list(sig.parameters.values())
    assert [p.name for p in params[:3]] == ["runs", "meta", "outdir"]
    kw = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    assert {"figure_name", "n_boot", "seed"} <= kw
    assert all(p.default is not p.empty for p in params[3:] if p.name not in ("figure_name",))


@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_valid_example_passes_and_every_failure_is_one_line_naming_its_field(kind):
    section, search = VALID[kind]
    config(kind, **section).check(search, COLUMNS)
    for field, value in (("x", "no.such"), ("curve_by", ["no.such"]), ("panel_by", ["no.such"]),
                         ("theory", {"no.such=1": float("inf")})):
        with pytest.raises(ValueError) as e:
            config(kind, **{**section, field: value}).check(search, COLUMNS)
        assert re.fullmatch(rf"report\.{field}: [^\n]+", str(e.value)), str(e.value)


def test_report_config_class():
    assert report_config_class("") is ReportConfig and report_config_class(None) is ReportConfig
    for bad in ("histogram", 3, ["capacity"]):
        with pytest.raises(ValueError, match=r"^report\.kind: must be one of capacity, rank_curve, .* or empty "
                                             rf"\(got {re.escape(repr(bad))}\)$"):
            report_config_class(bad)
    with pytest.raises(ValueError, match=r"^report\.kind: must be one of"):
        ReportConfig(kind="histogram").check("grid", COLUMNS)


def test_rows_of_an_unknown_kind_or_bad_theory():
    cfg = config_from_columns({"report.kind": "histogram", "report.x": float("nan"), "report.curve_by": "a, b"})
    assert type(cfg) is ReportConfig
    assert (cfg.kind, cfg.x, cfg.curve_by, cfg.theory) == ("histogram", "", ["a", "b"], {})
    with pytest.raises(ValueError, match=r"report.theory of sweep s is not JSON: '\{no'"):
        config_from_columns({"report.theory": "{no"}, "s")


# ----------------------------------------------------------------------------------------------- per-kind checks

CASES = [  # (kind, section, search kind, None = passes | the error's start)
    ("", {}, "grid", None),
    ("", {"x": "task.n", "curve_by": ["adapter.depth"], "theory": {"adapter.depth=2": 1.0}}, "capacity", None),
    # a capacity YAML switched to `search.kind=grid report.kind=` by override keeps its other fields: left alone
    ("", {"x": "task.n", "panel_by": ["adapter.depth"], "theory": {"retain_tol": 1.0}}, "grid", None),
    ("", {"x": "task.nn"}, "grid", "report.x: task.nn is not a config column"),
    ("", {"x": "task.n", "theory": {"task.dim=8": 1.0}}, "capacity", "report.theory: key 'task.dim=8' names task.dim"),
    ("capacity", {"theory": {"": 1.0}, "x": "task.n"}, "capacity", None),
    ("capacity", {"x": "task.n"}, "grid", "report.kind: capacity reads the thresholds of a capacity search"),
    ("capacity", {}, "capacity", "report.x: required for report.kind capacity"),
    ("capacity", {"x": "task.nn"}, "capacity", "report.x: task.nn is not a config column of this sweep; valid: "),
    ("capacity", {"x": "task.n", "curve_by": ["task.n"]}, "capacity", "report.curve_by: task.n is already report.x"),
    ("capacity", {"x": "task.n", "panel_by": ["adapter.depth", "adapter.depth"]}, "capacity",
     "report.panel_by: adapter.depth is already report.panel_by"),
    ("capacity", {"x": "task.n", "theory": {"retain_tol": 0.02}}, "capacity",
     "report.theory: key 'retain_tol': a curve label reads column=value"),
    ("capacity", {"x": "task.n", "theory": {"a.b=1": "steep"}}, "capacity", "report.theory: the value of 'a.b=1'"),
    ("capacity", {"x": "task.n", "select": "val/acc<=3", "y": "a b"}, "capacity", None),     # not used: left alone
    ("rank_curve", {"x": "adapter.rank"}, "grid", "report.y: required for report.kind rank_curve"),
    ("rank_curve", {"y": "test/mse"}, "grid", "report.x: required for report.kind rank_curve"),
    ("rank_curve", {"x": "adapter.rank", "y": "model.width"}, "grid", "report.y: model.width is a config column"),
    ("rank_curve", {"x": "adapter.rank", "y": "test/mse", "select": "val/mse<=0.1"}, "grid",
     "report.select: must name one metric"),
    ("icl_curve", {"curve_by": ["model.name", "model.depth"]}, "grid", None),
    ("icl_curve", {"curve_by": ["model.name"], "select": "transformer"}, "grid",
     "report.select: the control curve reads column=value"),
    ("icl_curve", {"curve_by": ["model.name"], "select": "task.name=x"}, "grid",
     "report.select: task.name is not in report.curve_by"),
    ("icl_curve", {"curve_by": ["model.name"], "theory": {"error_ratio_within": 2.0}}, "grid",
     "report.theory: its bounds decide the claims against a control curve"),
    ("icl_curve", {"curve_by": ["model.name"], "select": "model.name=a", "theory": {"error_ratio": 2.0}}, "grid",
     "report.theory: unknown key 'error_ratio' for report.kind icl_curve; valid: error_ratio_within"),
    ("icl_curve", {"curve_by": ["model.name"], "select": "model.name=a", "theory": {"error_ratio_within": 0.5}},
     "grid", "report.theory: error_ratio_within must be >= 1"),
    ("icl_curve", {"x": "task.nn"}, "grid", "report.x: task.nn is not a config column"),
    ("accuracy_table", {}, "grid", None),
    ("accuracy_table", {"y": "val acc"}, "grid", "report.y: must name one metric"),
    ("accuracy_table", {"curve_by": ["model.name"], "theory": {"model.width=8": 0.5}}, "grid",
     "report.theory: key 'model.width=8' names model.width, which labels no curve"),
    ("retrieval", {"x": "task.n_dicts", "curve_by": ["model.n_embd"]}, "grid", None),
    ("retrieval", {"x": "task.n_dicts", "panel_by": ["task.name"], "curve_by": ["model.n_embd"],
                   "theory": {"task.name=kv": 1.0}}, "grid", None),
    ("retrieval", {"curve_by": ["model.n_embd"]}, "grid", "report.x: required for report.kind retrieval"),
    ("retrieval", {"x": "task.n_dicts"}, "grid", "report.curve_by: required for report.kind retrieval"),
    ("retrieval", {"x": "task.n_dicts", "curve_by": ["model.n_embd"], "select": "acc/mean=>0.5"}, "grid",
     "report.select: a rule must read <metric><op><number>"),
    ("retrieval", {"x": "task.n_dicts", "curve_by": ["model.n_embd"], "select": "acc/mean>=1e"}, "grid",
     "report.select: a rule must read <metric><op><number>"),
    ("retrieval", {"x": "task.n_dicts", "curve_by": ["model.n_embd"], "select": "task.n>=3"}, "grid",
     "report.select: task.n is a config column"),
    ("retrieval", {"x": "task.n_dicts", "curve_by": ["model.n_embd"], "theory": {"model.n_embd=64": 1.0}}, "grid",
     "report.theory: key 'model.n_embd=64' names model.n_embd, which labels no curve"),
    ("batch_selection", {}, "grid", None),
    ("batch_selection", {"select": "opt/gap<=0.1; full/loss<=0.2"}, "grid",
     "report.select: the rules must share one metric and one direction"),
    ("batch_selection", {"select": "opt/gap<=0.1; opt/gap>=0.2"}, "grid",
     "report.select: the rules must share one metric and one direction"),
    ("batch_selection", {"select": " ; "}, "grid", "report.select: no rule in"),
    ("batch_selection", {"select": "opt/gap<=0.1; opt/gap<0.1e"}, "grid", "report.select: a rule must read"),
    ("batch_selection", {"y": "train.lr"}, "grid", "report.y: train.lr is a config column"),
    ("needles", {"theory": {"retain_tol": 0.0}}, "grid", "report.theory: retain_tol must be > 0"),
    ("needles", {"theory": {"tol": 0.1}}, "grid", "report.theory: unknown key 'tol' for report.kind needles"),
    ("dual_modes", {"theory": {"a": float("nan")}}, "grid", "report.theory: the value of 'a' must be a finite"),
    ("dual_modes", {"curve_by": ["task.deltaa"]}, "grid", "report.curve_by: task.deltaa is not a config column"),
    ("lora_threshold", {}, "grid", None),
    ("lora_threshold", {"y": "test/mse"}, "grid", f"report.y: lora_threshold reads {LORA_Y}"),
    ("lora_threshold", {"select": "val/mse<=1"}, "grid", "report.select: must name one metric"),
    ("lora_threshold", {"theory": {"epsilon": -1.0}}, "grid", "report.theory: epsilon must be > 0"),
    ("lora_threshold", {"theory": {"eps": 0.01}}, "grid", "report.theory: unknown key 'eps'"),
]


@pytest.mark.parametrize("kind,section,search,error", CASES,
                         ids=[f"{c[0] or 'none'}-{i}" for i, c in enumerate(CASES)])
def test_check(kind, section, search, error):
    cfg = config(kind, **section) if kind else ReportConfig(**section)
    if error is None:
        cfg.check(search, COLUMNS)
    else:
        with pytest.raises(ValueError) as e:
            cfg.check(search, COLUMNS)
        assert str(e.value).startswith(error) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("kind,missing,error", [
    ("lora_threshold", "task.target_depth", "report.kind: lora_threshold computes R* from model.width"),
    ("lora_threshold", "adapter.rank", "report.x: empty means adapter.rank"),
    ("batch_selection", "train.batch_selection", "report.kind: batch_selection compares the values"),
])
def test_check_needs_config_columns(kind, missing, error):
    with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
        config(kind).check("grid", COLUMNS - {missing})


# --------------------------------------------------------------------------------------------- agreement with sections

RULES = ["acc/mean>=0.9", " acc/mean >= 0.5 ", "acc/mean>0.9", "val/acc<=1e-3", "acc/mean=>0.9", "acc/mean>=",
         ">=0.9", "acc/mean>=1e", "acc/mean>=0.9x", "acc mean>=0.9", "acc/mean!=0.9", "acc/mean>=+-1"]


def _passes(fn, *args) -> bool:
    try:
        fn(*args)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("text", RULES)
def test_select_rules_agree_with_the_sections_parsers(text):
    """What validate accepts, the report parses (and the report-time error a check prevents is a crash, not a ⚠)."""
    from analysis.batch_measures import parse_rules
    from analysis.retrieval_report import parse_rule
    ok = _passes(check_rule, "select", text, COLUMNS)
    assert ok == _passes(parse_rule, text) == _passes(parse_rules, text), text
    retrieval = _passes(config("retrieval", x="task.n_dicts", curve_by=["model.n_embd"], select=text).check, "grid",
                        COLUMNS)
    batch = _passes(config("batch_selection", select=text).check, "grid", COLUMNS)
    assert retrieval == batch == ok


def test_named_constants_match_the_sections():
    from analysis.accuracy_report import DEFAULT_Y
    from analysis.lora_threshold import Y
    from analysis.report_kinds import ICL_THEORY
    assert LORA_Y == Y and DEFAULT_Y == "val/acc"
    icl = (ROOT / "analysis" / "icl_report.py").read_text()
    assert all(f'"{key}"' in icl for key in ICL_THEORY)
    assert '"retain_tol"' in (ROOT / "analysis" / "needles_report.py").read_text()
    assert '"epsilon"' in (ROOT / "analysis" / "lora_report.py").read_text()


def test_theory_json_is_the_rows_text():
    cfg = config("capacity", x="task.n", theory={"adapter.depth=2": 1.0})
    assert cfg.columns()["report.theory"] == json.dumps({"adapter.depth=2": 1.0})
    assert config_from_columns(cfg.columns()) == cfg
