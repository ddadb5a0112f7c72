"""The batch job across hosts, run here: ``dask scheduler`` on one host and a ``dask worker`` on each of two more
(network namespaces with addresses of their own, ``tests/system/netns.py``), driven by ``run_job`` in the test's own
namespace over the bridge. One worker's link is cut mid-job (``ip link set ... down``) and the job still completes
exactly once. Skips cleanly where ``ip netns add`` is refused (the ``network`` fixture).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from inferline.batch import JobReport, run_job
from inferline.core.processes import die_with_parent
from inferline.features.pipelines import fraud

from .conftest import DaskCluster, Published, stop_processes, wait_until
from .netns import Host, Network
from .test_batch import (
    Gate,
    assert_exactly_once,
    commit_two_then_hold_both_workers,
    commits,
    config,
    input_ids,
    write_parquet,
)

DASK_PORT = 8786  # every host has ports of its own: Dask's default port on the scheduler's
# Given to the scheduler and the workers (their environment). Each worker heartbeats every 0.5 s (distributed's
# rate for up to 10 workers); the scheduler drops a worker it has not heard from for max(worker-ttl, 10 heartbeats)
# and checks every worker-ttl, so with 1s it drops the cut-off worker 5-6 s after the cut (default: 5 minutes).
# No work stealing: once both workers hold a partition at the gate no task moves between them, so what the
# cut-off worker holds is known when its link goes down. The connect and TCP timeouts (comm.timeouts.*) keep
# their defaults: nothing on the job's path connects to the cut-off worker or waits for its connection to break.
FAULT_SETTINGS = {
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "1s",
    "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING": "False",
}
# what a partition's commit record says about its output: the same in every attempt and every run of the job
OUTPUT_FIELDS = (
    "job",
    "partition",
    "input_sha256",
    "part",
    "sha256",
    "quarantine",
    "quarantine_sha256",
    "rows_in",
    "rows_out",
    "rows_quarantined",
    "reasons",
    "duplicates_sha256",
)
NEGATIVE_PER_FILE = 5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 files x 4,000 rows in row groups of 1,000 (12 partitions); the first rows of each file carry a negative
    amount, which the job quarantines."""
    root = tmp_path_factory.mktemp("multihost_batch_in")
    for i in range(3):
        frame = fraud.generate(4_000, seed=1900 + i)
        frame.loc[: NEGATIVE_PER_FILE - 1, "amount"] = -5.0
        write_parquet(root / f"tx-{i}.parquet", frame)
    return root


@dataclass
class Hosts:
    cluster: DaskCluster
    scheduler: Host
    workers: list[Host]
    logs: Path

    def worker_on(self, host: Host, addresses: list[str]) -> str:
        """The address (``tcp://IP:PORT``) of the worker on ``host`` among the scheduler's ``addresses``."""
        return next(a for a in addresses if a.startswith(f"tcp://{host.address}:"))

    def wait_ready(self) -> None:
        """The scheduler answers and both workers have registered with it; else fail with the logs."""
        try:
            self.cluster.wait_for_workers(2, timeout_s=120)
        except (OSError, TimeoutError) as exc:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log")))
            raise AssertionError(f"the Dask cluster on the test network never became ready: {exc}\n{logs}") from exc


@contextmanager
def dask_on_hosts(network: Network, logs: Path) -> Iterator[Hosts]:
    """``dask scheduler`` on a host of its own and a single-threaded ``dask worker`` without a nanny on each of two
    more, with FAULT_SETTINGS; started, not yet waited for (``Hosts.wait_ready``). On exit every link is up again
    and every process stopped.

    No nanny: the cut-off worker is one process that stays alive, nothing restarts it elsewhere, and the
    scheduler removes it as soon as its heartbeats are overdue (with a nanny it would first ask that nanny, on the
    same cut-off host, to restart it, and wait out the connection timeouts)."""
    logs.mkdir(parents=True, exist_ok=True)
    scheduler, *workers = (network.add_host() for _ in range(3))
    address = f"tcp://{scheduler.address}:{DASK_PORT}"
    env = {**os.environ, **FAULT_SETTINGS}
    dask = [sys.executable, "-m", "dask"]
    argv = [*dask, "scheduler", "--host", scheduler.address, "--port", str(DASK_PORT)]
    processes = [
        scheduler.popen(
            [*argv, "--dashboard-address", "127.0.0.1:0"],
            log=logs / "scheduler.log",
            env=env,
            preexec_fn=die_with_parent,
        )
    ]
    for i, host in enumerate(workers):
        argv = [*dask, "worker", address, "--host", host.address, "--nthreads", "1", "--nworkers", "1"]
        argv += ["--no-nanny", "--name", f"w{i}", "--death-timeout", "60"]
        processes.append(host.popen(argv, log=logs / f"worker{i}.log", env=env, preexec_fn=die_with_parent))
    try:
        yield Hosts(DaskCluster(address, processes), scheduler, workers, logs)
    finally:
        for host in workers:
            host.restore()
        stop_processes(processes)  # the workers first, then the scheduler


