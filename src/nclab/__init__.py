"""nclab: the science of neural collapse.

Modules, one per idea:
  geometry  simplex ETF, orthogonal frames, frame potential, Welch bound, distances to an ETF
  metrics   exact one-pass, mergeable, distributed neural-collapse statistics (NC1-NC4)
  ufm       unconstrained feature models: manifolds, problems, solvers, derivative tools
  nets      heads (fixed ETF, normalized, learned), backbones, data, training
  cli       the `nclab` command (a thin layer over the functions above)
"""

__version__ = "0.1.0"
