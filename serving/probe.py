"""The supervisor's hang probe: one small, real inference per served pipeline, through Triton's loopback HTTP port.

A tritonserver that is alive but answers nothing (stopped, deadlocked, a stub stuck) still holds its process, so
the supervisor's exit watch never sees it. The probe asks each READY pipeline for a prediction of one row built from
the release's own contract (its spec snapshot, as serving loads it): every input the served model declares, with
the datatype and per-row shape of the contract, so the same probe works for any published pipeline (tabular,
tensor, classification, regression). The row is the contract's neutral value for each input: empty text (a null on
the wire), 0 for numbers and integers, zeros for tensors (a variable dimension of length 1). The served model
answers it like any row: scored, or with a per-row reason code in ``status``; either way the request went through
Triton's HTTP frontend, its scheduler and the model's Python-backend stub, and came back.

Any HTTP answer within the timeout counts as alive, a refusal included (a pipeline being switched answers 400 for a
moment: that is not a hang); only no answer (a timeout, a refused or reset connection) is a failure. A busy server is
not a hung one: a probe can wait behind a queue of slow requests (a large model on a CPU), so failures count toward
"hung" only while Triton finishes nothing at all (``completed_inferences``, read from its metrics port after each
failed probe, has not moved for ``probe_failures x probe_timeout`` seconds: ``serving.hang_watch``; a stopped server
does not answer its metrics port either). The probe's own inference, finished late, counts as progress too.

Fallback: a pipeline whose release has no spec snapshot (published before snapshots were kept) and whose pipeline
module cannot be imported has no contract to build a row from; its probe is Triton's readiness check of the model
(``GET /v2/models/<p>/ready``), which a stopped server does not answer either, but which does not reach the stub.
``Probe.inference`` says which one a pipeline gets.

Each probe is one row, counted by Triton like any inference (``nv_inference_count`` grows by one per probe; at the
default interval one a second per pipeline) and by ``inferline_server_probes_total`` at the supervisor.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from inferline.core.errors import UserError
from inferline.core.http import get_text, request
from inferline.features.spec import PipelineSpec
from inferline.release.registry import Registry, RegistryError

__all__ = ["Probe", "completed_inferences", "probe_body", "probe_for", "run_probe"]


@dataclass(frozen=True)
class Probe:
    """What the supervisor sends to check that ``pipeline`` is answered: an inference ``body`` (``inference``
    True), or, without a contract, a readiness check (``body`` None)."""

    pipeline: str
    body: bytes | None
    inference: bool
    why: str = ""  # why a pipeline has no inference probe

    def request(self, url: str) -> urllib.request.Request:
        if self.body is None:
            return urllib.request.Request(f"http://{url}/v2/models/{self.pipeline}/ready", method="GET")
        return urllib.request.Request(
            f"http://{url}/v2/models/{self.pipeline}/infer",
            data=self.body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )


def _zeros(count: int, datatype: str) -> list[Any]:
    if datatype == "BYTES":
        return [""] * count
    if datatype == "BOOL":
        return [False] * count
    if datatype.startswith(("FP", "BF")):
        return [0.0] * count
    return [0] * count


def probe_body(spec: PipelineSpec) -> bytes:
    """One row of ``spec``'s inputs as a KServe v2 JSON inference request: each input ``[1, 1]`` (tabular) or
    ``[1, *shape]`` (tensor; a variable dimension of length 1) with the contract's datatype; only ``status`` is
    asked back (the smallest answer)."""
    inputs = []
    for column in spec.input_columns:
        datatype = column.triton_dtype
        shape = [1, *(d if d > 0 else 1 for d in column.shape)] if column.kind == "tensor" else [1, 1]
        count = 1
        for d in shape:
            count *= d
        inputs.append({"name": column.name, "shape": shape, "datatype": datatype, "data": _zeros(count, datatype)})
    return json.dumps({"inputs": inputs, "outputs": [{"name": "status"}]}).encode()


def probe_for(repository: Path, pipeline: str, release: int | None) -> Probe:
    """The probe of ``pipeline`` served at ``release``: from the release's spec snapshot, else the pipeline module
    of that name, else a readiness check (``Probe.why`` says why)."""
    from inferline.features.spec import SpecError, load_pipeline, read_spec

    spec: PipelineSpec | None = None
    why = ""
    try:
        files = Registry(repository, pipeline).release_files(release)
        if "spec" in files:
            spec = read_spec(files["spec"])
        else:
            why = f"release {pipeline}:{release} has no spec snapshot"
    except (RegistryError, SpecError, OSError, UserError) as exc:
        why = f"release {pipeline}:{release}'s contract could not be read ({exc})"
    if spec is None:
        try:
            spec = load_pipeline(pipeline)
        except (SpecError, UserError, ImportError) as exc:
            return Probe(pipeline, None, False, f"{why}; no pipeline module either ({exc}): readiness check only")
    return Probe(pipeline, probe_body(spec), True)


def run_probe(url: str, probe: Probe, timeout_s: float) -> str | None:
    """Send ``probe`` to Triton at ``url`` (``host:port``, HTTP); None when it answered (any HTTP status) within
    ``timeout_s``, else what went wrong."""
    path, headers = ("infer", {"Content-Type": "application/json"}) if probe.body is not None else ("ready", {})
    try:
        request(f"http://{url}/v2/models/{probe.pipeline}/{path}", probe.body, headers=headers, timeout_s=timeout_s)
        return None
    except urllib.error.HTTPError as exc:  # an answer: the server is not hung
        exc.read()
        return None
    except OSError as exc:  # URLError, a timeout, a refused connection
        reason = getattr(exc, "reason", exc)
        return f"{type(reason).__name__}: {reason}"


COMPLETED = ("nv_inference_request_success", "nv_inference_request_failure")


def completed_inferences(metrics_url: str, timeout_s: float) -> float | None:
    """Inferences Triton has finished, successfully or not, over every model (``nv_inference_request_success`` +
    ``nv_inference_request_failure`` on its metrics endpoint ``metrics_url``, read with prometheus-client's parser);
    None when it does not answer or its exposition cannot be parsed."""
    try:
        text = get_text(metrics_url, timeout_s)
        families = list(text_string_to_metric_families(text))
    except (OSError, ValueError):
        return None
    # the parser names a counter's samples <family>_total (Triton's own lines carry no suffix)
    return sum(s.value for f in families if f.name in COMPLETED for s in f.samples if s.name == f"{f.name}_total")