def partitions_held(client: Any, worker: str) -> set[str]:
    """The batch partitions ``worker`` holds to run (executing, or queued on it for its one thread), by name, read
    from the worker itself once the scheduler's view agrees (no message between them still in flight)."""

    def own(dask_worker: Any) -> list[str]:  # runs on the worker: nested, so cloudpickle ships it by value
        to_run = ("executing", "ready", "constrained")
        tasks = dask_worker.state.tasks.items()
        return [str(k) for k, ts in tasks if str(k).startswith("inferline-batch-") and ts.state in to_run]

    seen: set[str] = set()

    def agreed() -> bool:
        seen.clear()
        seen.update(client.run(own, workers=[worker])[worker])
        return seen == {str(k) for k in client.processing(workers=[worker]).get(worker, [])}

    wait_until(agreed, 30, f"the worker {worker} and the scheduler agreeing on what it holds")
    return {"-".join(key.rsplit("-", 2)[-2:]) for key in seen}  # ...-part-00003 -> part-00003


def commit_record(out: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((out / "_commits" / f"{name}.json").read_text()))


def committed_by(out: Path, name: str) -> str | None:
    """The worker (``host:pid``) whose attempt wrote the commit record of ``name`` now; None while there is none."""
    path = out / "_commits" / f"{name}.json"
    return str(json.loads(path.read_text())["worker"]) if path.exists() else None


def scheduler_workers(client: Any) -> set[str]:
    return set(client.scheduler_info(n_workers=-1)["workers"])


