"""Classifier heads: a fixed simplex-ETF classifier, a normalized (cosine) classifier, a learned one.

Every head maps penultimate features ``h`` (B x d) to logits (B x K) and speaks one vocabulary:

* ``classifier_weight()`` -> (K, d) detached tensor and ``classifier_bias()`` -> (K,) tensor or None,
  defined so that for every head

      logits = metric_features(h) @ classifier_weight().T + classifier_bias()

  holds exactly (the bias term only when there is one).  The neural-collapse metrics (nc3, nc4,
  bias_collapse, REFERENCE.md section 3) therefore see the classifier the network really uses.
* ``metric_features(h)`` -> the features the classifier sees: ``h`` itself, or ``h/|h|`` for
  :class:`NormalizedHead`.

Heads
-----
:class:`LearnedHead`
    ``W h + b`` with W (K x d) and b trainable (an ``nn.Linear``-like layer).
:class:`ETFHead`
    ``W h (+ b)`` with W a **fixed simplex ETF** (REFERENCE.md section 1; Zhu et al. 2021, "A
    geometric analysis of neural collapse with unconstrained features").  W is a registered buffer:
    it is saved in ``state_dict``, moves with ``.to()``, and is never returned by ``.parameters()``,
    so no optimizer updates it and it receives no gradient.  Removes K*d parameters from training.
:class:`NormalizedHead`
    ``tau <h/|h|, w_k>`` with unit rows w_k (W on the oblique manifold, the product of K spheres)
    and temperature ``tau`` (Yaras et al. 2022, "Neural collapse with normalized features: a
    geometric analysis over the Riemannian manifold").  See its docstring for the Riemannian update
    that the training loop must use.

Example
-------
>>> import torch
>>> from nclab.nets.heads import make_head
>>> head = make_head("etf", d=10, K=10, seed=0)
>>> [name for name, _ in head.named_parameters()]
[]
>>> head(torch.randn(4, 10)).shape
torch.Size([4, 10])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nclab.geometry import ones_preserving_rotation, simplex_etf
from nclab.manifolds import Oblique

__all__ = [
    "HEADS",
    "LearnedHead",
    "ETFHead",
    "NormalizedHead",
    "make_head",
    "project_heads_",
    "attach_riemannian_hooks",
]

#: Head kinds accepted by :func:`make_head` (and by ``nclab train --head``).
HEADS = ("learned", "etf", "normalized")


def _check_dim(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class _Head(nn.Module):
    """Common vocabulary of the heads (see the module docstring)."""

    d: int
    K: int

    def classifier_weight(self) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def classifier_bias(self) -> Tensor | None:
        bias = getattr(self, "bias", None)
        return None if bias is None else bias.detach()

    def metric_features(self, h: Tensor) -> Tensor:
        return h

    def extra_repr(self) -> str:
        return f"d={self.d}, K={self.K}, bias={getattr(self, 'bias', None) is not None}"


class LearnedHead(_Head):
    """Ordinary trainable linear classifier ``logits = h W^T + b`` (W: K x d, b: K).

    Initialised like ``torch.nn.Linear`` (uniform in +-1/sqrt(d)), so a network with this head has
    exactly the parameter count of the usual ``nn.Linear(d, K)`` classifier: K*d (+ K with bias).

    Parameters
    ----------
    d : feature dimension (>= 1).
    K : number of classes (>= 2).
    bias : learn a bias b (default True).
    """

    def __init__(self, d: int, K: int, bias: bool = True, *, device=None, dtype=None) -> None:
        super().__init__()
        self.d = _check_dim("d", d, 1)
        self.K = _check_dim("K", K, 2)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(K, d, **factory))
        self.bias = nn.Parameter(torch.empty(K, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.d)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self.weight, self.bias)

    def classifier_weight(self) -> Tensor:
        return self.weight.detach()


class ETFHead(_Head):
    """Fixed simplex-ETF classifier ``logits = h W^T (+ b)``; W is a buffer, never trained.

    ``W = nclab.geometry.simplex_etf(K, d)``: K unit rows with pairwise inner product -1/(K-1),
    i.e. ``W W^T = K/(K-1) (I - J/K)`` (REFERENCE.md section 1); ``seed=None`` keeps the unrotated
    frame (the first K coordinate axes centred and scaled, as in Zhu et al.'s code), a seed
    rotates it by :func:`nclab.geometry.ones_preserving_rotation` (Haar-random on the complement
    of the all-ones vector).  Penultimate features after a ReLU are non-negative; a general random
    rotation can leave a class that no non-negative feature reaches (training then stalls below
    100% accuracy), while a frame whose rows sum to zero keeps every class reachable
    (``h = 1 + eps w_k``): true for d >= K, not guaranteed for d = K-1.  Zhu et al. (2021) show that fixing the classifier to a
    simplex ETF with d = K loses no accuracy while removing K*d trainable parameters.

    W is registered with ``register_buffer(..., persistent=True)``: it is in ``state_dict`` (so a
    checkpoint records exactly which frame was used), follows ``.to(device/dtype)``, is not in
    ``.parameters()`` (so an optimizer built from ``model.parameters()`` never sees it, weight decay
    never shrinks it, and DDP does not all-reduce a gradient for it) and has ``requires_grad=False``
    (after ``backward()`` its ``.grad`` stays None).  The optional bias is a trainable Parameter.

    The frame is computed in float64 and stored in ``dtype`` (default: torch's default dtype).
    Build the head with ``dtype=torch.float64`` for a Gram exact to ~1e-15; converting a float32
    head with ``.double()`` keeps float32 accuracy (~1e-7).

    Parameters
    ----------
    d : feature dimension; a simplex ETF of K vectors needs d >= K-1 (d = K is the usual choice).
    K : number of classes (>= 2).
    bias : add a trainable bias (default False, as in Zhu et al.'s fixed-classifier experiments).
    seed : seed of the random rotation (None: no rotation).

    Raises
    ------
    ValueError
        if d < K-1 (the message says which d are possible).
    """

    weight: Tensor

    def __init__(
        self, d: int, K: int, bias: bool = False, seed: int | None = None, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.K = _check_dim("K", K, 2)
        self.d = _check_dim("d", d, 1)
        if d < K - 1:
            raise ValueError(
                f"a fixed simplex-ETF classifier with K={K} classes needs feature dimension "
                f"d >= K-1 = {K - 1}, got d={d}; use d >= {K - 1} (d = K = {K} is the usual choice), "
                "or a 'learned' or 'normalized' head, which work for any d"
            )
        self.seed = seed
        dtype = torch.get_default_dtype() if dtype is None else dtype
        frame = simplex_etf(K, d)
        if seed is not None:
            frame = frame @ ones_preserving_rotation(d, seed)
        frame = frame.to(device=device, dtype=dtype)
        self.register_buffer("weight", frame, persistent=True)
        self.bias = nn.Parameter(torch.zeros(K, device=device, dtype=dtype)) if bias else None

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self.weight, self.bias)

    def classifier_weight(self) -> Tensor:
        return self.weight.detach()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", seed={self.seed}, fixed=True"


class NormalizedHead(_Head):
    """Normalized (cosine) classifier ``logits_k = tau <h/|h|, w_k>`` with unit rows w_k.

    Features are normalized inside the head (``metric_features(h) = h/|h|``, so the penultimate
    features live on the sphere S^{d-1}) and W lives on the oblique manifold OB(K, d) (every row on
    S^{d-1}); ``tau > 0`` is the temperature (Yaras et al. 2022; the normalized UFM of REFERENCE.md
    section 2).  The rows are initialised as normalized Gaussian vectors drawn from ``seed``.

    The forward pass uses ``W / |W|`` (row-wise), so the logits are always ``tau`` times the cosine
    similarities and, at a unit-row W, autograd's gradient is already the Riemannian gradient
    ``(I - w_k w_k^T) egrad_k``.  What keeps W itself on the manifold is the training loop:

    **Documented update (Riemannian SGD with projection retraction).**  For each step::

        loss.backward()
        head.project_grad_()          # grad_k <- grad_k - <grad_k, w_k> w_k  (tangent projection)
        optimizer.step()              # any torch optimizer (SGD with momentum / weight decay, Adam)
        head.project_(optimizer)      # w_k <- w_k / |w_k| (retraction); the momentum buffer of W,
                                      # if any, is projected onto the new tangent space (transport)

    ``attach_riemannian_hooks(optimizer, model)`` installs exactly these two calls as optimizer
    step pre-/post-hooks, so a loop that only calls ``optimizer.step()`` (DDP included: every rank
    holds the same W and does the same deterministic projection) needs no other change.  Weight
    decay on W acts along w_k, which the retraction removes; to keep the step purely Riemannian put
    W in a parameter group with ``weight_decay=0`` (``model.head.weight``).

    Parameters
    ----------
    d : feature dimension (>= 1; the ETF optimum needs d >= K-1).
    K : number of classes (>= 2).
    tau : temperature (> 0).
    seed : seed of the initial W (None: torch's global generator).
    """

    def __init__(
        self, d: int, K: int, tau: float = 1.0, seed: int | None = None, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.d = _check_dim("d", d, 1)
        self.K = _check_dim("K", K, 2)
        tau = float(tau)
        if not math.isfinite(tau) or tau <= 0:
            raise ValueError(f"tau (temperature) must be a finite number > 0, got {tau!r}")
        self.tau = tau
        self.seed = seed
        gen = None
        if seed is not None:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(int(seed))
        w = torch.randn(K, d, generator=gen, dtype=torch.float64)
        w = w / w.norm(dim=1, keepdim=True)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.weight = nn.Parameter(w.to(device=device, dtype=dtype))
        self.bias = None
        #: W's manifold, the product of K unit spheres in R^d: its projection, retraction and
        #: transport are the Riemannian update (:meth:`project_grad_`, :meth:`project_`).
        self.manifold = Oblique(K, d)

    def _unit_weight(self) -> Tensor:
        return F.normalize(self.weight, dim=1)

    def metric_features(self, h: Tensor) -> Tensor:
        return F.normalize(h, dim=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.tau * F.linear(self.metric_features(h), self._unit_weight())

    def classifier_weight(self) -> Tensor:
        """``tau * W/|W|`` (K x d): logits = metric_features(h) @ classifier_weight().T.
        The unit-row W itself is ``head.weight`` (unit after :meth:`project_`)."""
        return self.tau * self._unit_weight().detach()

    def classifier_bias(self) -> None:
        return None

    @torch.no_grad()
    def project_grad_(self) -> None:
        """Project ``weight.grad`` row-wise onto the tangent space of the oblique manifold at W:
        ``g_k <- g_k - <g_k, w_k> w_k`` (w_k taken unit; ``Oblique.proj``).  No-op when there is
        no gradient."""
        g = self.weight.grad
        if g is None:
            return
        g.copy_(self.manifold.proj(F.normalize(self.weight, dim=1), g))

    @torch.no_grad()
    def project_(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Retract W onto the oblique manifold (``w_k <- w_k/|w_k|``, the metric projection).

        The optimizer's step has already moved W off the manifold to ``W + step``; the retraction
        ``Oblique.retr`` at that point with a zero tangent normalises its rows, which is the
        projection retraction of the step.  With ``optimizer``, W's momentum-like state (SGD's
        ``momentum_buffer``) is projected onto the tangent space at the new W: vector transport by
        projection (Absil et al. 2008), ``Oblique.transport``'s rule, written as ``Oblique.proj``
        at the new point since the old one is gone."""
        W = self.weight
        W.copy_(self.manifold.retr(W, torch.zeros_like(W)))
        if optimizer is not None:
            state = optimizer.state.get(W, {})
            buf = state.get("momentum_buffer")
            if isinstance(buf, Tensor) and buf.shape == W.shape:
                buf.copy_(self.manifold.proj(W, buf))

    def extra_repr(self) -> str:
        return f"d={self.d}, K={self.K}, tau={self.tau}, seed={self.seed}"


def make_head(
    kind: str, d: int, K: int, tau: float = 1.0, seed: int | None = 0, bias: bool | None = None
) -> nn.Module:
    """Build a head by name.

    Parameters
    ----------
    kind : one of ``HEADS`` = ("learned", "etf", "normalized").
    d, K : feature dimension and number of classes.
    tau : temperature of the normalized head (ignored by the others).
    seed : ETF rotation / normalized-head initialisation seed (the learned head uses torch's
        global generator, as ``nn.Linear`` does).
    bias : None takes each head's default (learned: True, etf: False); the normalized head has no
        bias and ``bias=True`` raises ValueError.
    """
    if not isinstance(kind, str) or kind.lower() not in HEADS:
        raise ValueError(f"unknown head {kind!r}; allowed: {', '.join(HEADS)}")
    kind = kind.lower()
    if kind == "learned":
        return LearnedHead(d, K, bias=True if bias is None else bool(bias))
    if kind == "etf":
        return ETFHead(d, K, bias=False if bias is None else bool(bias), seed=seed)
    if bias:
        raise ValueError("the normalized head has no bias (logits are tau * cosines); use bias=None or False")
    return NormalizedHead(d, K, tau=tau, seed=seed)


def project_heads_(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Call :meth:`NormalizedHead.project_` on every normalized head inside ``model`` (a Network,
    a DDP wrapper, anything with ``.modules()``).  Returns how many heads were projected."""
    n = 0
    for m in model.modules():
        if isinstance(m, NormalizedHead):
            m.project_(optimizer)
            n += 1
    return n


def attach_riemannian_hooks(optimizer: torch.optim.Optimizer, model: nn.Module) -> list:
    """Make ``optimizer.step()`` the documented Riemannian update for every NormalizedHead in model.

    Installs a step pre-hook (tangent projection of W's gradient) and a post-hook (retraction of W,
    transport of its momentum).  Returns the hook handles (``handle.remove()`` detaches them); an
    empty list when the model has no normalized head.
    """
    heads = [m for m in model.modules() if isinstance(m, NormalizedHead)]
    if not heads:
        return []

    def pre(opt, args, kwargs):
        for h in heads:
            h.project_grad_()

    def post(opt, args, kwargs):
        for h in heads:
            h.project_(opt)

    return [optimizer.register_step_pre_hook(pre), optimizer.register_step_post_hook(post)]
