"""`python benchmarks/ufm.py [options]`: runs :mod:`nclab.benchmarks.ufm` (the benchmark ships with the
package, so `python -m nclab.benchmarks.ufm` does the same from an installed nclab)."""

from nclab.benchmarks.ufm import main

if __name__ == "__main__":
    main()
