"""The Kubernetes side without a Kubernetes cluster: the DaskCluster spec built from the run config
(validated against the CRD schema shipped in dask-kubernetes and, pod by pod, against the
Kubernetes API schemas), its container commands run for real, the Dockerfile, the example
manifests in deploy/ and the notebook."""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sm1km.config import EXAMPLE_CONFIG, RunConfig
from sm1km.errors import ConfigError
from sm1km.runtime import kube

REPO = Path(__file__).resolve().parents[1]
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


def make_cfg(**kubernetes) -> RunConfig:
    data = yaml.safe_load(EXAMPLE_CONFIG)
    data["store"]["root"] = "s3://bucket/run"
    data["cluster"] = {"kind": "kubernetes", "n_workers": 3, "threads_per_worker": 2, "memory_limit": "6GiB",
                       "kubernetes": kubernetes}
    return RunConfig.from_dict(data)


FULL = dict(name="reprocess-2020", image="registry.example.org/sm1km:1.2.3", namespace="eo",
            service_account="sm1km", env_from_secret="sm1km-s3", adaptive_min=1, adaptive_max=8,
            worker_cpu="1500m", node_selector={"pool": "gpu"}, worker_gpu=1,
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            scheduler_cpu="0.5", scheduler_memory="1GiB", env={"GDAL_HTTP_MAX_RETRY": "5"},
            image_pull_policy="Always", idle_timeout_s=600, scratch_size="20GiB")


def pods_of(spec: dict) -> dict[str, dict]:
    return {"scheduler": spec["spec"]["scheduler"]["spec"], "worker": spec["spec"]["worker"]["spec"]}


# -- the spec against the CRD ------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, FULL], ids=["defaults", "all-options"])
def test_spec_matches_daskcluster_crd(options):
    spec = kube.build_cluster_spec(make_cfg(**options))
    assert spec["apiVersion"] == "kubernetes.dask.org/v1" and spec["kind"] == "DaskCluster"
    assert kube.custom_resource_errors(spec) == []
    kube.validate_custom_resource(spec)  # does not raise


@pytest.mark.parametrize("break_it, expected", [
    (lambda s: s["spec"]["worker"]["spec"]["containers"][0].update(securityContex={}), "securityContex"),
    (lambda s: s["spec"]["worker"].update(replicas="3"), "replicas"),
    (lambda s: s["spec"]["scheduler"]["service"]["ports"][0].update(targetPort=8786), "targetPort"),
    (lambda s: s["spec"]["scheduler"].pop("service"), "service"),
    (lambda s: s.update(kind="DaskClustr"), "DaskClustr"),
], ids=["unknown-field", "wrong-type", "int-port", "missing-required", "unknown-kind"])
def test_crd_validation_rejects_broken_specs(break_it, expected):
    spec = kube.build_cluster_spec(make_cfg())
    break_it(spec)
    errors = kube.custom_resource_errors(spec)
    assert errors and any(expected in e for e in errors), errors
    with pytest.raises(ConfigError):
        kube.validate_custom_resource(spec)


def test_crd_schemas_come_from_the_installed_operator_package():
    for kind, fname in kube.CRD_KINDS.items():
        crd = yaml.load((kube.crd_dir() / fname).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        assert crd["spec"]["names"]["kind"] == kind
        assert crd["spec"]["group"] == "kubernetes.dask.org"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_embedded_pods_and_service_match_kubernetes_schemas(version):
    """The pod specs inside the DaskCluster become real Pods/Deployments: check them against the
    Kubernetes API schema too (the CRD's copy of PodSpec is older and looser)."""
    spec = kube.build_cluster_spec(make_cfg(**FULL))
    for name, pod in pods_of(spec).items():
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod},
                                     version, strict=True)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x-scheduler"},
           "spec": spec["spec"]["scheduler"]["service"]}
    kubernetes_validate.validate(svc, version, strict=True)
    broken = copy.deepcopy(pods_of(spec)["worker"])
    broken["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"}, "spec": broken},
                                     version, strict=True)


# -- what the spec says --------------------------------------------------------------------------

