"""Report kinds: the registry of `report.kind` values, each entry owning the schema of a sweep's `report:` section
(its `Config`), the checks on it, and the report section that reads it (like ftcore's models, adapters and tasks).

    cfg = coerce(report_config_class(kind), section)     # the sweep layer types the section (ftcore.fields.coerce)
    cfg.check(spec.search.kind, columns)                 # at `ftsweep validate`, before any run: one-line ValueError
    row.update(cfg.columns())                            # the report.* columns every run row carries
    REPORTS[kind].section(runs, meta, outdir, figure_name=..., n_boot=..., seed=...)    # at `ftsweep report`

Every kind has the same seven fields (kind, x, y, select, curve_by, panel_by, theory), so the Parquet columns and
old spec.yaml files stay valid; kinds differ in which fields they use and what they require of them (a field a
kind does not use is left alone: an override that switches the kind cannot delete the YAML's). The x, y
and select defaults stay empty in every Config (the section applies its own default, e.g. y = val/acc): a row
written today carries what rows of the same spec carried before, which a resumed sweep needs (a report column
must be constant within a sweep, `analysis.meta.SweepMeta`). The checks repeat what the sections would find
only after the sweep (a missing report.x, a select rule that does not parse, a column that is no config column,
a theory key that matches no curve); the sections keep their own report-time guards for rows written before.

The sweep spec loader imports this module, so it imports no pandas, numpy or matplotlib: a kind's section
function is named by module path and imported on first use.
"""
import importlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

FIELDS = ("kind", "x", "y", "select", "curve_by", "panel_by", "theory")
COLUMNS = tuple(f"report.{f}" for f in FIELDS)
# one comparison rule "<metric><op><value>" (analysis.retrieval_report.parse_rule, analysis.batch_measures.parse_rules)
RULE = re.compile(r"^\s*(?P<metric>[^<>=!\s;]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+0-9.eE]+)\s*$")


def fail(name: str, message: str) -> None:
    """The one-line error of every check: `report.<field>: <message>`."""
    raise ValueError(f"report.{name}: {message}")


class _Registry(dict):
    """name -> report kind entry (ftcore.registry.Registry's twin: analysis may not import ftcore)."""

    def register(self, name: str):
        def deco(cls):
            if name in self:
                raise ValueError(f"report.kind '{name}' registered twice")
            cls.registry_name = name
            self[name] = cls
            return cls
        return deco


REPORTS = _Registry()


def _kind_error(kind: Any) -> None:
    fail("kind", f"must be one of {', '.join(REPORTS)} or empty (got {kind!r})")


def report_config_class(kind: Any) -> type:
    """The Config class of `kind` ("" or None: no report kind, the base class); one-line ValueError otherwise."""
    if kind is None or kind == "":
        return ReportConfig
    if not isinstance(kind, str) or kind not in REPORTS:
        _kind_error(kind)
    return REPORTS[kind].Config


# --------------------------------------------------------------------------------------------------- base config

@dataclass
class ReportConfig:
    """The `report:` section. Kind "" (no report kind) uses this class: a capacity search is then reported as a
    capacity curve (from x, curve_by, panel_by and theory), any other search gets status counts only."""
    kind: str = ""
    x: str = ""                 # the curve's x axis: a config column (task.n)
    y: str = ""                 # the plotted metric (test/mse)
    select: str = ""            # kind-specific: a selection metric, a rule (acc/mean>=0.9) or a control curve label
    curve_by: list[str] = field(default_factory=list)     # config columns whose values make the curves
    panel_by: list[str] = field(default_factory=list)     # config columns whose values make the panels
    theory: dict[str, float] = field(default_factory=dict)  # kind-specific: slopes per curve label, or named numbers

    def check(self, search_kind: str, columns: set[str]) -> None:
        """The rules every kind shares (kinds add theirs): a known kind; x, curve_by and panel_by config columns of
        this sweep (`columns`), none named twice; theory values numbers. A field the kind does not use is left
        alone: a variant or override that switches the kind cannot delete the YAML's other fields."""
        if self.kind and self.kind not in REPORTS:
            _kind_error(self.kind)
        seen: dict[str, str] = {}
        for name in ("x", "curve_by", "panel_by"):
            value = getattr(self, name)
            for col in [value] if isinstance(value, str) else value:
                if not col:
                    continue
                if col not in columns:
                    fail(name, f"{col} is not a config column of this sweep; valid: {', '.join(sorted(columns))}")
                if col in seen:
                    fail(name, f"{col} is already report.{seen[col]}: a column is an axis, a curve or a panel, once")
                seen[col] = name
        for key, v in self.theory.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                fail("theory", f"the value of {key!r} must be a finite number (got {v!r})")
        if not self.kind and search_kind == "capacity":
            check_theory_labels(self, [*self.panel_by, *self.curve_by])

    def columns(self) -> dict[str, str]:
        """The report.* columns of every run row (analysis.meta.SweepMeta reads them back: `config_from_columns`)."""
        return {"report.kind": self.kind, "report.x": self.x, "report.y": self.y, "report.select": self.select,
                "report.curve_by": ",".join(self.curve_by), "report.panel_by": ",".join(self.panel_by),
                "report.theory": json.dumps(self.theory)}


