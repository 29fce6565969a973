"""loadgen on Locust's runners: :mod:`.run` (a run in every mode, and its end), :mod:`.environment`
(run options, endpoints, the Locust Environment), :mod:`.drive` (headless and web driving) and
:mod:`.workers` (worker processes and the master's wait for them)."""