def test_spec_follows_the_config():
    cfg = make_cfg(**FULL)
    spec = kube.build_cluster_spec(cfg)
    assert spec["metadata"]["name"] == "reprocess-2020"
    assert spec["spec"]["idleTimeout"] == 600
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 3  # n_workers, inside the adaptive bounds [1, 8]
    w = worker["spec"]["containers"][0]
    s = spec["spec"]["scheduler"]["spec"]["containers"][0]
    assert w["image"] == s["image"] == "registry.example.org/sm1km:1.2.3"
    assert w["imagePullPolicy"] == "Always"
    assert w["args"][:6] == ["dask", "worker", "--nthreads", "2", "--memory-limit", "6Gi"]
    assert s["args"] == ["dask", "scheduler", "--host", "0.0.0.0"]
    assert w["resources"] == {"requests": {"cpu": "1500m", "memory": "6Gi"},
                              "limits": {"memory": "6Gi", "nvidia.com/gpu": "1"}}
    assert s["resources"] == {"requests": {"cpu": "0.5", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    assert {"name": "GDAL_HTTP_MAX_RETRY", "value": "5"} in w["env"] and s["env"] == w["env"]
    assert w["env"] is not s["env"]  # independent lists (no YAML anchors when dumped)
    assert "&id" not in yaml.safe_dump(spec)
    # credentials only by reference, only where data is read
    assert w["envFrom"] == [{"secretRef": {"name": "sm1km-s3"}}]
    assert "envFrom" not in s
    # placement: workers only
    wpod, spod = worker["spec"], spec["spec"]["scheduler"]["spec"]
    assert wpod["nodeSelector"] == {"pool": "gpu"} and "nodeSelector" not in spod
    assert wpod["tolerations"][0]["key"] == "nvidia.com/gpu" and "tolerations" not in spod
    for pod in (wpod, spod):
        assert pod["serviceAccountName"] == "sm1km"
        assert pod["automountServiceAccountToken"] is False
        assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}]
    # the scheduler service selects the operator's scheduler pod of this cluster
    assert spec["spec"]["scheduler"]["service"]["selector"] == {
        "dask.org/cluster-name": "reprocess-2020", "dask.org/component": "scheduler"}
    assert kube.adaptive_bounds(cfg) == (1, 8)


def test_spec_is_hardened():
    spec = kube.build_cluster_spec(make_cfg())
    for pod in pods_of(spec).values():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == kube.RUN_AS_USER != 0
        (ctr,) = pod["containers"]
        sc = ctr["securityContext"]
        assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}
        assert {"name": "scratch", "mountPath": "/tmp"} in ctr["volumeMounts"]
        assert pod["volumes"] == [{"name": "scratch", "emptyDir": {}}]
        assert "envFrom" not in ctr  # no secret configured -> none referenced


def test_spec_builder_is_pure():
    cfg = make_cfg(**FULL)
    before = cfg.model_dump()
    a, b = kube.build_cluster_spec(cfg), kube.build_cluster_spec(cfg)
    assert a == b and cfg.model_dump() == before
    a["spec"]["worker"]["spec"]["tolerations"].append({"key": "x"})
    assert kube.build_cluster_spec(cfg) == b


@pytest.mark.parametrize("options, where", [
    ({"name": "Bad_Name"}, "cluster.kubernetes.name"),
    ({"name": "a" * 54}, "cluster.kubernetes.name"),
    ({"adaptive_min": 5, "adaptive_max": 2}, "cluster.kubernetes.adaptive_min"),
    ({"adaptive_min": 1}, "cluster.kubernetes.adaptive_max"),
    ({"worker_cpu": "two"}, "cluster.kubernetes.worker_cpu"),
    ({"scheduler_memory": "lots"}, "cluster.kubernetes.scheduler_memory"),
    ({"env": {"AWS_SECRET_ACCESS_KEY": "x"}}, "cluster.kubernetes.env"),
    ({"env": {"BAD-NAME": "x"}}, "cluster.kubernetes.env"),
    ({"env_from_secret": "My Secret"}, "cluster.kubernetes.env_from_secret"),
    ({"service_account": "SA_1"}, "cluster.kubernetes.service_account"),
])
def test_bad_kubernetes_config_is_a_config_error(options, where):
    with pytest.raises(ConfigError) as info:
        kube.build_cluster_spec(make_cfg(**options))
    assert info.value.where == where and info.value.fix


@pytest.mark.parametrize("dask_size, quantity", [
    ("4GiB", "4Gi"), ("4Gi", "4Gi"), ("512MiB", "512Mi"), ("1.5GiB", "1536Mi"), ("4GB", "4G"), ("4500MB", "4500M"),
    ("3 kiB", "3Ki"), ("1000", "1k"), ("1001", "1001")])
