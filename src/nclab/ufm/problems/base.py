"""The problem base class: what every UFM problem shares, whatever its loss.

:class:`UFMProblem` owns

* the per-point cache (Manopt's StoreDB): what depends only on the point (logits, softmax, the
  gradient) is computed once per point, keyed on the identity and ``_version`` of the point's
  tensors, so the many Hessian-vector products of one trust-region step do not recompute it;
* the evaluation counters (``counts``) and the evaluation API: ``cost``, ``egrad``,
  ``cost_and_egrad``, ``ehess``, ``rgrad``, ``rhess``;
* the accessors ``classifier``, ``features``, ``bias`` and the NC metrics of a point;
* where the problem computes: ``device`` and ``dtype`` (float64 on the CPU by default; float32 and
  CUDA on request, validated by :func:`resolve_device_dtype`).  Starts and closed-form points are
  drawn in float64 on the CPU and then moved, so a seed gives the same start on every device;
* the fused evaluation ``cost_and_egrad_into(x, out)``, which writes the gradient into given
  tensors (views of the solvers' one flat vector) instead of allocating a tuple;
* the symmetry of every UFM: f(W Q^T, H Q^T) = f(W, H) for orthogonal Q (REFERENCE.md section 2,
  "Symmetry").  Its orbit through x has the tangent space ``{(W A, H A, 0) : A skew}``; a problem
  names the factors of its point that rotate (``rotating_factors``) and any further flat
  directions (``flat_directions``, e.g. the common shift of a free CE bias), and
  ``symmetry_directions`` spans them all explicitly (d(d-1)/2 tensors: for small d and tests;
  :mod:`nclab.ufm.diagnostics` projects onto the orbit without forming them).

Subclasses implement ``_compute(x)`` (cost and the cached quantities), ``_egrad(x, state)``,
``_ehess(x, state, u)``, the closed forms (``optimum``, ``optimal_point``) and the structure checks
(``structure``).
"""

from __future__ import annotations

from typing import Any

import torch

from nclab.manifolds import Product

__all__ = ["UFMProblem", "resolve_device_dtype", "DTYPES"]

_DTYPE = torch.float64

#: The dtypes a UFM problem computes in (by name).
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """``(torch.device, torch.dtype)`` from user values: ``device`` None/"cpu"/"cuda"/"cuda:N"/a
    torch.device (None: the CPU), ``dtype`` None/"float64"/"float32"/torch.float64/torch.float32
    (None: float64).  A CUDA device is refused with a clear message where torch has none.

    >>> resolve_device_dtype(None, "float32")
    (device(type='cpu'), torch.float32)
    """
    if dtype is None:
        dt = _DTYPE
    elif isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        dt = DTYPES[dtype.removeprefix("torch.")]
    elif isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        dt = dtype
    else:
        raise ValueError(f"dtype must be float64 or float32 (a name or torch dtype), got {dtype!r}")
    if device is None:
        return torch.device("cpu"), dt
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={str(device)!r} was asked for, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}, cuda available: False); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev, dt


