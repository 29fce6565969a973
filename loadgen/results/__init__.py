"""What a finished run is and leaves behind: :mod:`.summary` (its outcome, the console summary and
``summary.json``'s data) and :mod:`.files` (``results/<run-id>/`` and the files in it)."""
