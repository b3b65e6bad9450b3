"""The Ray layer and the sweep library (DESIGN.md §2), and its Python API (sweeps/api.py):

    import sweeps
    result = sweeps.run("sweeps/ftc_capacity.yaml" or a dict, overrides=["seeds=2"], out="results/ftc")
    result.runs, result.curves, result.fits          # pandas DataFrames
    sweeps.load("results/ftc")                       # the same, from a sweep directory or URI
    sweeps.SweepError                                # a user mistake: the one line ftsweep prints

`import sweeps` stays light (no Ray, torch or pandas): these names load sweeps.api on first use (PEP 562).
"""
__all__ = ["run", "load", "SweepError", "SweepResult"]


def __getattr__(name: str):
    if name in __all__:
        from sweeps import api
        return getattr(api, name)
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