def test_k8s_memory(dask_size, quantity):
    from dask.utils import parse_bytes

    got = kube.k8s_memory(dask_size, "x")
    assert got == quantity
    assert parse_bytes(got) == parse_bytes(dask_size)  # dask reads the same number of bytes


def test_adaptive_bounds_clamp_initial_workers():
    cfg = make_cfg(adaptive_min=5, adaptive_max=10)  # n_workers = 3 < minimum
    assert kube.build_cluster_spec(cfg)["spec"]["worker"]["replicas"] == 5
    assert kube.adaptive_bounds(make_cfg()) is None


# -- the container commands of the spec, run for real ------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def check_scheduler_args(args: list[str]) -> None:
    """The scheduler command parses with the real `dask scheduler` CLI (click) of this version."""
    from distributed.cli.dask_scheduler import main as dask_scheduler

    assert args[:2] == ["dask", "scheduler"]
    ctx = dask_scheduler.make_context("dask scheduler", list(args[2:]))
    assert ctx.params["host"] == "0.0.0.0"  # reachable through the Service from other pods


def run_worker(worker_args, worker_env, tmp_path):
    """Run the spec's worker command as a process against a scheduler on 127.0.0.1, as the
    operator would (DASK_SCHEDULER_ADDRESS, DASK_WORKER_NAME); return (worker info, result)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        env = {**os.environ, "DASK_SCHEDULER_ADDRESS": address, "DASK_WORKER_NAME": "spec-worker-0",
               "DASK_TEMPORARY_DIRECTORY": str(tmp_path), **worker_env}
        wargs = _expand(worker_args, env)
        # the spec's fixed dashboard port (8788, one per pod) could be taken here: use a free one
        i = wargs.index("--dashboard-address")
        wargs[i + 1] = f"127.0.0.1:{_free_port()}"
        wargs += ["--host", "127.0.0.1"]
        exe = Path(sys.executable).parent / wargs[0]
        proc = subprocess.Popen([str(exe), *wargs[1:]], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            with Client(address, timeout="30s") as client:
                client.wait_for_workers(1, timeout=60)
                (info,) = client.scheduler_info()["workers"].values()
                result = client.submit(sum, [1, 2, 3]).result(timeout=30)
            return info, result
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_spec_commands_start_a_working_cluster(tmp_path):
    cfg = make_cfg(env={"SM1KM_TEST_MARK": "1"})
    spec = kube.build_cluster_spec(cfg)
    s = spec["spec"]["scheduler"]["spec"]["containers"][0]
    w = spec["spec"]["worker"]["spec"]["containers"][0]
    check_scheduler_args(s["args"])
    env = {e["name"]: e["value"] for e in w["env"]}
    info, result = run_worker(w["args"], env, tmp_path)
    assert result == 6
    assert info["name"] == "spec-worker-0"
    assert info["nthreads"] == cfg.cluster.threads_per_worker
    assert info["memory_limit"] == 6 * 2**30


# -- container image -----------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--failure-threshold", "info", str(REPO / "deploy" / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_properties():
    ins = dockerfile_instructions()
    args = {}
    for op, rest in ins:
        if op == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    froms = [rest.split()[0] for op, rest in ins if op == "FROM"]
    assert froms, "no FROM"
    for f in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f)
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", image), f"base image not pinned: {image}"
    # the last USER is a numeric non-root uid (so runAsNonRoot can verify it), the one the pods use
    users = [rest for op, rest in ins if op == "USER"]
    assert users and users[-1].split(":")[0] == str(kube.RUN_AS_USER)
    values = yaml.safe_load((REPO / "helm" / "sm1km" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == kube.RUN_AS_USER
    # no ADD (remote URLs, auto-extracted archives), no secrets in ENV/ARG, package with the k8s extra
    assert not [rest for op, rest in ins if op == "ADD"]
    for op, rest in ins:
        if op in ("ENV", "ARG"):
            assert not re.search(r"(?i)(secret|password|token|access_key|aws_)", rest), rest
        if op == "COPY":
            assert not re.search(r"(?i)(\.env\b|\.pem|id_rsa|kubeconfig|credentials|\.aws)", rest), rest
    assert any(op == "RUN" and '[k8s]' in rest and "pip install" in rest for op, rest in ins)
    ep = [rest for op, rest in ins if op == "ENTRYPOINT"]
    assert ep and json.loads(ep[-1])[0] == "tini"


def test_dockerignore_is_an_allow_list():
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed <= {"pyproject.toml", "README.md", "LICENSE", "pipeline"}
    assert {"pyproject.toml", "pipeline"} <= allowed


# -- deploy/ example manifests -------------------------------------------------------------------

def manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / "deploy" / name).read_text()) if d]


def test_deploy_daskcluster_is_what_sm1km_creates():
    """deploy/daskcluster.yaml is the spec `cluster.kind: kubernetes` creates for
    deploy/run-kubernetes.yaml (regenerate with the command in its header)."""
    cfg = RunConfig.from_yaml(REPO / "deploy" / "run-kubernetes.yaml")
    assert cfg.cluster.kind == "kubernetes"
    (doc,) = manifests("daskcluster.yaml")
    assert doc == kube.build_cluster_spec(cfg)
    assert kube.custom_resource_errors(doc) == []


def test_deploy_daskjob_validates():
    docs = manifests("daskjob.yaml")
    kinds = [d["kind"] for d in docs]
    assert "DaskJob" in kinds and "ConfigMap" in kinds
    for d in docs:
        if d["apiVersion"].startswith("kubernetes.dask.org/"):
            assert kube.custom_resource_errors(d) == []
        else:
            for v in K8S_VERSIONS:
                kubernetes_validate.validate(d, v, strict=True)
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert RunConfig.from_dict(yaml.safe_load(cm["data"]["run.yaml"])).cluster.kind == "address"


# -- notebook ------------------------------------------------------------------------------------

def test_notebook_is_valid_and_shows_the_kubernetes_workflow():
    import nbformat

    path = REPO / "deploy" / "notebooks" / "reprocess.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for needle in ('"kind": "kubernetes"', "make_client(cfg)", "dashboard_link", "Pipeline.from_yaml",
                   ".run(client)", "from distributed import", "progress(", "build_cluster_spec"):
        assert needle in code, needle
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit without outputs"
    for c in nb.cells:
        if c.cell_type == "code":
            compile(c.source, "<cell>", "exec")  # every cell is valid Python


def test_notebook_config_cell_builds_a_valid_spec(tmp_path):
    """Run the notebook's config cells (no cluster needed) and check the spec they preview."""
    import nbformat

    nb = nbformat.read(REPO / "deploy" / "notebooks" / "reprocess.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "# [no-cluster]" in c.source]
    assert cells
    ns: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for src in cells:
            exec(compile(src, "<notebook>", "exec"), ns)
    finally:
        os.chdir(cwd)
    assert kube.custom_resource_errors(ns["spec"]) == []
    assert RunConfig.from_yaml(tmp_path / "reprocess.yaml").cluster.kind == "kubernetes"


# -- TLS ----------------------------------------------------------------------------------------

def make_tls_cfg(**kubernetes) -> RunConfig:
    data = make_cfg(**kubernetes).model_dump(mode="json")
    data["cluster"]["security"] = {"tls": True, "secret_name": "rel-sm1km-tls"}
    return RunConfig.from_dict(data)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_tls_spec_mounts_the_secret_and_validates(version):
    spec = kube.build_cluster_spec(make_tls_cfg(**FULL))
    assert kube.custom_resource_errors(spec) == []
    for name, pod in pods_of(spec).items():
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod},
                                     version, strict=True)
        assert {"name": "tls", "secret": {"secretName": "rel-sm1km-tls", "defaultMode": 0o440}} in pod["volumes"]
        (ctr,) = pod["containers"]
        assert {"name": "tls", "mountPath": kube.TLS_MOUNT, "readOnly": True} in ctr["volumeMounts"]
        env = {e["name"]: e["value"] for e in ctr["env"]}
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == f"{kube.TLS_MOUNT}/ca.crt"
        assert "-----BEGIN" not in yaml.safe_dump(pod)  # key material only by reference
    s = pods_of(spec)["scheduler"]["containers"][0]
    w = pods_of(spec)["worker"]["containers"][0]
    assert s["args"][:6] == ["dask", "scheduler", "--host", "0.0.0.0", "--protocol", "tls"]
    assert w["args"][w["args"].index("--tls-ca-file") + 1] == f"{kube.TLS_MOUNT}/ca.crt"
    # the operator injects tcp:// only when the env has no address: the workers bring tls://
    assert {"name": "DASK_SCHEDULER_ADDRESS", "value": "tls://reprocess-2020-scheduler:8786"} in w["env"]


