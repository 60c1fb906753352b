"""One thread for every library a benchmark loads, unless the environment already says otherwise.

Imported first by the scripts in bench/ (their own folder is on ``sys.path``), before NumPy,
numba, torch or JAX load: on a shared 2-core machine a second BLAS thread waits on a busy core,
and process CPU time counts every thread's work. XLA sizes its thread pool from ``NPROC``, else
from the CPUs the process may use; ``intra_op_parallelism_threads=1``, often given in
``XLA_FLAGS``, is not an XLA flag, and XLA ignores the flags after it.
"""

import os

SETTINGS = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NPROC": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
}

for variable, value in SETTINGS.items():
    os.environ.setdefault(variable, value)
