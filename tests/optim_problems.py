"""Two small problems of the tests' own that follow the UFMProblem interface, with oracles computed
another way: a convex quadratic on a product of Euclidean factors (minimiser by a linear solve) and
the Rayleigh quotient on the sphere (smallest eigenvalue and eigenvector by eigh)."""

from __future__ import annotations

import torch

from nclab.manifolds import Euclidean, Product, Sphere


class _OwnProblem:
    def __init__(self):
        self.counts = {"cost": 0, "grad": 0, "hess": 0}

    def cost(self, x):
        self.counts["cost"] += 1
        return self._f(x)

    def egrad(self, x):
        self.counts["grad"] += 1
        return self._g(x)

    def cost_and_egrad(self, x):
        return self.cost(x), self.egrad(x)

    def rgrad(self, x):
        return self.manifold.egrad2rgrad(x, self.egrad(x))

    def rhess(self, x, u):
        self.counts["hess"] += 1
        return self.manifold.ehess2rhess(x, self._g(x), self._h(x, u), u)

    def metrics(self, x):
        return {"norm": float(sum(float((t * t).sum()) for t in x))}


class Quadratic(_OwnProblem):
    """f(X, y) = 1/2 v^T A v - c^T v, v = (vec X, y), X 3 x 2, y in R^4; A SPD, eigenvalues in [0.5, 5]."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.manifold = Product(Euclidean((3, 2)), Euclidean((4,)))
        Q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
        self.A = Q @ torch.diag(torch.linspace(0.5, 5.0, 10, dtype=torch.float64)) @ Q.T
        self.c = torch.randn(10, generator=g, dtype=torch.float64)
        v = torch.linalg.solve(self.A, self.c)
        self.optimum = float(-0.5 * self.c @ v)
        self.minimiser = v

    def _vec(self, x):
        return torch.cat([x[0].reshape(-1), x[1]])

    def _split(self, v):
        return (v[:6].reshape(3, 2), v[6:])

    def _f(self, x):
        v = self._vec(x)
        return float(0.5 * v @ self.A @ v - self.c @ v)

    def _g(self, x):
        return self._split(self.A @ self._vec(x) - self.c)

    def _h(self, x, u):
        return self._split(self.A @ self._vec(u))

    def random_start(self, seed):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64))


class Rayleigh(_OwnProblem):
    """f(x) = x^T A x on the unit sphere S^{d-1}: minimum = smallest eigenvalue of A (eigenvalues in [1, 4])."""

    def __init__(self, d=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.manifold = Product(Sphere(d))
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        self.A = Q @ torch.diag(torch.linspace(1.0, 4.0, d, dtype=torch.float64)) @ Q.T
        evals, evecs = torch.linalg.eigh(self.A)
        self.optimum, self.minimiser = float(evals[0]), evecs[:, 0]

    def _f(self, x):
        return float(x[0] @ self.A @ x[0])

    def _g(self, x):
        return (2 * self.A @ x[0],)

    def _h(self, x, u):
        return (2 * self.A @ u[0],)

    def random_start(self, seed):
        return self.manifold.random_point(torch.Generator().manual_seed(seed))
