"""Benchmarks that print ratios measured in one run (these machines are noisy): part of the
application layer (they print tables), shipped with the package so that ``nclab bench`` and
``python -m nclab.benchmarks.<name>`` work from an installed nclab.

* :mod:`nclab.benchmarks.metrics` -- one pass of the NC statistics vs the float32 GEMM floor and a
  float64 two-pass;
* :mod:`nclab.benchmarks.ufm` -- UFM solvers: time to a 1e-8 relative gap vs the papers' baselines;
* :mod:`nclab.benchmarks.landscape` -- classifying a strict saddle of a 10^6-variable CE UFM: HVPs,
  seconds, peak memory, the ratio to one gradient;
* :mod:`nclab.benchmarks.heads` -- parameters, training-state memory and step time of the heads.

The checkout's ``benchmarks/`` folder keeps thin wrappers and the recorded results.
"""
