"""nc4 by a second pass with the final class means: :class:`NC4Counter`.

nc4 (Papyan, Han & Donoho 2020; REFERENCE.md section 3) is the fraction of samples whose classifier
decision ``argmax_k (w_k . h + b_k)`` differs from the nearest class mean ``argmin_k |h - mu_k|``.
It needs the final class means, so it cannot be accumulated in the same pass as
:class:`nclab.metrics.NCStats`: the counter is built from those means and the classifier, then
fed the same features again.  Counts are integers kept on the device of the features (no host
synchronisation per block); they are read once, in :meth:`NC4Counter.compute`.  Counters built
from the same means and classifier merge (:meth:`NC4Counter.merge`) and all-reduce
(:meth:`NC4Counter.sync`) exactly.

>>> import torch
>>> from nclab.geometry import simplex_etf
>>> M = simplex_etf(3, 4)
>>> y = torch.arange(30) % 3
>>> h = M[y] + 0.01 * torch.randn(30, 4, dtype=torch.float64)
>>> NC4Counter(M, M).update(h, y).compute()
0.0
"""

from __future__ import annotations

import torch

from nclab._validation import as_tensor, check_choice, check_features, check_head, check_labels
from nclab.distributed import collective_device
from nclab.metrics import functional as F
from nclab.metrics.moments import gemm_dtype

__all__ = ["NC4Counter"]

#: The integer counts of an NC4Counter, in the order of its tally vector.
_TALLY = ("mismatches", "total", "correct_classifier", "correct_ncc", "labelled")


