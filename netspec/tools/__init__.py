"""After-the-fact tools over nets, runs and searches: summary, FLOPs, timing, plots, drawing,
reports and the JSON Schema. The engine (``netspec.net``, ``netspec.solvers``) never imports
this package."""
