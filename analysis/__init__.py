"""Thresholds, power-law fits, plots and the report of a sweep output directory.

Reads Parquet only (DESIGN.md §4) and imports none of ftcore, sweeps, ftkernels, torch or ray:
DataFrames in, figures and tables out.

    from analysis import write_report
    write_report("runs/ftc")        # -> runs/ftc/report/report.md (+ fits.json, PNGs)
"""
from analysis.load import CorruptPartError, read_curves, read_runs
from analysis.report import write_report

__all__ = ["write_report", "read_runs", "read_curves", "CorruptPartError"]