def _text(v: Any) -> str:
    """A row value as text: None, NaN and blanks are ''."""
    if v is None:
        return ""
    try:
        if v != v:                              # NaN
            return ""
    except (TypeError, ValueError):
        return ""
    return str(v).strip()


def config_from_columns(values: dict, sweep: str = "") -> ReportConfig:
    """The Config a sweep's rows carry (`values`: report.* column -> the sweep's value; absent or null = unset).
    An unknown kind (rows of an older version) keeps its name on the base class: the report then says so."""
    text = {c: _text(values.get(c)) for c in COLUMNS}
    kind = text["report.kind"]
    cls = REPORTS[kind].Config if kind in REPORTS else ReportConfig
    raw = text["report.theory"] or "{}"
    try:
        theory = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"report.theory of sweep {sweep} is not JSON: {raw!r} ({e})") from e
    split = lambda t: [s.strip() for s in t.split(",") if s.strip()]      # noqa: E731
    return cls(kind=kind, x=text["report.x"], y=text["report.y"], select=text["report.select"],
               curve_by=split(text["report.curve_by"]), panel_by=split(text["report.panel_by"]),
               theory=theory if isinstance(theory, dict) else {})


# --------------------------------------------------------------------------------------------------- shared checks

def require_field(cfg: ReportConfig, name: str, what: str) -> None:
    if not getattr(cfg, name):
        fail(name, f"required for report.kind {cfg.kind}: {what}")


def check_metric(name: str, metric: str, columns: set[str]) -> None:
    """`metric` names one row metric (a slash name such as test/mse), not a config column nor a rule."""
    if not metric or re.search(r"[\s<>=!;,]", metric):
        fail(name, f"must name one metric such as test/mse, not a rule or a list (got {metric!r})")
    if metric in columns:
        fail(name, f"{metric} is a config column; name a metric such as test/mse")


def check_rule(name: str, text: str, columns: set[str]) -> tuple[str, str, float]:
    """'acc/mean>=0.9' -> ('acc/mean', '>=', 0.9), or a one-line error naming report.<name>."""
    m = RULE.match(text)
    value = None
    if m:
        try:
            value = float(m["value"])
        except ValueError:
            pass
    if value is None or not math.isfinite(value):
        fail(name, f"a rule must read <metric><op><number>, op one of >= > <= <, e.g. acc/mean>=0.9 (got {text!r})")
    check_metric(name, m["metric"], columns)
    return m["metric"], m["op"], value


def check_theory_labels(cfg: ReportConfig, allowed: list[str]) -> None:
    """theory keys are curve labels 'col=value,...' over the `allowed` columns ('' matches every curve)."""
    for key in cfg.theory:
        for item in filter(None, (s.strip() for s in str(key).split(","))):
            col, eq, _ = item.partition("=")
            if not eq or not col.strip():
                fail("theory", f"key {key!r}: a curve label reads column=value[,column=value] (e.g. adapter.depth=2)")
            if col.strip() not in allowed:
                fail("theory", f"key {key!r} names {col.strip()}, which labels no curve (the curves are labelled by "
                               f"{', '.join(allowed) or 'no column'})")


def check_theory_numbers(cfg: ReportConfig, lows: dict[str, float]) -> None:
    """theory holds named numbers only: key -> the value it must exceed (or equal, for a ratio bound of 1)."""
    for key, v in cfg.theory.items():
        if key not in lows:
            fail("theory", f"unknown key {key!r} for report.kind {cfg.kind}; valid: {', '.join(lows)}")
        if not v >= lows[key] or (lows[key] == 0 and v == 0):
            fail("theory", f"{key} must be {'>' if lows[key] == 0 else '>='} {lows[key]:g} (got {v!r})")


# --------------------------------------------------------------------------------------------------- entries

