"""inferline.core: what every stage shares, importing no stage.

Errors and exit codes (``errors``, ``command``), files written atomically and content hashes (``files``), processes
and ports (``processes``), HTTP calls and retry backoff (``http``), alerts and their sinks (``alerts``), and the
statistics the stages share: the drift references a training run fits and the monitor tests against
(``reference``), calibration (``calibration``) and the quantile sketch (``sketch``). ``make lint`` (import-linter)
fails when a module here imports a stage.
"""
