"""`nclab reproduce`: every claim of the papers nclab implements, checked, with a report.

One module per paper (``zhu2021``, ``yaras2022``, ``gushen2024``, ``lu2022``), each exposing
``TARGET`` (:class:`nclab.reproduce.claims.Target`); :mod:`.claims` is the shared vocabulary.
This package is an application layer (like :mod:`nclab.cli`): it writes figures and reports.
"""
