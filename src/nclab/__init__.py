"""nclab: the science of neural collapse.

Modules, one per idea:
  geometry     simplex ETF, orthogonal frames, frame potential, Welch bound, distances to an ETF
  manifolds    Euclidean, Oblique/Sphere, Product (shared by the solvers and the normalized head)
  metrics      exact one-pass, mergeable, distributed neural-collapse statistics (NC1-NC4)
  ufm          unconstrained feature models: problems, optim (solvers), diagnostics, landscape, run
  nets         heads (fixed ETF, normalized, learned), backbones, data, training
  track        NC metrics of any nn.Module (forward hook); integrations: Lightning, Hugging Face
  sweep        many UFM / landscape jobs on a process pool or Ray, Parquet results, phase diagrams
  reproduce    every claim of the papers checked, with a Markdown + HTML report (application layer)
  io, distributed, _validation   files and atomic writes; the torch.distributed device decision;
               the boundary checks
  cli          the `nclab` command, figures and demos (the only layer that prints or plots)
  benchmarks   the benchmarks, shipped with the package
"""

__version__ = "0.1.0"