class ReportKind:
    """A report kind: `Config` (its `report:` schema and checks) and the section function, `module:function`,
    called as section(runs, meta, outdir, *, figure_name, n_boot, seed) -> analysis.markdown.Section."""
    Config: ClassVar[type] = ReportConfig
    SECTION: ClassVar[str] = ""
    FIGURE: ClassVar[str] = ""          # the figure file: <sweep>_<FIGURE>.png

    @classmethod
    def section_function(cls) -> Callable:
        module, name = cls.SECTION.split(":")
        return getattr(importlib.import_module(module), name)

    @classmethod
    def section(cls, runs, meta, outdir, *, figure_name: str, n_boot: int, seed: int):
        return cls.section_function()(runs, meta, outdir, figure_name=figure_name, n_boot=n_boot, seed=seed)


@REPORTS.register("capacity")
class CapacityReport(ReportKind):
    """Capacity threshold m* vs report.x per curve, exponents against theory slopes (analysis/capacity_report.py)."""
    SECTION, FIGURE = "analysis.capacity_report:capacity_section", "capacity"

    @dataclass
    class Config(ReportConfig):
        kind: str = "capacity"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            if search_kind != "capacity":
                fail("kind", f"capacity reads the thresholds of a capacity search; needs search.kind: capacity "
                             f"(got {search_kind!r})")
            require_field(self, "x", "the problem-size axis, a config column such as task.n")
            check_theory_labels(self, [*self.panel_by, *self.curve_by])


@REPORTS.register("rank_curve")
class RankCurveReport(ReportKind):
    """Selected error vs LoRA rank with the theory rank (analysis/rank_report.py)."""
    SECTION, FIGURE = "analysis.rank_report:rank_section", "rank_curve"

    @dataclass
    class Config(ReportConfig):
        kind: str = "rank_curve"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            require_field(self, "x", "the rank axis, a config column such as adapter.rank")
            require_field(self, "y", "the plotted metric, such as test/mse")
            check_metric("y", self.y, columns)
            if self.select:
                check_metric("select", self.select, columns)


ICL_THEORY = {"error_ratio_within": 1.0, "param_ratio_below": 0.0, "loop_ratio_below": 0.0, "learn_ratio_below": 0.0}


@REPORTS.register("icl_curve")
class IclCurveReport(ReportKind):
    """Error vs in-context examples per model, claims against a control curve (analysis/icl_report.py)."""
    SECTION, FIGURE = "analysis.icl_report:icl_section", "icl_curve"

    @dataclass
    class Config(ReportConfig):
        kind: str = "icl_curve"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            if self.select:            # the control curve's label, e.g. model.name=transformer
                items = [s.strip() for s in self.select.split(",") if s.strip()]
                for item in items:
                    col, eq, val = item.partition("=")
                    if not eq or not col.strip() or not val.strip():
                        fail("select", f"the control curve reads column=value[,column=value], e.g. "
                                       f"model.name=transformer (got {self.select!r})")
                    if col.strip() not in self.curve_by:
                        curves = ", ".join(self.curve_by) or "empty"
                        fail("select", f"{col.strip()} is not in report.curve_by ({curves}): the control label "
                                       "would match no curve")
            if self.theory and not self.select:
                fail("theory", "its bounds decide the claims against a control curve: set report.select "
                               "(e.g. model.name=transformer)")
            check_theory_numbers(self, ICL_THEORY)


@REPORTS.register("accuracy_table")
class AccuracyTableReport(ReportKind):
    """Final accuracy per panel, curve and x, best vs worst and the published ordering (analysis/accuracy_report.py)."""
    SECTION, FIGURE = "analysis.accuracy_report:accuracy_section", "accuracy"

    @dataclass
    class Config(ReportConfig):
        kind: str = "accuracy_table"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            if self.y:                 # empty: val/acc
                check_metric("y", self.y, columns)
            check_theory_labels(self, [*self.panel_by, *self.curve_by])


@REPORTS.register("retrieval")
class RetrievalReport(ReportKind):
    """Accuracy by context length x gold position, context capacity vs model size (analysis/retrieval_report.py)."""
    SECTION, FIGURE = "analysis.retrieval_report:retrieval_section", "retrieval"

    @dataclass
    class Config(ReportConfig):
        kind: str = "retrieval"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            require_field(self, "x", "the context-length axis, a config column such as task.n_dicts")
            if self.select:            # empty: acc/mean>=0.9
                check_rule("select", self.select, columns)
            require_field(self, "curve_by", "the model-size column, last (e.g. [model.n_embd]): the context "
                                            "capacity is fitted against it")
            check_theory_labels(self, [*self.panel_by, *self.curve_by[:-1]])


