"""`python benchmarks/metrics.py [options]`: runs :mod:`nclab.benchmarks.metrics` (the benchmark ships with the
package, so `python -m nclab.benchmarks.metrics` does the same from an installed nclab)."""

from nclab.benchmarks.metrics import main

if __name__ == "__main__":
    main()
