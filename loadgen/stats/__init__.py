"""Facts and exact statistics: what associations report and how a run counts it.

- :mod:`.facts`: the facts (``Started``, ``Finished``, ``Message``, ``Ended``) and the ``Sink`` protocol.
- :mod:`.cells`: :class:`~.cells.Cell`, the one accounting type (counters and an HDR histogram).
- :mod:`.sink`: :class:`~.sink.StatsSink` counts facts into cells, one second at a time.
- :mod:`.run`: :class:`~.run.RunStats`, a run's totals and per-second series, built from the seconds.
- :mod:`.live`: rolls the sink every second and applies the seconds here or ships them to the master.
- :mod:`.progress`: the headless run's progress lines, read from the run's RunStats.
- :mod:`.thresholds`: pass/fail verdicts judged on a :class:`~.run.RunStats`.
"""