class NC4Counter:
    """Second-pass accumulator of nc4: the fraction of samples whose classifier decision
    ``argmax_k (w_k . h + b_k)`` differs from the nearest class mean ``argmin_k |h - mu_k|``
    (Papyan et al. 2020's NC4, REFERENCE.md section 3).

    Features and means are centred on the mean of the class means c before any product, so a large
    common offset does not cancel in ``|h|^2 + |mu|^2 - 2 h.mu``; each rule is one fused
    multiply-add per block: ``(W c + b) + (h - c) W^T`` and ``|mu_k - c|^2 - 2 (h - c) (mu_k - c)^T``,
    written into one reused buffer of :data:`BLOCK_ELEMENTS` logits (4 MiB of float32), so the
    argmax reads them from the cache: the pass costs about its two GEMMs (N d 2K multiplications;
    K = 10,000, d = 256, N = 100,000 on 2 cores: 7.1 s against 6.4 s for the bare products in
    ``benchmarks/metrics_results.txt``).
    Classes without a sample (zero rows of ``class_means`` when ``counts`` is given) are excluded
    from the nearest-mean rule.  Labels, when given, also yield both accuracies.

    Parameters
    ----------
    class_means : (K, d) final class means (e.g. ``NCStats.class_means``).
    classifier : (K, d) last-layer weights W; bias : (K,) optional (b = 0 if None).
    counts : (K,) samples per class, optional; classes with 0 are left out of the nearest-mean rule.
    gemm_dtype : precision of the products (default: float64 for float64 features, else float32).

    Methods: :meth:`update`, :meth:`compute`, :meth:`reset`, :meth:`merge`, :meth:`sync`.
    """

    #: rows x classes of one product block (elements): 4 MiB of float32 logits, so that the argmax
    #: after each product reads them from the cache.  The block is written into one buffer reused
    #: by every block and batch (a fresh 67 MB output per block cost more in page faults than the
    #: argmax: K = 50,000, d = 64, 10,000 rows 2.3 s with fresh outputs, 1.2 s reused).
    BLOCK_ELEMENTS = 1 << 20
    #: fewest rows per block (thin blocks leave the GEMM inefficient at very large K).
    MIN_BLOCK_ROWS = 256
    #: rows x d of features centred in float64 at once (32 MiB), in whole blocks.
    CENTRE_ELEMENTS = 1 << 22

    @classmethod
    def block_rows(cls, num_classes: int) -> int:
        """Rows per product block for K classes: ``BLOCK_ELEMENTS / K``, at least
        ``MIN_BLOCK_ROWS`` (memory O(K x rows))."""
        return max(cls.MIN_BLOCK_ROWS, cls.BLOCK_ELEMENTS // int(num_classes))

    def __init__(self, class_means, classifier, bias=None, *, counts=None, gemm_dtype=None):
        mu = check_features(class_means, "class_means").to(torch.float64)
        K, d = mu.shape
        W, b = check_head(classifier, bias, K, d, mu.device)
        present = torch.ones(K, dtype=torch.bool, device=mu.device)
        if counts is not None:
            present = as_tensor(counts, "counts").to(mu.device) > 0
        self.num_classes, self.dim = K, d
        self.gemm_dtype = check_choice("gemm_dtype", gemm_dtype, (None, torch.float32, torch.float64))
        self._head = (mu, W, b, present)  # what merge() compares
        self.center = mu[present].mean(0)
        Mc = mu - self.center
        sq = (Mc * Mc).sum(1)
        # float64 masters; per (dtype, device) copies are made on first use
        self._master = (W.T.contiguous(), -2.0 * Mc.T, W @ self.center + b,
                        torch.where(present, sq, torch.full_like(sq, float("inf"))))
        self._operands: dict = {}
        self._scratch: dict = {}  # (dtype, device) -> flat buffer of one product block
        self.reset()

    def reset(self) -> "NC4Counter":
        """Zero the counts (the means and the classifier stay)."""
        self._tally = torch.zeros(len(_TALLY), dtype=torch.int64, device=self._head[0].device)
        self._synced = False
        return self

    def _tally_on(self, device) -> torch.Tensor:
        if self._tally.device != device:
            self._tally = self._tally.to(device)
        return self._tally

    @torch.no_grad()
    def update(self, features, labels=None) -> "NC4Counter":
        """Count a batch: ``features`` (B, d) in any float dtype on any device, ``labels`` (B,)
        optional (for the accuracies).  No host synchronisation: the counts stay on the device."""
        if self._synced:
            raise ValueError("this counter was already synced; start a new NC4Counter")
        X = check_features(features, dim=self.dim)
        y = None if labels is None else check_labels(labels, X.shape[0], self.num_classes)
        if X.shape[0] == 0:
            return self
        gdt = self.gemm_dtype or gemm_dtype(X.dtype)
        key = (gdt, X.device)
        if key not in self._operands:
            self._operands[key] = tuple(t.to(X.device, gdt) for t in self._master)
        Wt, Mt2, cls_off, ncc_off = self._operands[key]
        center = self.center.to(X.device)
        tally = self._tally_on(X.device)
        K = self.num_classes
        rows = self.block_rows(K)
        scratch = self._scratch.get(key)
        need = min(rows, X.shape[0]) * K
        if scratch is None or scratch.numel() < need:
            scratch = self._scratch[key] = torch.empty(need, dtype=gdt, device=X.device)
        B = X.shape[0]
        pred = torch.empty(2, B, dtype=torch.int64, device=X.device)  # classifier, nearest mean
        chunk = max(rows, self.CENTRE_ELEMENTS // self.dim // rows * rows)
        for c0 in range(0, B, chunk):  # centred in chunks of whole blocks: fewer, larger operations
            Hc = (X[c0 : c0 + chunk].to(torch.float64) - center).to(gdt)  # centre before rounding
            for s in range(0, Hc.shape[0], rows):  # blocks bound memory and keep the logits in cache
                Hb, p = Hc[s : s + rows], pred[:, c0 + s : c0 + s + rows]
                out = scratch[: Hb.shape[0] * K].view(Hb.shape[0], K)
                torch.argmax(torch.addmm(cls_off, Hb, Wt, out=out), 1, out=p[0])  # w_k.h + b_k
                torch.argmin(torch.addmm(ncc_off, Hb, Mt2, out=out), 1, out=p[1])  # |h - mu_k|^2 - |h - c|^2
        # the counts once per batch (few small operations per block: they fight other processes)
        tally[0] += (pred[0] != pred[1]).sum()
        tally[1] += B
        if y is not None:
            tally[2:4] += (pred == y.to(X.device)).sum(1)
            tally[4] += B
        return self

    def merge(self, other: "NC4Counter") -> "NC4Counter":
        """Add the counts of another counter built from the same class means, classes present,
        classifier and bias (compared exactly).  Returns self."""
        if not isinstance(other, NC4Counter):
            raise ValueError(f"can only merge another NC4Counter, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge nc4 counts of {other.num_classes} classes into {self.num_classes}")
        if other.dim != self.dim:
            raise ValueError(f"cannot merge nc4 counts of dimension {other.dim} into dimension {self.dim}")
        dev = self._head[0].device
        for name, mine, theirs in zip(("class means", "classifier", "bias", "classes present (counts > 0)"),
                                      self._head, other._head):
            if not torch.equal(mine, theirs.to(dev)):
                raise ValueError(
                    f"cannot merge nc4 counts made with different {name}; "
                    "build every counter from the same (synced) class means and classifier"
                )
        self._tally += other._tally.to(self._tally.device)
        return self

    @torch.no_grad()
    def sync(self, group=None) -> "NC4Counter":
        """All-reduce the counts over ``group`` (in place; no-op without torch.distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        if self._synced:
            raise ValueError("this counter was already synced; syncing twice would double-count")
        dev = collective_device(group)
        t = self._tally.to(dev)
        dist.all_reduce(t, group=group)
        self._tally = t.cpu()
        self._synced = True
        return self

    def compute(self) -> float:
        """nc4 = mismatches / total (:func:`nclab.metrics.functional.nc4`)."""
        mismatches, total = self._tally[:2].tolist()  # the one host synchronisation
        return F.nc4(mismatches, total)

    @property
    def mismatches(self) -> int:
        return int(self._tally[0])

    @property
    def total(self) -> int:
        return int(self._tally[1])

    @property
    def correct_classifier(self) -> int:
        return int(self._tally[2])

    @property
    def correct_ncc(self) -> int:
        return int(self._tally[3])

    @property
    def labelled(self) -> int:
        return int(self._tally[4])

    @property
    def classifier_accuracy(self) -> float | None:
        """Fraction of labelled samples where ``argmax_k (w_k . h + b_k)`` is the label (None
        without labels)."""
        _, _, correct, _, labelled = self._tally.tolist()
        return None if labelled == 0 else correct / labelled

    @property
    def ncc_accuracy(self) -> float | None:
        """Fraction of labelled samples whose nearest class mean is the label's (None without
        labels)."""
        _, _, _, correct, labelled = self._tally.tolist()
        return None if labelled == 0 else correct / labelled
