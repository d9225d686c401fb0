"""Classify critical points of the cross-entropy UFM: a global minimiser and two strict saddles.

Run from the repository root:  PYTHONPATH=src python docs/tutorials/classify_a_critical_point.py
"""

# The suite (tests/test_docs.py) runs this script and checks that its output matches each line
# below (a regular expression), so the page shows exactly what the code prints.
# expect: origin +strict_saddle +lambda_min = -\d\.\d+e-\d+ +\(theory -\d\.\d+e-\d+\)
# expect: lowdim:2 +strict_saddle +certificate fails
# expect: solution +global_minimiser +certificate holds
# expect: without deflation the minimiser is only 'inconclusive'
# expect: escaped from the saddle to the global minimiser: status 'optimal'

import math

from nclab.ufm.landscape import classify, escape, lowdim_point, origin
from nclab.ufm.optim import lbfgs
from nclab.ufm.problems import make_problem

# The CE UFM (REFERENCE.md section 2) with d = K: every critical point is a global minimiser or a
# strict saddle (Zhu et al. 2021 for d > K, Gu & Shen 2024 for d = K).
K, n, d = 4, 3, 4
lw = lh = 5e-3
p = make_problem("ce", K=K, n=n, d=d, lw=lw, lh=lh)

# 1. The origin W = H = 0 (with its optimal bias) is critical.  REFERENCE.md gives its smallest
#    Hessian eigenvalue, (lw+lh)/2 - sqrt(((lw-lh)/2)^2 + sigma^2) with sigma = 1/(K sqrt(n)):
#    negative exactly when beta = sqrt(n lw lh) < 1/K.
sigma = 1 / (K * math.sqrt(n))
theory = (lw + lh) / 2 - math.sqrt(((lw - lh) / 2) ** 2 + sigma**2)
c0 = classify(p, origin(p))
print(f"origin     {c0.kind:<17} lambda_min = {c0.lambda_min:.6e}  (theory {theory:.6e})")
assert c0.kind == "strict_saddle" and abs(c0.lambda_min - theory) < 1e-8 * abs(theory)

# 2. The minimiser of the same problem in dimension 2, padded with zeros, is critical in d = 4 but
#    not a minimiser: Zhu et al.'s certificate sigma_1(grad_Z L) <= sqrt(lw lh) fails, and the
#    Hessian has a negative eigenvalue whose direction decreases f as lambda t^2 / 2 predicts.
x2 = lowdim_point(p, 2)
c2 = classify(p, x2)
print(f"lowdim:2   {c2.kind:<17} certificate {'holds' if c2.certificate['holds'] else 'fails'}, "
      f"lambda_min = {c2.lambda_min:.3e}, decrease confirmed: {c2.decrease['confirmed']}")
assert c2.kind == "strict_saddle" and not c2.certificate["holds"] and c2.lambda_min < 0

# 3. A solver's end point: certified global (and no negative curvature beyond the symmetry orbit).
x, log = lbfgs(p, p.random_start(seed=0), gtol=1e-10)
c = classify(p, x)
print(f"solution   {c.kind:<17} certificate {'holds' if c.certificate['holds'] else 'fails'}, "
      f"relative gap {c.relative_gap:.1e}")
assert c.kind == "global_minimiser" and c.certificate["holds"]

# 4. Why the symmetry orbit must be deflated: f(W Q^T, Q H) = f(W, H) for every orthogonal Q, so
#    the Hessian has d(d-1)/2 zero eigenvalues at every critical point; left in, they make a
#    minimiser indistinguishable from a degenerate point.
c_raw = classify(p, x, deflate=False)
print(f"without deflation the minimiser is only {c_raw.kind!r}: lambda_min = {c_raw.lambda_min:.1e}")
assert c_raw.kind == "inconclusive"

# 5. Escape from the saddle along its negative-curvature direction, then solve.
x_escaped, result = escape(p, x2, c2)
print(f"escaped from the saddle to the global minimiser: status {result['status']!r}, "
      f"relative gap {result['relative_gap']:.1e}")
assert result["status"] == "optimal"
