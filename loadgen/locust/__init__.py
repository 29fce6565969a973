"""loadgen on Locust: :mod:`.users` (one user = one device; the Locust sink), :mod:`.shape`, :mod:`.webui`
(the exact-stats tab), :mod:`.health` (event-loop lag, workers missing), :mod:`.limits` (open files and
ports per process), :mod:`.runclock`, :mod:`.run` (a run in every mode, and its end), :mod:`.environment`
(run options, endpoints, the Locust Environment), :mod:`.drive` (headless and web driving) and
:mod:`.workers` (worker processes and the master's wait for them)."""