@REPORTS.register("batch_selection")
class BatchSelectionReport(ReportKind):
    """Steps and compute to each rule per batch-selection strategy against shuffled SGD (analysis/batch_report.py)."""
    SECTION, FIGURE = "analysis.batch_report:batch_section", "batch_selection"

    @dataclass
    class Config(ReportConfig):
        kind: str = "batch_selection"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            if "train.batch_selection" not in columns:
                fail("kind", "batch_selection compares the values of train.batch_selection, which is not a config "
                             "column of this sweep")
            if self.y:                 # empty: the rules' metric
                check_metric("y", self.y, columns)
            if self.select:            # empty: opt/gap<=0.001
                rules = [check_rule("select", part, columns) for part in self.select.split(";") if part.strip()]
                if not rules:
                    fail("select", f"no rule in {self.select!r}")
                if len({m for m, _, _ in rules}) > 1 or len({op in ("<=", "<") for _, op, _ in rules}) > 1:
                    fail("select", f"the rules must share one metric and one direction (got {self.select!r})")


@REPORTS.register("needles")
class NeedlesReport(ReportKind):
    """Retrieval by gold position before and after fine-tuning, retention cost (analysis/needles_report.py)."""
    SECTION, FIGURE = "analysis.needles_report:needles_section", "needles"

    @dataclass
    class Config(ReportConfig):
        kind: str = "needles"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            check_theory_numbers(self, {"retain_tol": 0.0})


@REPORTS.register("dual_modes")
class DualModesReport(ReportKind):
    """The model's early ascent where the Bayes predictor has one, against a control (analysis/dual_modes_report.py)."""
    SECTION, FIGURE = "analysis.dual_modes_report:dual_modes_section", "dual_modes"

    @dataclass
    class Config(ReportConfig):
        kind: str = "dual_modes"


LORA_Y = "test/mse_rel"                                   # analysis.lora_threshold.Y
LORA_NEEDS = ("model.width", "model.depth", "task.target_depth", "seed")


@REPORTS.register("lora_threshold")
class LoraThresholdReport(ReportKind):
    """Gradient-LoRA rank thresholds against R*, the Eckart-Young bound (analysis/lora_report.py)."""
    SECTION, FIGURE = "analysis.lora_report:lora_threshold_section", "lora_threshold"

    @dataclass
    class Config(ReportConfig):
        kind: str = "lora_threshold"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            if not self.x and "adapter.rank" not in columns:
                fail("x", "empty means adapter.rank, which is not a config column of this sweep")
            missing = [c for c in LORA_NEEDS if c not in columns]
            if missing:
                fail("kind", f"lora_threshold computes R* from {', '.join(LORA_NEEDS[:3])}; not config columns "
                             f"of this sweep: {', '.join(missing)}")
            if self.y not in ("", LORA_Y):
                fail("y", f"lora_threshold reads {LORA_Y} (leave it empty or set it to that) (got {self.y!r})")
            if self.select:
                check_metric("select", self.select, columns)
            check_theory_numbers(self, {"epsilon": 0.0})


@REPORTS.register("t2i_icl")
class T2iIclReport(ReportKind):
    """Text-to-image ICL analogue: accuracy vs k per arm, k / CoT / fine-tuning claims (analysis/t2i_report.py)."""
    SECTION, FIGURE = "analysis.t2i_report:t2i_section", "t2i_icl"

    @dataclass
    class Config(ReportConfig):
        kind: str = "t2i_icl"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            check_theory_numbers(self, {"k_low": 1.0})


@REPORTS.register("criterion_clustering")
class CriterionClusteringReport(ReportKind):
    """IC|TC analogue: clustering accuracy per criterion vs captioner width, ours against criterion-blind k-means
    (analysis/clustering_report.py)."""
    SECTION, FIGURE = "analysis.clustering_report:clustering_section", "criterion_clustering"

    @dataclass
    class Config(ReportConfig):
        kind: str = "criterion_clustering"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            if not self.x and "model.width" not in columns:
                fail("x", "empty means model.width (the captioner's capacity), which is not a config column of "
                          "this sweep")
            if self.theory:
                fail("theory", "criterion_clustering takes no theory values (its claims are against the baselines)")


@REPORTS.register("feature_retrieval")
class FeatureRetrievalReport(ReportKind):
    """Bi-encoder vs TF-IDF per query kind, batch-selection arms, distillation width keeping 95% of the teacher's
    MRR (analysis/feature_report.py)."""
    SECTION, FIGURE = "analysis.feature_report:feature_section", "feature_retrieval"

    @dataclass
    class Config(ReportConfig):
        kind: str = "feature_retrieval"

        def check(self, search_kind: str, columns: set[str]) -> None:
            super().check(search_kind, columns)
            for key, v in self.theory.items():
                if key != "keep":
                    fail("theory", f"unknown key {key!r} for report.kind feature_retrieval; valid: keep")
                if not 0 < v <= 1:
                    fail("theory", f"keep must be in (0, 1] (got {v!r})")
