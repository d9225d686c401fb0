"""Unconstrained feature models (REFERENCE.md section 2): manifolds, problems, solvers, tools."""
