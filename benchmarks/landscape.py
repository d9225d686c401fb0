"""`python benchmarks/landscape.py [options]`: runs :mod:`nclab.benchmarks.landscape` (the benchmark ships with
the package, so `python -m nclab.benchmarks.landscape` does the same from an installed nclab)."""

from nclab.benchmarks.landscape import main

if __name__ == "__main__":
    main()
