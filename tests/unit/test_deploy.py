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

import argparse
import copy
import importlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from inferline.cli import COMMANDS
from tests.deploy_cases import (
    DOCKER,
    DOCKERFILE,
    K8S,
    ROOT,
    bind_mounts,
    compose,
    interpolate,
    manifests,
    of_kind,
)

# CUDA major of each NGC Triton tag, from NVIDIA's release notes ("Release YY.MM is based on CUDA ..."): 25.03
# 12.8.1, 25.04 12.9.0, 25.06 12.9.1, 25.08 13.0.0, 25.10 13.0.2. 25.07 (Triton 2.59.1) is CUDA 12: the CUDA 13
# workarounds first appear in 2.60.0 (25.08). A tag missing here fails the test: add it from its release notes.
NGC_CUDA_MAJOR = {"25.03": 12, "25.04": 12, "25.06": 12, "25.07": 12, "25.08": 13, "25.10": 13}
# Python of each tag (Ubuntu 24.04 images; Triton's build.py: PYVER=3.12)
NGC_PYTHON = dict.fromkeys(NGC_CUDA_MAJOR, "3.12")


def stage_parser(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser `inferline WORDS...` dispatches to, and the arguments it gets (as inferline.cli does)."""
    assert words[0] == "inferline", words
    command = COMMANDS[words[1]]
    parser = importlib.import_module(command.module).build_parser()
    return parser, ([command.first] if command.first else []) + words[2:]


def parse_cli(words: list[str], files: dict[str, Path]) -> argparse.Namespace:
    """Parse a container's command line with inferline's own parser. Paths in ``files`` (secrets mounted in the
    container) are replaced by files that exist here, so `existing_file` options check the rest."""
    parser, argv = stage_parser(words)
    argv = [str(files[a]) if a in files else a for a in argv]
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage error: say which command line
        raise AssertionError(f"inferline's parser refused {words}: exit {exc.code} (its message is above)") from exc


class SecretFiles(dict[str, Path]):
    """Container paths under /run/secrets or /etc/inferline (mounted secrets), each mapped to an empty file here."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith(("/run/secrets/", "/etc/inferline/"))

    def __missing__(self, key: str) -> Path:
        path = self.root / key.strip("/").replace("/", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self[key] = path
        return path


@pytest.fixture
def secret_files(tmp_path: Path) -> SecretFiles:
    return SecretFiles(tmp_path / "secrets")


def defaults(words: list[str]) -> argparse.Namespace:
    parser, argv = stage_parser(words)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile() -> Any:
    dfp = pytest.importorskip("dockerfile_parse", reason="dockerfile-parse (dev extra) parses the Dockerfile")
    parser = dfp.DockerfileParser(path=str(DOCKERFILE))
    return parser


def instructions(kind: str) -> list[dict[str, Any]]:
    return [i for i in dockerfile().structure if i["instruction"] == kind]


def arg_defaults() -> dict[str, str]:
    out: dict[str, str] = {}
    for i in instructions("ARG"):
        name, _, value = i["value"].partition("=")
        if value:
            out.setdefault(name, value)
    return out


def final_stage() -> list[dict[str, Any]]:
    structure = dockerfile().structure
    last_from = max(n for n, i in enumerate(structure) if i["instruction"] == "FROM")
    return structure[last_from:]


def test_dockerfile_base_tag_matches_the_gpu_extra_and_the_image_python() -> None:
    args = arg_defaults()
    froms = [i["value"] for i in instructions("FROM")]
    assert froms and all(f.startswith("${TRITON_IMAGE}:${TRITON_TAG}-py3") for f in froms), froms
    assert args["TRITON_IMAGE"] == "nvcr.io/nvidia/tritonserver"
    tag = args["TRITON_TAG"]
    assert re.fullmatch(r"\d\d\.\d\d", tag) and "latest" not in DOCKERFILE.read_text().lower(), tag
    assert tag in NGC_CUDA_MAJOR, f"CUDA major of tritonserver:{tag}-py3 unknown: add it to NGC_CUDA_MAJOR"
    assert f"TRITON_TAG={tag}" in DOCKERFILE.read_text() and f"{tag} (Triton" in DOCKERFILE.read_text(), (
        "the header comment names the tag it explains"
    )

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    majors = {
        int(cu or cuda)
        for req in project["optional-dependencies"]["gpu"]
        for cu, cuda in re.findall(r"-cu(\d+)\b|cuda(\d+)x", req)
    }
    assert majors == {NGC_CUDA_MAJOR[tag]}, (
        f"gpu extra CUDA majors {majors}, tritonserver:{tag} is CUDA {NGC_CUDA_MAJOR[tag]}"
    )

    python = args["PYTHON_VERSION"]
    assert python == NGC_PYTHON[tag], f"tritonserver:{tag} ships Python {NGC_PYTHON[tag]}, the Dockerfile says {python}"
    admitted = SpecifierSet(project["requires-python"]).contains(f"{python}.0")
    runs = " ".join(i["value"] for i in instructions("RUN"))
    assert admitted or "--ignore-requires-python" in runs, (
        f"requires-python {project['requires-python']!r} refuses the image's Python {python} and the Dockerfile does "
        "not override it: pip install would fail"
    )
    assert '".[gpu]"' in runs, "the image installs the gpu extra"


def test_dockerfile_runs_unprivileged_with_a_readiness_healthcheck_on_the_edge() -> None:
    stage = final_stage()
    users = [i["value"] for i in stage if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert users[-1].split(":")[0].isdigit(), "a numeric uid, so Kubernetes' runAsNonRoot can verify it"
    health = [i["value"] for i in stage if i["instruction"] == "HEALTHCHECK"]
    assert len(health) == 1
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(i["value"] for i in stage if i["instruction"] == "ENV")))
    url = env["INFERLINE_HEALTH_URL"]
    assert "${INFERLINE_HEALTH_URL}" in health[0] and url.endswith("/v2/health/ready"), (health, url)

    (cmd,) = [json.loads(i["value"]) for i in stage if i["instruction"] == "CMD"]
    up = parse_cli(cmd, {})
    assert up.command == "up" and up.foreground and up.repository == "/models"
    host, port = up.bind
    assert host == "0.0.0.0" and url == f"http://127.0.0.1:{port}/v2/health/ready"
    exposed = {int(p) for i in stage if i["instruction"] == "EXPOSE" for p in i["value"].split()}
    assert exposed == {port, up.grpc_edge_port}, "only the edge is exposed; Triton's ports stay on loopback"
    base = defaults(["inferline", "serve", "up"])
    assert (port, up.grpc_edge_port) == (base.gateway_port, base.grpc_edge_port) == (8080, 8081)

    (entry,) = [json.loads(i["value"]) for i in stage if i["instruction"] == "ENTRYPOINT"]
    assert entry == ["/opt/nvidia/nvidia_entrypoint.sh", "/opt/inferline/entrypoint.sh"]


def test_every_path_the_dockerfile_copies_exists_and_reaches_the_build() -> None:
    lines = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the build context starts from nothing"
    allowed = {p[1:].rstrip("/") for p in ignore if p.startswith("!")}
    copied = set()
    for i in instructions("COPY"):
        words = [w for w in i["value"].split() if not w.startswith("--")]
        if "--from=" in i["value"]:
            continue
        for src in words[:-1]:
            path = src.rstrip("/")
            assert (ROOT / path).exists(), f"COPY {src}: no such path in the repository"
            assert path in allowed, f"COPY {src}: Dockerfile.dockerignore keeps it out of the build context"
            copied.add(path)
    stages = {p.readlink().name for p in (ROOT / "inferline").iterdir() if p.is_symlink()}  # inferline/<stage> links
    needed = stages | {"inferline", "pyproject.toml", "README.md"}
    assert needed <= copied, f"pip install needs {sorted(needed - copied)} in the image"


# ---------------------------------------------------------------------------------------------------------------
# the model repository the image serves: `inferline export publish --target gpu [--tensorrt]`


# ---------------------------------------------------------------------------------------------------------------
# compose


def test_compose_validates_against_the_compose_spec_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra) validates the compose file")
    builtin = pytest.importorskip(
        "check_jsonschema.builtin_schemas", reason="check-jsonschema (dev extra) vendors the compose-spec schema"
    )
    schema_file = Path(builtin.__file__).parent / "vendor" / "compose-spec.json"
    assert schema_file.exists(), f"check-jsonschema no longer vendors {schema_file.name}"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)  # the draft the schema names (2020-12)
    errors = sorted(validator.iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    # the schema's own negative control: a misspelled service key is refused
    broken = copy.deepcopy(compose())
    broken["services"]["triton"]["port"] = broken["services"]["triton"].pop("ports")
    assert list(validator.iter_errors(broken))


def test_compose_wires_one_gpu_host_and_publishes_only_the_edge(secret_files: SecretFiles) -> None:
    services = compose()["services"]
    assert set(services) == {"triton", "monitor", "prometheus", "alertmanager", "grafana"}
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"triton"}, published
    triton = services["triton"]
    up = parse_cli(triton["command"], secret_files)
    assert {int(interpolate(p).split(":")[-1]) for p in triton["ports"]} == {up.bind[1], up.grpc_edge_port}
    assert up.api_keys and up.tls_cert and up.tls_key, "the edge faces a network: keys and TLS"
    assert triton["environment"]["INFERLINE_HEALTH_URL"].startswith("https://"), "the edge serves TLS"
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert [d["driver"] for d in devices] == ["nvidia"] and "gpu" in devices[0]["capabilities"]
    assert triton["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (DOCKER / triton["build"]["context"]).resolve() == ROOT
    assert triton["build"]["args"]["TRITON_TAG"].endswith(arg_defaults()["TRITON_TAG"] + "}")

    monitor = services["monitor"]
    watch = parse_cli(monitor["command"], secret_files)
    assert watch.command == "run" and watch.workdir == up.workdir and watch.repository == up.repository
    for name in ("monitor", "prometheus"):  # Triton's, the supervisor's and the monitor's ports are loopback only
        assert services[name]["network_mode"] == "service:triton", name
    assert monitor["pid"] == "service:triton", "the monitor samples the tritonserver process it finds in server.json"

    for name, service in services.items():
        assert "privileged" not in service and service.get("cap_drop") == ["ALL"], name
        image = interpolate(service["image"])
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image})"
        limits = service["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits), f"{name}: resource limits"
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"KEY|PASSWORD|TOKEN|SECRET", key) and not key.endswith("FILE"):
                raise AssertionError(f"{name}: {key} is given inline; pass a file (*_FILE) from a secret")
            assert "secret" not in str(value).lower() or str(value).startswith("/run/secrets/"), (name, key)


