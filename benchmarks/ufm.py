"""`python benchmarks/ufm.py [options]`: runs :mod:`nclab.benchmarks.ufm` (the benchmark ships with the
package, so `python -m nclab.benchmarks.ufm` does the same from an installed nclab).

numpy's BLAS (used by the pymanopt baseline of case P) is held to one thread, as torch is in the
small cases: set before numpy loads.  torch's own BLAS (MKL) is governed by torch.set_num_threads."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from nclab.benchmarks.ufm import main  # noqa: E402

if __name__ == "__main__":
    main()
