"""Thresholds, power-law fits, plots and the report of a sweep output directory.

Reads Parquet only (DESIGN.md §4) and imports none of ftcore, sweeps, ftkernels, torch or ray:
DataFrames in, figures and tables out.

    from analysis import write_report
    write_report("runs/ftc")        # -> runs/ftc/report/report.md (+ fits.json, PNGs)
"""
__all__ = ["write_report", "read_runs", "read_curves", "CorruptPartError"]


def __getattr__(name: str):
    """Loaded on first use (PEP 562): the sweep spec loader imports analysis.report_kinds, which must not pull
    pandas, numpy or matplotlib in through this package."""
    if name == "write_report":
        from analysis.report import write_report
        return write_report
    if name in ("read_runs", "read_curves", "CorruptPartError"):
        import analysis.load
        return getattr(analysis.load, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
