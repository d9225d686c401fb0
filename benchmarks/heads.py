"""`python benchmarks/heads.py [options]`: runs :mod:`nclab.benchmarks.heads` (the benchmark ships with the
package, so `python -m nclab.benchmarks.heads` does the same from an installed nclab)."""

from nclab.benchmarks.heads import main

if __name__ == "__main__":
    main()
