"""``inferline serve apply`` and ``serve predict``: commands against a running server, found by its record in the
work directory (``serving.status.read_record``) or by ``--url``. ``apply`` switches it to the registry's current
release (``release.switch``); ``predict`` scores the rows of a JSON-lines or Parquet file with the typed client,
encoding them with the served release's own spec snapshot.

Apart from the command line so that ``serve`` parses and dispatches only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from inferline.core.errors import UserError, docs_pointer, user_message
from inferline.core.secrets import admin_key
from inferline.release.registry import choose_published
from inferline.serving.client import InferlineClient, InferlineError, Predictions
from inferline.serving.server import NoServer
from inferline.serving.status import read_record

if TYPE_CHECKING:
    from inferline.features.spec import PipelineSpec

__all__ = ["answers", "apply", "predict", "published_spec", "read_rows"]


def _server(args: argparse.Namespace, protocol: str) -> tuple[dict[str, Any], str]:
    """The server record in ``--workdir`` (empty where there is none) and the address to call: ``--url``, else the
    record's ``protocol`` address (``http`` or ``grpc``); ``NoServer`` when neither is there."""
    state = read_record(args.workdir) or {}
    url = args.url or state.get(protocol)
    if not url:
        raise NoServer(
            f"no server recorded in --workdir {args.workdir}; start one with `inferline serve up`, pass the work "
            "directory it was started with (--workdir), or its address with --url"
        )
    return state, str(url)


def apply(args: argparse.Namespace) -> int:
    """Serve the registry's current release on the running server (after `inferline export promote|rollback`)."""
    from inferline.release.registry import Registry, RegistryError
    from inferline.release.switch import ReleaseSwitchError, switch_release

    state, url = _server(args, "http")
    repository = Path(args.repository or state.get("repository") or "triton_models")
    pipeline = choose_published(repository, args.pipeline)
    target = Registry(repository, pipeline).current
    if target is None:
        raise UserError(
            f"pipeline {pipeline!r} has no current release in {repository}; promote one with `inferline export "
            f"promote N --pipeline {pipeline}` first"
        )
    try:
        result = switch_release(url, admin_key(args.workdir), repository, pipeline, target)
    except (ReleaseSwitchError, RegistryError) as exc:
        print(f"apply FAILED, the server keeps what it served: {user_message(exc)}")
        return 1
    print(json.dumps({"pipeline": pipeline, "from": result.from_version, "to": target, "steps": result.steps}))
    return 0


def predict(args: argparse.Namespace) -> int:
    state, url = _server(args, args.protocol)
    repository = (
        Path(args.repository) if args.repository else Path(state["repository"]) if state.get("repository") else None
    )
    if args.pipeline:
        pipeline = args.pipeline
    elif repository is not None:
        pipeline = choose_published(repository, None)
    else:
        raise UserError(
            f"which pipeline does {url} serve? No server record in --workdir {args.workdir} names its repository; "
            "pass --pipeline NAME (and --repository DIR, where its releases are)"
        )
    spec = published_spec(repository, pipeline)
    rows = read_rows(Path(args.file))
    try:
        endpoints = [u.strip() for u in url.split(",") if u.strip()]
        with InferlineClient(endpoints, args.protocol, pipeline=pipeline, spec=spec, timeout_s=args.timeout) as client:
            p = client.predict(rows)
    except InferlineError as exc:  # the server refused or did not answer
        hint = f"is the server up and serving {pipeline!r} at {url}? (`inferline serve status`, --url, --pipeline)"
        print(f"predict FAILED: {exc}; {hint} (docs: {docs_pointer(exc)})", file=sys.stderr)
        return 1
    for answer in answers(p, client.spec, rows):
        print(json.dumps(answer))
    return 0


def answers(p: Predictions, spec: PipelineSpec, rows: pd.DataFrame) -> list[dict[str, object]]:
    """What ``serve predict`` prints for each row: its id (where the spec has an id column), ``probabilities`` and
    ``predicted_class`` (a classifier) or ``prediction`` (regression), ``status`` and ``release``. A refused row
    (status other than ``ok``) answers null: what the model said about its stand-in values means nothing."""
    id_col = spec.id_column.name if spec.id_column else None
    out = []
    for i in range(len(p)):
        ok = p.status[i] == "ok"
        if p.prediction is not None:  # regression (classes=()): one value per row, no classes
            answer: dict[str, object] = {"prediction": round(float(p.prediction[i]), 6) if ok else None}
        else:
            answer = {  # a refused row's scores are of neutral features, not of the row: none is printed
                "probabilities": [round(float(x), 6) for x in p.probabilities[i]] if ok else None,
                "predicted_class": spec.classes[int(p.predicted_class[i])] if ok else None,
            }
        identity = {id_col: str(rows[id_col].iloc[i])} if id_col else {}
        out.append({**identity, **answer, "status": p.status[i], "release": p.release[i]})
    return out


def published_spec(repository: Path | None, pipeline: str) -> PipelineSpec:
    """The spec ``serve predict`` encodes rows with: the current release's own snapshot (``spec.json``), so any
    published pipeline is callable wherever its module lives (or is not installed at all); without a repository,
    or for a release published before snapshots, the pipeline module by name."""
    from inferline.features.spec import SpecError, load_pipeline, read_spec
    from inferline.release.registry import Registry

    if repository is not None:
        files = Registry(repository, pipeline).release_files()  # RegistryError (a UserError) names what is wrong
        if "spec" in files:
            return read_spec(files["spec"])
    try:
        return load_pipeline(pipeline)
    except SpecError as exc:
        raise UserError(
            f"{exc}. `serve predict` reads a published pipeline's spec from its release: pass --repository DIR (the "
            "model repository the server serves)"
        ) from exc


def read_rows(path: Path) -> pd.DataFrame:
    """The rows of a ``.jsonl`` (one JSON object a line) or ``.parquet`` file; at least one."""
    if path.suffix not in (".jsonl", ".parquet"):
        raise UserError(f"--file {str(path)!r} has suffix {path.suffix!r}; expected a .jsonl or a .parquet file")
    try:
        rows = pd.read_json(path, lines=True, dtype=False) if path.suffix == ".jsonl" else pd.read_parquet(path)
    except ValueError as exc:  # pandas' JSON reader and pyarrow's ArrowInvalid are ValueErrors
        kind = "JSON lines (one object a line)" if path.suffix == ".jsonl" else "Parquet"
        raise UserError(f"--file {str(path)!r} cannot be read as {kind}: {exc}; check the file") from exc
    if rows.empty:
        raise UserError(f"--file {str(path)!r} holds no rows; expected at least one row to score")
    return rows
