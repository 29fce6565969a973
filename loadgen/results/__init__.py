"""What a finished run is and leaves behind: :mod:`.summary` (its outcome, the console summary and
``summary.json``'s data), :mod:`.files` (``results/<run-id>/`` and the files in it), :mod:`.markdown`
(``summary.md``), :mod:`.junit` (JUnit XML files) and :mod:`.run_junit` (a run's JUnit test cases)."""