def test_tls_without_a_secret_is_a_config_error():
    data = make_cfg().model_dump(mode="json")
    data["cluster"]["security"] = {"tls": True}
    with pytest.raises(ConfigError) as info:
        kube.build_cluster_spec(RunConfig.from_dict(data))
    assert info.value.where == "cluster.security.secret_name"


def test_inline_certificates_are_refused():
    data = make_cfg().model_dump(mode="json")
    data["cluster"]["security"] = {"tls": True, "key_file": "-----BEGIN PRIVATE KEY-----\nMIIE..."}
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(data)
    assert "cluster.security.key_file" in info.value.problem


def test_kube_cluster_refuses_tls_before_any_api_call(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    from sm1km.runtime.cluster import make_client

    with pytest.raises(ConfigError) as info:
        with make_client(make_tls_cfg()):
            pass
    assert info.value.where == "cluster.security.tls" and "cluster.kind: address" in info.value.fix


def _mounted(args: list[str], tls) -> list[str]:
    """The spec's args with the Secret's mount path pointing at the test's files."""
    paths = {kube.TLS_CA: str(tls.ca), kube.TLS_CERT: str(tls.cert), kube.TLS_KEY: str(tls.key)}
    return [paths.get(a, a) for a in args]


@pytest.mark.slow
def test_tls_spec_commands_start_a_working_tls_cluster(tmp_path):
    """The spec's scheduler and worker commands (real CLIs, real certificate files) form a TLS-only
    cluster: a client with the config's Security works, a plain-TCP or certificate-less one does not."""
    from distributed import Client
    from distributed.security import Security

    from sm1km.runtime.cluster import cluster_security
    from tls_helpers import make_tls

    tls = make_tls(tmp_path / "tls")
    spec = kube.build_cluster_spec(make_tls_cfg())
    s = spec["spec"]["scheduler"]["spec"]["containers"][0]
    w = spec["spec"]["worker"]["spec"]["containers"][0]
    sargs = _mounted(s["args"], tls)
    check_scheduler_args(sargs)  # click checks that the certificate files exist
    sargs[sargs.index("--host") + 1] = "127.0.0.1"
    sched_file = tmp_path / "scheduler.json"
    sargs += ["--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)]
    exe = str(Path(sys.executable).parent / "dask")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    sched = subprocess.Popen([exe, *sargs[1:]], env={**base_env, "DASK_TEMPORARY_DIRECTORY": str(tmp_path)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        import time

        t_end = time.monotonic() + 120
        while not sched_file.exists() or "address" not in sched_file.read_text():
            assert sched.poll() is None and time.monotonic() < t_end, "the TLS scheduler did not start"
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tls://127.0.0.1:")
        wenv = {e["name"]: e["value"] for e in w["env"]}
        wenv = {k: _mounted([v], tls)[0] for k, v in wenv.items()}
        wenv["DASK_SCHEDULER_ADDRESS"] = address  # the Service name does not resolve here
        wargs = _expand(w["args"], {"DASK_WORKER_NAME": "tls-worker-0"})
        wargs = _mounted(wargs, tls)
        wargs[wargs.index("--dashboard-address") + 1] = f"127.0.0.1:{_free_port()}"
        wargs += ["--host", "127.0.0.1"]
        worker = subprocess.Popen([exe, *wargs[1:]], env={**base_env, **wenv, "DASK_TEMPORARY_DIRECTORY": str(tmp_path)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        data = make_cfg().model_dump(mode="json")
        data["cluster"] = {"kind": "address", "address": address.replace("tls://", "tcp://"),
                           "security": {"tls": True, "ca_file": str(tls.ca), "cert_file": str(tls.cert),
                                        "key_file": str(tls.key)}}
        security = cluster_security(RunConfig.from_dict(data))
        with Client(address, security=security, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            (info,) = client.scheduler_info()["workers"].values()
            assert info["name"] == "tls-worker-0" and info["id"] == "tls-worker-0"
            assert next(iter(client.scheduler_info()["workers"])).startswith("tls://")
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        with pytest.raises(OSError):  # plain TCP: the scheduler only speaks TLS
            Client(address.replace("tls://", "tcp://"), timeout="3s")
        other = make_tls(tmp_path / "other-ca")  # a certificate from another CA is refused
        with pytest.raises(OSError):
            Client(address, timeout="3s", security=Security(
                tls_ca_file=str(other.ca), tls_client_cert=str(other.cert), tls_client_key=str(other.key),
                require_encryption=True))
    finally:
        for p in (worker, sched):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
