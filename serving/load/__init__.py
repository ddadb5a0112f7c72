"""inferline serving load: a measured load against one served model, the library under ``inferline bench run
--pipeline``, ``bench tune`` and the publish speed gate (``export publish --gate-throughput``). It lives in the
serving layer, beside the client it shares the wire with, so that export may measure a release without importing
the benchmarks above it.

- ``payloads``: the requests, built once before any load from a pool of distinct rows of the pipeline's own data
  (``Payloads``, ``payloads_from_frame``, ``load_rows``, ``resolve_pipeline``);
- ``target``: where to send them, and Triton's own HTTP port for the statistics API (``Target``,
  ``resolve_target``);
- ``step``: one load level measured (``Step``, ``measure_step`` -> ``StepResult``; ``check_pool``);
- ``wrk`` and ``aio``: the two load generators, reporting one ``outcome.LoadOutcome`` each step;
- ``stats``: the server-side split of a step from Triton's statistics API.

The modules are imported by name (``from inferline.serving.load.step import measure_step``); the package itself
defines nothing.
"""
