"""inferline.release: the owner of releases.

A release is one numbered, self-contained folder in a Triton model repository (``<repository>/<pipeline>/<N>``:
model.onnx, the spec snapshot, the fitted feature state, its manifest). This package holds the typed manifest
(``manifest``), the registry (``registry``: which release is current, the history), resolution of a model
reference to a ``Release`` whose spec, state, compiled contract and manifest are one call each (``resolve``),
activation and switching of the release a Triton server serves (``switch``), and the onnxruntime session that
scores one in process (``runtime``). It imports ``inferline.core`` and ``inferline.features`` only; publishing
(export), serving, batch and the monitor build on it.
"""
