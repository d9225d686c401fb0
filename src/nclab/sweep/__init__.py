"""Sweeps: many independent solves or landscape checks over a grid of options and seeds.

The theory has phase transitions and regimes that one maps with many solves: collapse against
the zero solution across beta = sqrt(n lw lh) against 1/K, the temperature of the normalized UFM,
d from K-1 to 2K.  A sweep is a YAML config (a job kind, fixed options, a grid, seeds) expanded
into jobs; each job is one call of the library function its command uses; the rows land in a
Parquet table as jobs finish; a rerun resumes.  This package computes and writes files, it never
prints (``nclab sweep`` is the command line over it).

=============  ==============================================================================
``config``     :func:`load_config`: YAML -> validated jobs (a bad config fails before any job)
``jobs``       the job kinds, :func:`job_key` (stable hash of the canonical job), one job -> a row
``table``      Parquet part files written atomically, :func:`read_table` (one row per job)
``backends``   a local process pool, or Ray (a local instance or a cluster)
``run``        :func:`run_sweep`: resume, run, append, summarise
``grid``       :func:`aggregate`: a value on a grid of one or two options, the beta = 1/K boundary
=============  ==============================================================================

pyarrow, pyyaml and ray are optional (``pip install 'nclab[sweep]'``), imported when used.

Example
-------
>>> import tempfile
>>> from nclab.sweep import run_sweep, read_table
>>> out = tempfile.mkdtemp()
>>> s = run_sweep({"kind": "ufm solve", "options": {"K": 3, "n": 2}, "seeds": 2}, out, workers=1)
>>> s.done, read_table(out).num_rows
(2, 2)
"""

from nclab.sweep.config import SweepConfig, load_config, parse_config
from nclab.sweep.grid import aggregate
from nclab.sweep.jobs import KINDS, job_key, run_job
from nclab.sweep.run import SweepSummary, run_sweep
from nclab.sweep.table import read_table

__all__ = [
    "run_sweep",
    "SweepSummary",
    "load_config",
    "parse_config",
    "SweepConfig",
    "read_table",
    "aggregate",
    "job_key",
    "run_job",
    "KINDS",
]
