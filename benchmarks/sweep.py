"""`python benchmarks/sweep.py [options]`: runs :mod:`nclab.benchmarks.sweep` (the benchmark ships with the
package, so `python -m nclab.benchmarks.sweep` does the same from an installed nclab)."""

from nclab.benchmarks.sweep import main

if __name__ == "__main__":
    main()
