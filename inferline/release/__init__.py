"""inferline.release: the owner of releases.

A release is one numbered, self-contained folder in a Triton model repository (``<repository>/<pipeline>/<N>``:
model.onnx, the spec snapshot, the fitted feature state, ``manifest.json``). This package holds the registry
(``registry``: which release is current, the history), resolution of a model reference to a release (``resolve``),
activation and switching of the release a Triton server serves (``switch``), and the onnxruntime session that
scores one in process (``runtime``). It imports ``inferline.core`` and ``inferline.features`` only; publishing
(export), serving, batch and the monitor build on it.
"""