class UFMProblem:
    """Base class: a manifold, a cost with hand-derived gradient and Hessian-vector product, a
    per-point cache and evaluation counters.  Points and tangent vectors are tuples of ``dtype``
    tensors (``manifold`` is always a :class:`Product`).

    Subclasses implement ``_compute(x)`` (cost and the cached quantities), ``_egrad(x, state)``
    and ``_ehess(x, state, u)``."""

    loss: str = ""
    manifold: Product
    K: int
    n: int
    d: int
    N: int
    labels: torch.Tensor
    class_sizes: torch.Tensor

    #: Indices of the factors of a point that the O(d) symmetry rotates (x_i -> x_i Q^T).
    rotating_factors: tuple[int, ...] = (0, 1)

    #: where the problem computes (set by the subclasses through :meth:`_set_device`)
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = _DTYPE
    #: ``_egrad(x, state, out)`` writes into ``out`` (else the base class copies)
    _egrad_writes_into = False

    def __init__(self, device=None, dtype=None) -> None:
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.counts = {"cost": 0, "grad": 0, "hess": 0}
        self._cache: list[tuple[tuple, tuple, dict]] = []  # small LRU of (tensors, versions, state)

    # --- per-point cache ------------------------------------------------------------------------
    _CACHE_SIZE = 2

    def _state(self, x) -> dict:
        """The cached per-point state; recomputed when the tensors or their versions changed.

        The cache holds references to the tensors themselves, so an id cannot be reused by a new
        tensor while its entry exists."""
        if not isinstance(x, (tuple, list)) or len(x) != len(self.manifold.factors):
            raise ValueError(f"a point of this problem is a tuple of {len(self.manifold.factors)} tensors")
        versions = tuple(t._version for t in x)
        for i, (tensors, vers, state) in enumerate(self._cache):
            if vers == versions and all(a is b for a, b in zip(tensors, x)):
                if i:
                    self._cache.insert(0, self._cache.pop(i))
                return state
        state = self._compute(tuple(x))
        self._cache.insert(0, (tuple(x), versions, state))
        del self._cache[self._CACHE_SIZE :]
        return state

    def _grad_from_state(self, x, state):
        if "egrad" not in state:
            state["egrad"] = self._egrad(x, state)
        return state["egrad"]

    # --- public evaluation API ----------------------------------------------------------------
    def cost(self, x) -> float:
        self.counts["cost"] += 1
        return float(self._state(x)["cost"])

    def egrad(self, x) -> tuple:
        """Euclidean gradient (tuple shaped like x)."""
        self.counts["grad"] += 1
        return self._grad_from_state(x, self._state(x))

    def cost_and_egrad(self, x) -> tuple[float, tuple]:
        """Cost and Euclidean gradient in one call (counts one cost and one gradient)."""
        self.counts["cost"] += 1
        self.counts["grad"] += 1
        state = self._state(x)
        return float(state["cost"]), self._grad_from_state(x, state)

    def cost_and_egrad_into(self, x, out) -> float:
        """Cost, with the Euclidean gradient written into ``out`` (a tuple of tensors shaped like x,
        e.g. views of one flat vector); counts one cost and one gradient.  The per-point cache
        keeps ``out`` as the point's gradient: do not modify it afterwards."""
        self.counts["cost"] += 1
        self.counts["grad"] += 1
        state = self._state(x)
        if "egrad" in state:
            for o, g in zip(out, state["egrad"]):
                o.copy_(g)
        elif self._egrad_writes_into:
            self._egrad(x, state, out)
            state["egrad"] = tuple(out)
        else:
            for o, g in zip(out, self._grad_from_state(x, state)):
                o.copy_(g)
        return float(state["cost"])

    def place(self, x) -> tuple:
        """A point or tangent vector (tuple) on this problem's device and dtype (no copy when
        it is there already)."""
        return tuple(torch.as_tensor(t).to(device=self.device, dtype=self.dtype) for t in x)

    def ehess(self, x, u) -> tuple:
        """Euclidean Hessian-vector product D^2 f(x)[u]."""
        self.counts["hess"] += 1
        return self._ehess(x, self._state(x), u)

    def rgrad(self, x) -> tuple:
        """Riemannian gradient ``manifold.egrad2rgrad(x, egrad(x))``."""
        return self.manifold.egrad2rgrad(x, self.egrad(x))

    def rhess(self, x, u) -> tuple:
        """Riemannian Hessian-vector product ``manifold.ehess2rhess(x, egrad, ehess[u], u)``
        (u is assumed tangent; counts one Hessian, the gradient comes from the cache)."""
        self.counts["hess"] += 1
        state = self._state(x)
        g = self._grad_from_state(x, state)
        return self.manifold.ehess2rhess(x, g, self._ehess(x, state, u), u)

    def reset_counts(self) -> None:
        for k in self.counts:
            self.counts[k] = 0

    # --- closed forms and structure -----------------------------------------------------------
    @property
    def optimum(self) -> float | None:  # pragma: no cover - overridden
        return None

    def optimal_point(self, seed: int | None = None):  # pragma: no cover - overridden
        return None

    def random_start(self, seed: int) -> tuple:  # pragma: no cover - overridden
        raise NotImplementedError

    def structure(self, x) -> dict[str, float | None]:
        """How far x is from the global minimiser's structure (REFERENCE.md section 2): a dict of
        relative errors, 0 at a global minimiser; the keys depend on the problem (see each
        subclass).  Entries that do not apply are absent; a problem without a closed form gives
        {}."""
        return {}

    def classifier(self, x) -> torch.Tensor:
        return x[0]

    def features(self, x) -> torch.Tensor:
        return x[1]

    def bias(self, x) -> torch.Tensor | None:
        return x[2] if len(x) > 2 else None

    # --- symmetry -------------------------------------------------------------------------------
    def flat_directions(self, x) -> list[tuple]:
        """Symmetry directions beyond the rotation orbit (tuples shaped like x); none by default."""
        return []

    def symmetry_directions(self, x) -> list[tuple]:
        """Tangent directions of the symmetry orbit through x (zero-curvature directions of every
        critical point), formed explicitly: ``(W A, H A, 0)`` for the skew basis matrices
        A = E_ab - E_ba (a < b), the derivative of f(W Q^T, H Q^T) = f(W, H) at Q = I (only the
        ``rotating_factors`` move), then :meth:`flat_directions`.  d(d-1)/2 full-size tensors:
        :mod:`nclab.ufm.diagnostics` deflates the orbit without them."""
        rot = self.rotating_factors
        out = []
        for a in range(self.d):  # d(d-1)/2 directions, each two column operations
            for c in range(a + 1, self.d):
                dirs = []
                for i, M in enumerate(x):
                    D = torch.zeros_like(M)
                    if i in rot:
                        D[:, a] = -M[:, c]
                        D[:, c] = M[:, a]
                    dirs.append(D)
                out.append(tuple(dirs))
        return out + self.flat_directions(x)

    # --- reporting ------------------------------------------------------------------------------
    def metrics(self, x) -> dict[str, float | None]:
        """Neural-collapse metrics (REFERENCE.md section 3) of (features, labels, classifier, bias),
        nc4 included: ``nclab.metrics.compute_metrics(...).as_dict()``."""
        from nclab.metrics import compute_metrics  # lazy: the metrics module is independent

        b = self.bias(x)
        F = self.features(x).detach()
        return compute_metrics(
            F, self.labels.to(F.device), self.classifier(x).detach(), None if b is None else b.detach()
        ).as_dict()

    def _where(self) -> dict[str, str]:
        """``device``/``dtype`` for :meth:`describe`, only where they are not the defaults (CPU,
        float64), so that results and files of default problems keep their keys."""
        out = {}
        if self.device.type != "cpu":
            out["device"] = str(self.device)
        if self.dtype != _DTYPE:
            out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out

    def describe(self) -> dict[str, Any]:  # pragma: no cover - overridden
        return {"loss": self.loss}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "loss")
        return f"{type(self).__name__}({opts})"
