"""Run a tiny sweep from Python: the CE UFM on both sides of beta = 1/K, two seeds, a table.

    PYTHONPATH=src python docs/tutorials/run_a_sweep.py

16 L-BFGS solves on a process pool of 2 workers (a few seconds), written as Parquet to a temporary
folder, read back as one table, and aggregated over the seeds.
"""

# expect: ^16 jobs done, 0 failed
# expect: ^rerun: 0 jobs run, 16 kept
# expect: ^ 3 +0\.05 +0\.087 +0\.333 +0 +0\.580989
# expect: ^ 4 +0\.50 +0\.866 +0\.250 +1 +1\.386294
# expect: beta = 1/K at lambda = \[0\.1443, 0\.1925\]

import math
import tempfile

from nclab.sweep import aggregate, read_table, run_sweep

CONFIG = {
    "kind": "ufm solve",                       # each job is one nclab.ufm.run.solve call
    "options": {"loss": "ce", "n": 3, "d": 4},  # fixed for every job
    "grid": {"K": [3, 4], "lambda": [0.05, 0.1, 0.3, 0.5]},  # lambda sets lw = lh
    "seeds": 2,                                # seeds 0 and 1
}


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        summary = run_sweep(CONFIG, out, workers=2)
        print(f"{summary.done} jobs done, {summary.failed} failed, in {summary.seconds:.1f} s")

        again = run_sweep(CONFIG, out, workers=2)  # the same call again: every finished job is kept
        print(f"rerun: {again.ran} jobs run, {again.reused} kept")

        table = read_table(out)  # a pyarrow.Table, one row per job (table.to_pandas(): a DataFrame)
        print(f"\n{'K':>2} {'lambda':>6} {'beta':>6} {'1/K':>6} {'seed':>4} {'objective':>10} "
              f"{'nc2_etf_W':>10}  status")
        for r in sorted(table.to_pylist(), key=lambda r: (r["K"], r["lambda"], r["seed"])):
            print(f"{r['K']:>2} {r['lambda']:>6.2f} {r['beta']:>6.3f} {1 / r['K']:>6.3f} {r['seed']:>4} "
                  f"{r['objective']:>10.6f} {r['nc2_etf_W']:>10.2e}  {r['status']}")

        # the numbers behind a phase-diagram figure: mean over seeds, and where beta = 1/K falls
        grid = aggregate(table, "lambda", "objective", group="K")
        for K, line in grid["lines"].items():
            print(f"K={K}: mean objective {[round(v, 4) for v in line['center']]} (log K = {math.log(int(K)):.4f})")
        print("beta = 1/K at lambda =", [round(x, 4) for x in grid["boundary_x"]])


if __name__ == "__main__":  # the pool's workers import this file: keep the sweep out of their way
    main()
