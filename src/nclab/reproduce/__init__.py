"""`nclab reproduce`: every claim of the papers nclab implements, checked, with a report.

One module per paper (``zhu2021``, ``yaras2022``, ``gushen2024``, ``lu2022``), each exposing
``TARGET`` (:class:`nclab.reproduce.claims.Target`); :mod:`.claims` is the shared vocabulary,
:mod:`.runner` runs targets (a missing one is "not run", a crashing one "failed") and records the
provenance, :mod:`.report` writes report.md and the self-contained report.html.
This package is an application layer (like :mod:`nclab.cli`): it writes figures and reports.

Example
-------
>>> from nclab.reproduce.runner import reproduce
>>> result = reproduce("lu2022", "results/lu2022", scale="quick")   # doctest: +SKIP
>>> result["ok"], result["report"]["html"]                            # doctest: +SKIP
(True, 'results/lu2022/report.html')
"""
