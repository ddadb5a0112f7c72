"""inferline.core: what every stage shares, importing no stage.

Errors and exit codes (``errors``, ``command``), options written once (``options``: a dataclass field is its
command-line flag), files written atomically and content hashes (``files``), processes and ports (``processes``:
free ports, readiness waits, stopping a process group), HTTP calls with one retry policy (``http``), alerts and
their sinks (``alerts``), the admin and monitor keys (``secrets``), the stages' lazy ``__init__`` loader (``lazy``),
and the statistics the stages share: the drift references a training run fits and the monitor tests against
(``reference``), calibration (``calibration``) and the latency sketch (``sketch``). ``make lint`` (import-linter's
layers contract) fails when a module here imports a stage.
"""
