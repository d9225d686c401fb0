"""`python -m nclab ...` (used by `torchrun -m nclab train ...`)."""

from nclab.cli import main

if __name__ == "__main__":
    main()