def test_every_path_compose_mounts_exists() -> None:
    data = compose()
    mounts = [(name, src, dst) for name, s in data["services"].items() for src, dst in bind_mounts(s)]
    assert len(mounts) >= 6
    for name, source, target in mounts:
        assert source.exists(), f"{name}: mounts {source} (at {target}), which is not in the repository"
        assert ROOT in source.parents, f"{name}: {source} is outside the repository"
    lines = (DOCKER / "secrets" / ".gitignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignored[0] == "*", "deploy/docker/secrets/ ignores everything but its README"
    used = {
        s if isinstance(s, str) else s["source"] for svc in data["services"].values() for s in svc.get("secrets", [])
    }
    assert used == set(data["secrets"]), "every secret declared is used, and declared"
    for name, secret in data["secrets"].items():
        path = (DOCKER / secret["file"]).resolve()
        assert path.parent == DOCKER / "secrets", f"secret {name} lives in deploy/docker/secrets/"
        assert f"!{path.name}" not in ignored, f"secret {name}: {path.name} would be committed"
        assert path.name in (DOCKER / "secrets" / "README.md").read_text(), f"the README says how to make {path.name}"


def test_prometheus_scrapes_triton_the_supervisor_and_the_monitor_at_their_ports() -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]] for job in config["scrape_configs"]
    }
    up = defaults(["inferline", "serve", "up"])
    watch = defaults(["inferline", "monitor", "run"])
    assert targets["triton"] == [f"127.0.0.1:{up.metrics_port}"] == ["127.0.0.1:8002"]
    assert targets["inferline-supervisor"] == [f"127.0.0.1:{up.supervisor_metrics_port}"] == ["127.0.0.1:8003"]
    assert targets["inferline-monitor"] == [f"127.0.0.1:{watch.port}"] == ["127.0.0.1:9400"]
    (am,) = config["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["alertmanager:9093"]
    rules = yaml.safe_load((ROOT / "monitor" / "prometheus" / "inferline-rules.yml").read_text())
    interval = {g["interval"] for g in rules["groups"]}
    assert interval == {config["global"]["evaluation_interval"]} == {config["global"]["scrape_interval"]}, (
        "the rules' `for:` counts monitor intervals: Prometheus must evaluate and scrape at the same interval"
    )


def test_grafana_provisions_prometheus_and_the_committed_dashboard() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    mounts = {target: source for source, target in bind_mounts(grafana)}
    assert mounts["/etc/grafana/provisioning"] == DOCKER / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    listen = next(a for a in services["prometheus"]["command"] if a.startswith("--web.listen-address="))
    # Prometheus runs in triton's network namespace: Grafana reaches it by that service's name
    assert datasource["type"] == "prometheus" and datasource["url"] == f"http://triton:{listen.rsplit(':', 1)[1]}"
    (provider,) = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/inferline.yml").read_text())["providers"]
    assert provider["type"] == "file"
    folder = provider["options"]["path"]
    dashboards = {t: s for t, s in mounts.items() if t.startswith(folder + "/")}
    assert list(dashboards.values()) == [ROOT / "monitor" / "grafana" / "inferline.json"], dashboards
    dashboard = json.loads((ROOT / "monitor" / "grafana" / "inferline.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == datasource["type"] and dashboard["uid"]


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes

BUILTIN = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}
CRDS = {
    ("kubernetes.dask.org/v1", "DaskJob"): "daskjob-kubernetes.dask.org-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}


def dropped(given: Any, kept: Any, where: str = "") -> list[str]:
    """Fields of ``given`` that did not survive the model round trip (``kept``): unknown or misspelled keys. Scalars
    compare as text (the models turn quantities such as ``1`` into ``"1"``)."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [f"{where}: {type(kept).__name__} instead of an object"]
        return [
            p
            for k, v in given.items()
            for p in (dropped(v, kept[k], f"{where}.{k}") if k in kept else [f"{where}.{k}"])
        ]
    if isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return [f"{where}: list changed"]
        return [p for n, (a, b) in enumerate(zip(given, kept, strict=True)) for p in dropped(a, b, f"{where}[{n}]")]
    return [] if str(given).lower() == str(kept).lower() else [f"{where}: {given!r} became {kept!r}"]


def through_model(data: dict[str, Any], model: str) -> list[str]:
    client = pytest.importorskip("kubernetes.client", reason="kubernetes (dev extra) holds the API models")
    api = client.ApiClient()
    obj = api._ApiClient__deserialize(copy.deepcopy(data), model)  # the models' own (de)serializer
    return dropped(data, api.sanitize_for_serialization(obj))


def test_manifests_load_into_the_kubernetes_models() -> None:
    kinds = set()
    for path, doc in manifests():
        key = (doc["apiVersion"], doc["kind"])
        assert key in BUILTIN or key in CRDS, f"{path.name}: {key} is neither a built-in kind checked here nor a CRD"
        kinds.add(doc["kind"])
        if key in BUILTIN:
            lost = through_model(doc, BUILTIN[key])
            assert not lost, (
                f"{path.name} {doc['kind']}/{doc['metadata']['name']}: fields the API does not know: {lost}"
            )
    assert {"Deployment", "Service", "PersistentVolumeClaim", "DaskJob", "ServiceMonitor"} <= kinds
    # the round trip catches a misspelled field (the models alone would ignore it)
    (deployment,) = of_kind("Deployment")
    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert through_model(broken, "V1Deployment") == [".spec.template.spec.containers[0].readinesProbe"]


def openapi_to_jsonschema(node: Any) -> Any:
    """An OpenAPI v3 CRD schema as a JSON Schema as strict as the API server: nullable admits null, objects with
    properties admit no other keys (unless x-kubernetes-preserve-unknown-fields), int-or-string admits both."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(key: tuple[str, str]) -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra) validates custom resources")
    schema = openapi_to_jsonschema(json.loads((K8S / "schemas" / CRDS[key]).read_text()))
    # every object has these three; metadata is the API server's ObjectMeta, not the CRD's to describe
    schema["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    return jsonschema.Draft7Validator(schema)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = crd_validator((doc["apiVersion"], doc["kind"]))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_custom_resources_validate_against_the_operators_crd_schemas() -> None:
    for path, doc in manifests():
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            errors = crd_errors(doc)
            assert not errors, f"{path.name} {doc['kind']}: " + "\n".join(errors)
    (job,) = of_kind("DaskJob")
    broken = copy.deepcopy(job)  # negative controls: the strict schema refuses what the API server would
    broken["spec"]["cluster"]["spec"]["worker"]["replica"] = broken["spec"]["cluster"]["spec"]["worker"].pop("replicas")
    assert any("replica" in e for e in crd_errors(broken))
    limits = broken["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]
    limits["nvidia.com/gpu"] = 1  # an integer where the CRD says string
    assert any("nvidia.com/gpu" in e for e in crd_errors(broken))
    # the pod specs inside the DaskJob are Kubernetes PodSpecs: the models' round trip checks their field names too
    cluster = job["spec"]["cluster"]["spec"]
    for where, spec, model in (
        ("job", job["spec"]["job"]["spec"], "V1PodSpec"),
        ("worker", cluster["worker"]["spec"], "V1PodSpec"),
        ("scheduler", cluster["scheduler"]["spec"], "V1PodSpec"),
        ("scheduler service", cluster["scheduler"]["service"], "V1ServiceSpec"),
    ):
        lost = through_model(spec, model)
        assert not lost, f"DaskJob {where}: {lost}"


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


def test_serving_deployment_probes_the_edge_holds_a_gpu_and_mounts_the_repository(secret_files: SecretFiles) -> None:
    (deployment,) = of_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    triton = container(pod, "triton")
    up = parse_cli(triton["args"], secret_files)
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert set(ports.values()) == {up.bind[1], up.grpc_edge_port}, "the edge's ports, nothing of Triton's"
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        get = triton[probe]["httpGet"]
        assert get["path"] == path and ports[get["port"]] == up.bind[1], (probe, get)
        assert get["scheme"] == ("HTTPS" if up.tls_cert else "HTTP"), "the probe speaks the edge's scheme"
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}
    claim = volumes[mounts[up.repository]]["persistentVolumeClaim"]["claimName"]
    (pvc,) = [p for p in of_kind("PersistentVolumeClaim") if p["metadata"]["name"] == claim]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "every replica (and batch worker) mounts the repository"
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    for arg in (up.api_keys, up.tls_cert, up.tls_key):  # each file argument comes from a mounted Secret
        original = next(a for a in triton["args"] if a in secret_files and secret_files[a] == Path(arg))
        mount = max((m for m in mounts if original.startswith(m + "/")), key=len)
        assert "secret" in volumes[mounts[mount]], original
    env = {e["name"]: e.get("value") for e in triton["env"]}
    assert "INFERLINE_ADMIN_KEY" not in env and env["INFERLINE_ADMIN_KEY_FILE"].startswith("/etc/inferline/admin/")

    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["shareProcessNamespace"], "the monitor samples tritonserver's process"
    for c in pod["containers"]:
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"]), c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]
    monitor = container(pod, "monitor")
    command = monitor["args"][-1].split(";")[-1].split()  # `sh -c '<wait for server.json>; exec inferline ...'`
    watch = parse_cli(command[command.index("inferline") :], secret_files)
    assert watch.workdir == up.workdir and not watch.rollback, "one replica's rollback would move the others' registry"


def test_services_and_scraping_reach_the_edge_and_the_metrics_through_the_proxy() -> None:
    (deployment,) = of_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    named = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, port
    assert {p["targetPort"] for p in services["inferline"]["spec"]["ports"]} == {"edge-http", "edge-grpc"}

    (config_map,) = of_kind("ConfigMap")
    nginx = config_map["data"]["nginx.conf"]
    routes = dict(re.findall(r"listen (\d+);.*?proxy_pass http://127\.0\.0\.1:(\d+)/metrics;", nginx, re.S))
    up = defaults(["inferline", "serve", "up"])
    watch = defaults(["inferline", "monitor", "run"])
    assert {int(k): int(v) for k, v in routes.items()} == {
        named["triton-metrics"]: up.metrics_port,
        named["edge-metrics"]: up.supervisor_metrics_port,
        named["monitor-metrics"]: watch.port,
    }
    assert nginx.count("limit_except GET") == 3, "the proxy passes GET /metrics only"

    (monitor,) = of_kind("ServiceMonitor")
    metrics_service = next(
        s for s in services.values() if s["metadata"]["labels"] == monitor["spec"]["selector"]["matchLabels"]
    )
    service_ports = {p["name"] for p in metrics_service["spec"]["ports"]}
    assert (
        {e["port"] for e in monitor["spec"]["endpoints"]}
        == service_ports
        == {
            "triton-metrics",
            "edge-metrics",
            "monitor-metrics",
        }
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == named["monitor-metrics"]


def test_daskjob_runs_the_batch_cli_against_dask_cuda_workers(secret_files: SecretFiles) -> None:
    (job,) = of_kind("DaskJob")
    cluster = job["spec"]["cluster"]["spec"]
    runner = job["spec"]["job"]["spec"]["containers"][0]
    batch = parse_cli(runner["args"], secret_files)
    assert batch.command == "run" and batch.scheduler == "$(DASK_SCHEDULER_ADDRESS)" and batch.backend == "cudf"
    (worker,) = cluster["worker"]["spec"]["containers"]
    assert worker["args"][:4] == ["dask", "cuda", "worker", "$(DASK_SCHEDULER_ADDRESS)"]
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "1"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1" and cluster["worker"]["replicas"] >= 1
    assert "nvidia.com/gpu" not in runner["resources"]["limits"], "the driver needs no GPU"
    (scheduler,) = cluster["scheduler"]["spec"]["containers"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    service = cluster["scheduler"]["service"]
    assert service["selector"]["dask.org/cluster-name"] == job["metadata"]["name"]
    assert {p["targetPort"] for p in service["ports"]} <= {p["name"] for p in scheduler["ports"]}
    claims = {p["metadata"]["name"] for p in of_kind("PersistentVolumeClaim")}
    for pod in (job["spec"]["job"]["spec"], cluster["worker"]["spec"]):
        used = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert used and used <= claims, used
        (c,) = pod["containers"]
        paths = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/models", "/data"} <= paths, "the release and the data are on shared volumes"
    assert batch.repository == "/models" and batch.output.startswith("/data/")
    assert all(i.startswith("/data/") for i in batch.inputs)
