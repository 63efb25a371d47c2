"""The hubbub benchmark: hubbub against a Node.js ``ws`` and a uWebSockets reference, in one run.

    python bench/run.py [--quick] [--scenarios a,b,c,d,e,f,g,h,i] [--repeat 3] [--profile]

The server under test runs pinned to CPU 0; the load generators (``bench/loadgen.py``, several
processes) and this harness run pinned to CPU 1. Server CPU time is read from
``/proc/<pid>/stat`` (utime + stime, all threads), memory from ``/proc/<pid>/status`` (VmRSS).
Every figure is the median of ``--repeat`` runs, each on a freshly started server, and each
hubbub figure is also given as a ratio to the references measured in the same invocation.

Results: ``bench/out/results.json`` (every run), ``bench/out/results.md`` (the table) and, for a
run that is not ``--quick``, ``bench/RESULTS.md``. The harness lives in ``bench/harness/``; see
``bench/README.md``.
"""

from __future__ import annotations

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