def test_worker_cut_off_mid_job_completes_exactly_once(
    network: Network, published: Published, inputs: Path, tmp_path: Path
) -> None:
    """The job's 12 partitions run on two workers on hosts of their own. Mid-job, an event of the test's (the
    job's gate, as in test_batch: 2 partitions committed, each worker holding one at the gate, 10 uncommitted),
    the link of worker B's host goes down.

    B is cut off, not dead. The test lets B's held partitions through the gate: B scores and writes them (part
    files and commit records) but cannot report them, so the job never accepts them. The scheduler drops B when
    its heartbeats are 5 s overdue (FAULT_SETTINGS), the gate opens, and worker A runs everything left, B's
    partitions again. The job completes exactly once: it accepts one commit per partition; one part file and one
    commit record per partition, every row predicted or quarantined once (rows in = rows out + rows quarantined);
    the retries on A rewrote B's files with identical bytes; and the rows and checksums of every partition equal
    a run of the same job on one worker process. (Dask also reruns on A the partitions B had finished and reported
    before the cut, whose results were lost with B; those rewrite identical bytes too, and the job, which had
    accepted them once, does not accept them again.)"""
    reference_out, out, gate = tmp_path / "single", tmp_path / "out", Gate(tmp_path / "gate")
    with dask_on_hosts(network, tmp_path / "dask") as hosts:
        # while the hosts start: the same job on one worker process (a LocalCluster of one), the expected output
        reference = run_job(config(inputs, reference_out, published, None, workers=1))
        assert reference.reconciled and reference.partitions == 12 and not reference.failed
        hosts.wait_ready()
        pids = hosts.cluster.worker_pids()
        survivor = hosts.worker_on(hosts.workers[0], list(pids))
        victim = hosts.worker_on(hosts.workers[1], list(pids))
        survivor_id, victim_id = (f"{socket.gethostname()}:{pids[w]}" for w in (survivor, victim))

        received: list[dict[str, Any]] = []  # the commits the job accepted, in order (run_job's on_commit)
        outcome: dict[str, object] = {}

        def drive() -> None:
            try:
                job = config(inputs, out, published, hosts.cluster, gate=gate.folder)
                outcome["report"] = run_job(job, on_commit=received.append)
            except Exception as exc:  # noqa: BLE001 - re-raised by the assertion below
                outcome["error"] = exc

        from distributed import Client

        driver = threading.Thread(target=drive, daemon=True)  # daemon: a hung job must not hang the session
        with Client(hosts.cluster.address, timeout="30s") as client:
            driver.start()
            try:
                commit_two_then_hold_both_workers(gate, out, driver.is_alive)
                early = commits(out)
                assert len(early) == 2
                wait_until(lambda: len(received) == 2, 60, "the job accepting the first two commits")
                held = partitions_held(client, victim)
                assert held & gate.held() and not held & early, (held, gate.held(), early)

                hosts.workers[1].cut()  # mid-job: 2 of 12 committed, both workers holding one at the gate
                for name in sorted(held):  # B, cut off but alive, runs what it holds; A stays at the gate
                    gate.let_through(name)
                by_victim = f"the cut-off worker writing {sorted(held)}"
                wait_until(lambda: all(committed_by(out, n) == victim_id for n in held), 60, by_victim)
                written_by_victim = {name: commit_record(out, name) for name in held}
                wait_until(lambda: victim not in scheduler_workers(client), 60, "the scheduler dropping worker B")
                assert scheduler_workers(client) == {survivor}
                events = [event for _, event in client.get_events("scheduler")]
                assert any(e.get("action") == "worker-ttl-timed-out" and victim in e["workers"] for e in events)
                assert commits(out) == early | held  # A, held at the gate, committed nothing meanwhile
                assert len(received) == 2, "the job accepted a commit the cut-off worker could not report"
            finally:
                gate.open()
                driver.join(120)
    assert not driver.is_alive(), "the job did not finish within 120 s of the gate opening"
    assert "error" not in outcome, outcome
    report = outcome["report"]
    assert isinstance(report, JobReport)
    assert report.status == "complete" and not report.failed
    assert report.partitions == report.partitions_committed == 12 and report.partitions_resumed == 0
    assert report.cluster["scheduler"] == hosts.cluster.address and report.cluster["workers"] == 2
    assert set(report.workers_used) <= {survivor_id, victim_id}

    # the job accepted exactly one commit per partition, B's from their retries on A
    assert Counter(r["partition"] for r in received) == Counter(range(12))
    accepted = {f"part-{r['partition']:05d}": r for r in received}
    assert {accepted[name]["worker"] for name in held} == {survivor_id}
    for name, first in written_by_victim.items():
        final = commit_record(out, name)
        assert final["worker"] == survivor_id  # the retry's record replaced the cut-off worker's ...
        assert {k: final[k] for k in OUTPUT_FIELDS} == {k: first[k] for k in OUTPUT_FIELDS}  # ... byte for byte

    # rows in = rows out + rows quarantined, in the report and in the commit records
    records = [commit_record(out, f"part-{i:05d}") for i in range(12)]
    assert report.rows_in == 12_000 == report.rows_predicted + report.rows_quarantined and report.rows_failed == 0
    assert sum(r["rows_in"] for r in records) == sum(r["rows_out"] + r["rows_quarantined"] for r in records) == 12_000
    assert report.rows_quarantined == 3 * NEGATIVE_PER_FILE and report.reasons == {"amount:negative": 15}
    assert_exactly_once(out, input_ids(inputs), report)

    # the rows and checksums of every partition equal the one-worker run's
    expected = [commit_record(reference_out, f"part-{i:05d}") for i in range(12)]
    assert [{k: r[k] for k in OUTPUT_FIELDS} for r in records] == [{k: r[k] for k in OUTPUT_FIELDS} for r in expected]
    for folder in ("", "_quarantine"):
        got, want = (pd.read_parquet(root / folder).sort_values("transaction_id") for root in (out, reference_out))
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
