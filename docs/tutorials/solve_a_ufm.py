"""Solve the cross-entropy unconstrained feature model and compare it with its closed form.

Run from the repository root:  PYTHONPATH=src python docs/tutorials/solve_a_ufm.py
"""

# The suite (tests/test_docs.py) runs this script and checks that its output matches each line
# below (a regular expression), so the page shows exactly what the code prints.
# expect: closed form f\* = 0\.\d+ +\(by hand\) +0\.\d+ +\(nclab\)
# expect: L-BFGS: converged after \d+ iterations \(relative gradient norm <= gtol\)
# expect: relative gap [0-9.e+-]+ \(below 1e-9\)
# expect: rows of W: equal norms and the simplex-ETF Gram .*: yes
# expect: features collapsed onto their classifiers .*: yes
# expect: the same through nclab\.ufm\.run\.solve: status 'optimal'

import math

import torch

from nclab.ufm.optim import lbfgs
from nclab.ufm.problems import make_problem
from nclab.ufm.run import solve

# 1. The problem (Zhu et al. 2021; REFERENCE.md section 2): K classes, n samples per class,
#    features of dimension d, weight decays lw (classifier), lh (features), lb (bias).
K, n, d = 10, 20, 16
lw, lh = 5e-3, 5e-3
p = make_problem("ce", K=K, n=n, d=d, lw=lw, lh=lh)

# 2. The closed form, by hand: with beta = sqrt(n lw lh) < 1/K the optimal margin is
#    m* = log(1/beta - (K-1)) and f* = log(1 + (K-1) e^{-m*}) + (K-1) beta m*.
beta = math.sqrt(n * lw * lh)
m_star = math.log(1 / beta - (K - 1))
f_star = math.log1p((K - 1) * math.exp(-m_star)) + (K - 1) * beta * m_star
print(f"closed form f* = {f_star:.12f} (by hand)  {p.optimum:.12f} (nclab)")
assert abs(f_star - p.optimum) <= 1e-14 * f_star

# 3. Solve from a random start with L-BFGS (relative gradient tolerance 1e-10).
x, log = lbfgs(p, p.random_start(seed=0), gtol=1e-10)
print(f"L-BFGS: converged after {log.n_iter} iterations ({log.stop_reason})")
assert log.converged
gap = (p.cost(x) - f_star) / f_star
print(f"relative gap {gap:.1e} (below 1e-9)")
assert abs(gap) < 1e-9

# 4. The minimiser has the structure the theorem predicts.  x = (W, H, b): W is K x d, H is N x d
#    with samples ordered class by class.
W, H = x[0], x[1]
norms = W.norm(dim=1)
Wn = W / norms[:, None]
etf_gram = K / (K - 1) * (torch.eye(K, dtype=W.dtype) - 1 / K)  # unit rows, cosines -1/(K-1)
etf_error = max(float((Wn @ Wn.T - etf_gram).abs().max()), float(norms.max() / norms.min() - 1))
print(f"rows of W: equal norms and the simplex-ETF Gram (largest error {etf_error:.1e}): "
      f"{'yes' if etf_error < 1e-6 else 'no'}")
assert etf_error < 1e-6
# |w_k|^2 = m* (K-1)/K sqrt(n lh/lw)
assert abs(float(norms[0] ** 2) / (m_star * (K - 1) / K * math.sqrt(n * lh / lw)) - 1) < 1e-6
# h_{k,i} = sqrt(lw/(n lh)) w_k for every sample i of class k
labels = torch.arange(K).repeat_interleave(n)
predicted_H = math.sqrt(lw / (n * lh)) * W[labels]
feature_error = float((H - predicted_H).norm() / H.norm())
print(f"features collapsed onto their classifiers (relative error {feature_error:.1e}): "
      f"{'yes' if feature_error < 1e-6 else 'no'}")
assert feature_error < 1e-6
print(f"nc1 at the solution: {p.metrics(x)['nc1']:.1e}")

# 5. The same in one call, with every check of the closed form in a JSON-ready dict.
r = solve("ce", "lbfgs", seed=0, K=K, n=n, d=d, lw=lw, lh=lh)
print(f"the same through nclab.ufm.run.solve: status {r['status']!r}, relative gap {r['relative_gap']:.1e}")
assert r["status"] == "optimal"
