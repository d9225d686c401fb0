"""Compatibility shim: the manifolds now live in :mod:`nclab.manifolds` (shared with the networks).

This module only re-exports them; it will be removed once every caller imports the new path.

>>> import nclab.manifolds
>>> from nclab.ufm.manifolds import Oblique
>>> Oblique is nclab.manifolds.Oblique
True
"""

from nclab.manifolds import Euclidean, Manifold, Oblique, Product, Sphere

__all__ = ["Manifold", "Euclidean", "Oblique", "Sphere", "Product"]
