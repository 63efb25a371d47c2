"""The benchmark harness behind ``bench/run.py`` (see ``bench/README.md``).

    config.py      where things are, which CPU runs what, the sizes of a run (Plan)
    processes.py   child processes: pinning, logs, stopping, the loadgen.py command channel
    servers.py     hubbub and the references: start, pin, health, /metrics, CPU and RSS
    measure.py     /proc readings and the publish-and-count window (measure)
    profiling.py   py-spy samples of hubbub (--profile)
    scenarios/     one module per scenario or family, and the order they run in
    results.py     table rows, medians, out/results.md and out/results.json
    cli.py         the command line and the repetitions

The load generator processes themselves are ``bench/loadgen.py``.
"""
