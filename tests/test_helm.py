"""The Helm chart with the real ``helm`` (pinned, fetched once by tests/helm_tool.py): lint and
render the default and example values, validate every rendered object against the Kubernetes API
schemas (kubernetes-validate) and the dask custom resources against the operator's CRD schemas,
check the security and wiring invariants, and make sure bad values files are rejected.

[14] secured cluster: TLS mounts/flags/env on every pod (and the chart's generated certificates
used for a real dask TLS handshake), the NetworkPolicies, Pod Security Admission ``restricted``
checked field by field on every pod, the notebook Role without pod-spec escalation, ClusterIP by
default and external Services refused unless allowed (with a NOTES warning)."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from helm_tool import helm_path, run_helm
from sm1km.config import RunConfig
from sm1km.runtime import kube

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "sm1km"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
BAD = sorted((REPO / "tests" / "data" / "helm-bad").glob("*.yaml"))
VALUES = [None, *EXAMPLES]
IDS = ["default", *[p.stem for p in EXAMPLES]]
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
NAMESPACE = "eo"
_SECRET = re.compile(r"(?i)(secret|password|token|access_key|private_key|credential)")


@pytest.fixture(scope="session")
def helm():
    """The helm binary; downloading it may not fail silently (no skip: helm is required)."""
    path = helm_path()
    out = run_helm("version", "--short").stdout
    assert out.startswith("v"), out
    return path


_rendered: dict = {}


def render(values: Path | None, *extra: str) -> list[dict]:
    key = (values, extra)
    if key not in _rendered:
        args = ["template", "rel", str(CHART), "--namespace", NAMESPACE, *extra]
        if values is not None:
            args += ["-f", str(values)]
        text = run_helm(*args).stdout
        _rendered[key] = [d for d in yaml.safe_load_all(text) if d]
    return _rendered[key]


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def pod_specs(objs) -> dict[str, dict]:
    """Every pod spec the chart defines, named <object>/<component>."""
    pods = {}
    for o in objs:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "DaskJob":
            pods[f"{name}/runner"] = o["spec"]["job"]["spec"]
            cluster = o["spec"]["cluster"]["spec"]
        elif o["kind"] == "DaskCluster":
            cluster = o["spec"]
        elif o["kind"] == "CronJob":
            pods[f"{name}/runner"] = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            continue
        else:
            continue
        pods[f"{name}/scheduler"] = cluster["scheduler"]["spec"]
        pods[f"{name}/worker"] = cluster["worker"]["spec"]
    return pods


# -- lint and schemas ----------------------------------------------------------------------------

@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_helm_lint_strict(helm, values):
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["-f", str(values)]
    proc = run_helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_rendered_objects_match_kubernetes_and_crd_schemas(helm, values):
    objs = render(values)
    assert by_kind(objs, "ConfigMap")
    n_crd = 0
    for o in objs:
        if o["apiVersion"].startswith("kubernetes.dask.org/"):
            assert kube.custom_resource_errors(o) == [], o["kind"]
            n_crd += 1
        elif o["apiVersion"].startswith("cert-manager.io/"):
            continue  # no cert-manager schema offline: test_cert_manager_resources checks them
        else:
            for v in K8S_VERSIONS:
                kubernetes_validate.validate(o, v, strict=True)
    assert n_crd >= 1
    # the pods inside the custom resources against the real PodSpec/Service schemas too
    for pod in pod_specs(objs).values():
        for v in K8S_VERSIONS:
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                          "spec": pod}, v, strict=True)
    for o in by_kind(objs, "DaskJob") + by_kind(objs, "DaskCluster"):
        cluster = o["spec"]["cluster"]["spec"] if o["kind"] == "DaskJob" else o["spec"]
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                                      "spec": cluster["scheduler"]["service"]}, K8S_VERSIONS[-1], strict=True)


def test_validators_are_not_vacuous(helm):
    """A rendered object with a typo must fail both validators."""
    objs = render(None)
    job = dict(by_kind(objs, "DaskJob")[0])
    job["spec"] = {**job["spec"], "jobb": {}}
    assert any("jobb" in e for e in kube.custom_resource_errors(job))
    cm = dict(by_kind(objs, "ConfigMap")[0])
    cm["dta"] = cm.pop("data")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cm, K8S_VERSIONS[-1], strict=True)


# -- what the chart wires together ---------------------------------------------------------------

@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_run_config_is_a_valid_sm1km_config(helm, values):
    (cm,) = by_kind(render(values), "ConfigMap")
    cfg = RunConfig.from_dict(yaml.safe_load(cm["data"]["run.yaml"]), source="ConfigMap run.yaml")
    assert cfg.cluster.kind == "address" and cfg.cluster.address is None
    assert cfg.store.root.startswith("s3://")
    user = yaml.safe_load(values.read_text())["runConfig"] if values else None
    if user:
        assert cfg.name == user["name"] and cfg.store.root == user["store"]["root"]


#: volume types Pod Security Admission `restricted` allows
_PSA_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                "secret"}


def psa_restricted_violations(pod: dict) -> list[str]:
    """What in a PodSpec breaks the Pod Security Standard ``restricted`` (baseline + restricted
    controls, Kubernetes 1.27+ policy version latest), as messages; [] when it passes."""
    out = []
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"{key}")
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= _PSA_VOLUMES:
            out.append(f"volume {v['name']}: {sorted(kinds - _PSA_VOLUMES)}")
    if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        out.append("pod seccompProfile")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for ctr in pod.get("initContainers", []) + pod["containers"]:
        sc = ctr.get("securityContext", {})
        n = ctr["name"]
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{n}: runAsNonRoot")
        if sc.get("runAsUser") == 0:
            out.append(f"{n}: runAsUser 0")
        if sc.get("privileged"):
            out.append(f"{n}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{n}: allowPrivilegeEscalation")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{n}: capabilities.drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{n}: capabilities.add")
        if "seccompProfile" in sc and sc["seccompProfile"].get("type") not in ("RuntimeDefault", "Localhost"):
            out.append(f"{n}: seccompProfile")
        if any("hostPort" in port for port in ctr.get("ports", [])):
            out.append(f"{n}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{n}: procMount")
    return out


def test_psa_checker_is_not_vacuous():
    pod = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                             "capabilities": {"drop": ["ALL"]}}}]}
    assert psa_restricted_violations(pod) == []
    for breaks in ({"hostNetwork": True}, {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
                   {"securityContext": {"runAsNonRoot": True}},
                   {"containers": [{"name": "c", "securityContext": {"capabilities": {"drop": ["ALL"]}}}]},
                   {"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                                     "capabilities": {"drop": ["NET_RAW"]}}}]}):
        assert psa_restricted_violations({**pod, **breaks}), breaks


@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_every_pod_meets_pod_security_restricted_and_mounts_tls(helm, values):
    for name, pod in pod_specs(render(values)).items():
        assert psa_restricted_violations(pod) == [], name
        assert {"name": "tls", "secret": {"secretName": "rel-sm1km-tls", "defaultMode": 0o440}} in pod["volumes"], name
        (ctr,) = pod["containers"]
        assert {"name": "tls", "mountPath": kube.TLS_MOUNT, "readOnly": True} in ctr["volumeMounts"], name
        env = {e["name"]: e["value"] for e in ctr["env"]}
        for k, v in kube.TLS_ENV.items():  # the same dask config as sm1km.runtime.kube writes
            assert env[k] == v, (name, k)
        if not name.endswith("/scheduler"):  # runner and workers dial tls:// (the operator's tcp:// unused)
            assert re.fullmatch(r"tls://rel-sm1km(-cron|-notebook)?-scheduler\.eo\.svc\.cluster\.local:8786",
                                env["DASK_SCHEDULER_ADDRESS"]), (name, env["DASK_SCHEDULER_ADDRESS"])
        if name.endswith(("/scheduler", "/worker")):
            args = ctr["args"]
            assert args[args.index("--tls-ca-file") + 1] == kube.TLS_CA, name
            assert args[args.index("--tls-cert") + 1] == kube.TLS_CERT, name
            assert args[args.index("--tls-key") + 1] == kube.TLS_KEY, name
    (cm,) = by_kind(render(values), "ConfigMap")
    assert RunConfig.from_dict(yaml.safe_load(cm["data"]["run.yaml"])).cluster.security.tls is True


def test_tls_off_renders_plain_tcp(helm):
    objs = render(None, "--set", "tls.enabled=false")
    assert not by_kind(objs, "Secret")
    for name, pod in pod_specs(objs).items():
        assert "tls" not in {v["name"] for v in pod["volumes"]}, name
        (ctr,) = pod["containers"]
        assert not any(e["name"].startswith("DASK_DISTRIBUTED__COMM") for e in ctr.get("env", [])), name
        assert "--tls-ca-file" not in ctr["args"], name
    (cm,) = by_kind(objs, "ConfigMap")
    assert RunConfig.from_dict(yaml.safe_load(cm["data"]["run.yaml"])).cluster.security.tls is False
    out = run_helm("install", "rel", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                   "--set", "tls.enabled=false").stdout
    assert "WARNING: tls.enabled is false" in out


def test_chart_certificates_work_for_a_dask_tls_cluster(helm, tmp_path):
    """The Secret the chart generates (genCA/genSignedCert) holds a CA and a certificate that dask
    accepts for scheduler, worker and client: a real TLS handshake with the rendered files."""
    import base64

    from distributed import Client, LocalCluster
    from distributed.security import Security

    from sm1km.runtime.cluster import cluster_security

    (secret,) = by_kind(render(None), "Secret")
    assert secret["metadata"]["name"] == "rel-sm1km-tls" and secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}  # the CA's key is not kept
    for k, v in secret["data"].items():
        (tmp_path / k).write_bytes(base64.b64decode(v))
    assert b"PRIVATE KEY" in (tmp_path / "tls.key").read_bytes()
    files = {"tls_ca_file": str(tmp_path / "ca.crt")}
    for role in ("scheduler", "worker", "client"):
        files[f"tls_{role}_cert"] = str(tmp_path / "tls.crt")
        files[f"tls_{role}_key"] = str(tmp_path / "tls.key")
    server = Security(require_encryption=True, **files)
    cfg = RunConfig.from_dict({**yaml.safe_load(by_kind(render(None), "ConfigMap")[0]["data"]["run.yaml"]),
                               "cluster": {"kind": "address", "security": {
                                   "tls": True, "ca_file": files["tls_ca_file"], "cert_file": files["tls_client_cert"],
                                   "key_file": files["tls_client_key"]}}})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tls://", host="127.0.0.1",
                      security=server, dashboard_address=":0") as lc:
        with Client(lc.scheduler_address, security=cluster_security(cfg), timeout="20s") as c:
            assert c.submit(sum, [1, 2]).result(timeout=20) == 3
        # a second render is a different CA (helm template sees no cluster; an installed release
        # keeps its Secret through `lookup`): its certificate is refused
        _rendered.clear()
        (other,) = by_kind(render(None), "Secret")
        assert other["data"]["ca.crt"] != secret["data"]["ca.crt"]
        for k, v in other["data"].items():
            (tmp_path / f"other-{k}").write_bytes(base64.b64decode(v))
        with pytest.raises(OSError):
            Client(lc.scheduler_address, timeout="3s", security=Security(
                tls_ca_file=str(tmp_path / "other-ca.crt"), tls_client_cert=str(tmp_path / "other-tls.crt"),
                tls_client_key=str(tmp_path / "other-tls.key"), require_encryption=True))


def test_cert_manager_resources(helm):
    objs = render(CHART / "examples" / "notebooks-cert-manager.yaml")
    assert not by_kind(objs, "Secret")  # cert-manager writes it
    certs = {c["metadata"]["name"]: c for c in by_kind(objs, "Certificate")}
    issuers = {i["metadata"]["name"]: i for i in by_kind(objs, "Issuer")}
    assert set(certs) == {"rel-sm1km-ca", "rel-sm1km-tls"}
    assert issuers["rel-sm1km-selfsigned"]["spec"] == {"selfSigned": {}}
    assert issuers["rel-sm1km-ca"]["spec"] == {"ca": {"secretName": "rel-sm1km-ca"}}
    ca, leaf = certs["rel-sm1km-ca"]["spec"], certs["rel-sm1km-tls"]["spec"]
    assert ca["isCA"] is True and ca["issuerRef"]["name"] == "rel-sm1km-selfsigned"
    assert leaf["secretName"] == "rel-sm1km-tls" and leaf["issuerRef"] == {
        "name": "rel-sm1km-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert {"server auth", "client auth"} <= set(leaf["usages"])
    assert "rel-sm1km-notebook-scheduler.eo.svc.cluster.local" in leaf["dnsNames"]
    assert leaf["duration"] == "2160h" and leaf["renewBefore"] == "360h"
    for c in certs.values():
        assert c["apiVersion"] == "cert-manager.io/v1"
        assert set(c["spec"]) <= {"isCA", "commonName", "secretName", "duration", "renewBefore", "privateKey",
                                  "issuerRef", "dnsNames", "ipAddresses", "usages"}
    # an operator-provided issuer: no chain of our own
    objs = render(CHART / "examples" / "notebooks-cert-manager.yaml", "--set", "tls.certManager.issuerRef.name=corp-ca",
                  "--set", "tls.certManager.issuerRef.kind=ClusterIssuer")
    assert not by_kind(objs, "Issuer")
    (leaf_obj,) = by_kind(objs, "Certificate")
    assert leaf_obj["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    # an existing Secret: referenced, nothing generated
    objs = render(None, "--set", "tls.source=existing", "--set", "tls.existingSecret=corp-dask-tls")
    assert not by_kind(objs, "Secret") and not by_kind(objs, "Certificate")
    for pod in pod_specs(objs).values():
        assert {"name": "tls", "secret": {"secretName": "corp-dask-tls", "defaultMode": 0o440}} in pod["volumes"]


def _peers_match(peer: dict, labels: dict, ns_labels: dict | None = None) -> bool:
    """Whether a NetworkPolicyPeer (matchLabels only) admits a pod with ``labels`` in a namespace
    with ``ns_labels`` (None: the policy's own namespace)."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        want = peer["namespaceSelector"].get("matchLabels", {})
        if ns_labels is None or any(ns_labels.get(k) != v for k, v in want.items()):
            return False
    elif ns_labels is not None:
        return False
    want = peer.get("podSelector", {}).get("matchLabels", {})
    return all(labels.get(k) == v for k, v in want.items())


def admitted(policies: list[dict], pod_labels: dict, port: int, src_labels: dict, src_ns: dict | None = None) -> bool:
    """NetworkPolicy semantics (ingress, matchLabels): a pod selected by no policy admits all; else
    a connection is admitted when some rule of a selecting policy admits source and port."""
    selecting = [p for p in policies if all(pod_labels.get(k) == v
                                           for k, v in p["spec"]["podSelector"]["matchLabels"].items())]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get("ingress") or []:
            ports = [x["port"] for x in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            if any(_peers_match(peer, src_labels, src_ns) for peer in rule.get("from", [])):
                return True
    return False


def test_network_policy_admits_only_the_release(helm):
    objs = render(None, "--set", "cron.enabled=true")
    pols = by_kind(objs, "NetworkPolicy")
    assert {p["metadata"]["name"] for p in pols} == {"rel-sm1km-scheduler", "rel-sm1km-worker", "rel-sm1km-runner"}
    for p in pols:
        assert p["spec"]["policyTypes"] == ["Ingress"]
    (job,) = by_kind(objs, "DaskJob")
    (dc,) = by_kind(objs, "DaskCluster")
    sched = job["spec"]["cluster"]["spec"]["scheduler"]["metadata"]["labels"]
    worker = dc["spec"]["worker"]["metadata"]["labels"]
    runner = job["spec"]["job"]["metadata"]["labels"]
    (cron,) = by_kind(objs, "CronJob")
    cron_runner = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    other_release = {**sched, "app.kubernetes.io/instance": "other"}
    stranger = {"app": "jupyter"}
    operator_ns = {"kubernetes.io/metadata.name": "dask-operator"}
    for src in (runner, cron_runner, worker, sched):
        assert admitted(pols, sched, 8786, src)
    for src in (other_release, stranger, {}):
        assert not admitted(pols, sched, 8786, src)
    assert not admitted(pols, sched, 8786, {}, operator_ns)  # the operator gets the HTTP API only
    assert admitted(pols, sched, 8787, {"app.kubernetes.io/name": "dask-kubernetes-operator"}, operator_ns)
    for src in (runner, worker, stranger):
        assert not admitted(pols, sched, 8787, src)  # dashboard: opt-in
    # workers: their comm and nanny ports from the release (scheduler, other workers), nothing else
    for port in (8789, 8790):
        assert admitted(pols, worker, port, sched) and admitted(pols, worker, port, worker)
        assert not admitted(pols, worker, port, stranger) and not admitted(pols, worker, port, other_release)
    assert not admitted(pols, worker, 8788, sched) and not admitted(pols, worker, 8786, sched)
    # runners accept nothing
    assert not admitted(pols, runner, 8786, sched) and not admitted(pols, cron_runner, 1234, worker)
    # the worker ports the policy opens are the ones the workers listen on
    args = dc["spec"]["worker"]["spec"]["containers"][0]["args"]
    assert args[args.index("--worker-port") + 1] == "8789" and args[args.index("--nanny-port") + 1] == "8790"
    # the checker itself: without policies everything is admitted
    assert admitted([], sched, 8786, stranger)


def test_network_policy_opt_ins(helm):
    objs = render(CHART / "examples" / "notebooks-cert-manager.yaml")
    pols = by_kind(objs, "NetworkPolicy")
    (dc,) = by_kind(objs, "DaskCluster")
    sched = dc["spec"]["scheduler"]["metadata"]["labels"]
    worker = dc["spec"]["worker"]["metadata"]["labels"]
    jupyter = {"component": "singleuser-server"}
    prometheus, monitoring = {"app.kubernetes.io/name": "prometheus"}, {"kubernetes.io/metadata.name": "monitoring"}
    assert admitted(pols, sched, 8786, jupyter) and not admitted(pols, sched, 8787, jupyter)
    assert not admitted(pols, worker, 8789, jupyter)
    assert admitted(pols, sched, 8787, prometheus, monitoring) and admitted(pols, worker, 8788, prometheus, monitoring)
    assert not admitted(pols, sched, 8786, prometheus, monitoring)
    assert not by_kind(render(None, "--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_scheduler_service_is_cluster_ip_unless_allowed(helm):
    for o in by_kind(render(None, "--set", "cron.enabled=true"), "DaskJob") + \
            by_kind(render(None, "--set", "cron.enabled=true"), "DaskCluster"):
        cluster = o["spec"]["cluster"]["spec"] if o["kind"] == "DaskJob" else o["spec"]
        assert cluster["scheduler"]["service"]["type"] == "ClusterIP"
    proc = run_helm("template", "rel", str(CHART), "--set", "scheduler.serviceType=LoadBalancer", check=False)
    assert proc.returncode != 0 and "allowExternalService" in proc.stderr
    args = ("--set", "scheduler.serviceType=LoadBalancer", "--set", "scheduler.allowExternalService=true")
    (job,) = by_kind(render(None, *args), "DaskJob")
    assert job["spec"]["cluster"]["spec"]["scheduler"]["service"]["type"] == "LoadBalancer"
    out = run_helm("install", "rel", str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args).stdout
    assert "WARNING: the Dask scheduler Service is LoadBalancer" in out
    out = run_helm("install", "rel", str(CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout
    assert "WARNING: the Dask scheduler Service" not in out


@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_every_pod_is_hardened(helm, values):
    objs = render(values)
    pods = pod_specs(objs)
    assert pods
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == kube.RUN_AS_USER, name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] == "rel-sm1km", name
        vols = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in vols["scratch"] and isinstance(vols["scratch"]["emptyDir"], dict), name
        for ctr in pod["containers"]:
            sc = ctr["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"name": "scratch", "mountPath": "/tmp"} in ctr["volumeMounts"], name
            assert re.fullmatch(r"ghcr\.io/sm1km/sm1km:\d+\.\d+\.\d+", ctr["image"]), ctr["image"]
            for e in ctr.get("env", []):  # credentials only by reference
                assert set(e) == {"name", "value"} and not _SECRET.search(e["name"]), e
    for sa in by_kind(objs, "ServiceAccount"):
        if sa["metadata"]["name"] == "rel-sm1km":
            assert sa["automountServiceAccountToken"] is False


def test_s3_secret_is_referenced_where_data_is_read(helm):
    pods = pod_specs(render(CHART / "examples" / "minimal.yaml"))
    for name, pod in pods.items():
        (ctr,) = pod["containers"]
        if name.endswith(("/runner", "/worker")):
            assert ctr["envFrom"] == [{"secretRef": {"name": "sm1km-s3"}}], name
        else:
            assert "envFrom" not in ctr, name
    # without a secret (workload identity): no envFrom at all, and NOTES warns unless annotated
    for pod in pod_specs(render(None)).values():
        assert "envFrom" not in pod["containers"][0]


def test_notes_warn_about_missing_credentials(helm):
    # NOTES.txt is not a manifest: `helm install --dry-run=client` renders it (no cluster contacted)
    out = run_helm("install", "rel", str(CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout
    assert "WARNING: s3.existingSecret is empty" in out
    out = run_helm("install", "rel", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                   "-f", str(CHART / "examples" / "minimal.yaml")).stdout
    assert "WARNING" not in out and "kubectl -n eo logs -f rel-sm1km-runner" in out


def test_runner_and_cluster_wiring(helm):
    objs = render(None)
    (job,) = by_kind(objs, "DaskJob")
    runner = job["spec"]["job"]["spec"]
    (ctr,) = runner["containers"]
    assert ctr["args"] == ["sm1km", "run", "--config", "/etc/sm1km/run.yaml"]
    assert {"name": "config", "mountPath": "/etc/sm1km", "readOnly": True} in ctr["volumeMounts"]
    (cm,) = by_kind(objs, "ConfigMap")
    assert {"name": "config", "configMap": {"name": cm["metadata"]["name"]}} in runner["volumes"]
    assert runner["restartPolicy"] == "Never"
    cluster = job["spec"]["cluster"]["spec"]
    # the operator names the job's cluster after the job; the Service must select its scheduler
    assert cluster["scheduler"]["service"]["selector"] == {"dask.org/cluster-name": job["metadata"]["name"],
                                                           "dask.org/component": "scheduler"}
    w = cluster["worker"]["spec"]["containers"][0]
    assert w["args"][:6] == ["dask", "worker", "--nthreads", "2", "--memory-limit", "8Gi"]
    assert w["resources"]["limits"]["memory"] == "8Gi"  # dask's limit == the container's limit
    assert cluster["scheduler"]["spec"]["containers"][0]["args"] == [
        "dask", "scheduler", "--host", "0.0.0.0", "--protocol", "tls", *kube.tls_cli_args()]


def test_cron_runs_against_the_persistent_cluster(helm):
    objs = render(CHART / "examples" / "autoscaling-cron.yaml")
    assert not by_kind(objs, "DaskJob")  # job.enabled: false in this example
    (cron,) = by_kind(objs, "CronJob")
    (dc,) = by_kind(objs, "DaskCluster")
    name = dc["metadata"]["name"]
    assert name == "rel-sm1km-cron"
    assert dc["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == name
    spec = cron["spec"]
    assert spec["schedule"] == "15 7 * * *" and spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tls://{name}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
    assert env["GDAL_HTTP_MAX_RETRY"] == "5"
    (auto,) = by_kind(objs, "DaskAutoscaler")
    assert auto["spec"] == {"cluster": name, "minimum": 0, "maximum": 20}
    # workload identity instead of a Secret
    (sa,) = [s for s in by_kind(objs, "ServiceAccount") if s["metadata"]["name"] == "rel-sm1km"]
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]
    # spot placement on workers, defaults elsewhere
    w = dc["spec"]["worker"]["spec"]
    assert w["nodeSelector"] == {"node.kubernetes.io/lifecycle": "spot"} and w["tolerations"]
    assert "nodeSelector" not in dc["spec"]["scheduler"]["spec"]
    # the config checksum changes when the run config changes (CronJob pods pick up new configs)
    other = render(CHART / "examples" / "autoscaling-cron.yaml", "--set", "runConfig.name=other")
    (cron2,) = by_kind(other, "CronJob")
    key = "checksum/config"
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"][key] != \
        cron2["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"][key]


def test_daily_update_cron_runs_sm1km_update_on_latest(helm):
    """The CronJob runs `sm1km update` (model pinned, never trains) on period.end: latest; the run
    config it mounts validates as a RunConfig; the DaskJob's own args stay `run`."""
    import yaml

    from sm1km.config import RunConfig

    objs = render(CHART / "examples" / "daily-update.yaml")
    (cron,) = by_kind(objs, "CronJob")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["sm1km", "update", "--config", "/etc/sm1km/run.yaml"]
    (cm,) = [c for c in by_kind(objs, "ConfigMap") if "run.yaml" in c.get("data", {})]
    cfg = RunConfig.from_dict(yaml.safe_load(cm["data"]["run.yaml"]))
    assert cfg.period.is_latest and cfg.inputs.cci.startswith("s3://")
    assert str(cfg.fusion.reference_period.end) == "2020-12-31"
    both = render(None, "--set", "cron.enabled=true")
    (job,) = by_kind(both, "DaskJob")
    assert job["spec"]["job"]["spec"]["containers"][0]["args"][:2] == ["sm1km", "run"]
    (cron,) = by_kind(both, "CronJob")
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["sm1km", "update"]


def test_autoscaler_targets_every_cluster(helm):
    objs = render(None, "--set", "autoscaler.enabled=true", "--set", "cron.enabled=true")
    targets = sorted(a["spec"]["cluster"] for a in by_kind(objs, "DaskAutoscaler"))
    assert targets == ["rel-sm1km", "rel-sm1km-cron"]


def test_gpu_workers(helm):
    objs = render(CHART / "examples" / "gpu-workers.yaml")
    (job,) = by_kind(objs, "DaskJob")
    cluster = job["spec"]["cluster"]["spec"]
    w = cluster["worker"]["spec"]
    assert w["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert w["tolerations"][0]["key"] == "nvidia.com/gpu"
    for pod in (cluster["scheduler"]["spec"], job["spec"]["job"]["spec"]):
        assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})
        assert "tolerations" not in pod
    (cm,) = by_kind(objs, "ConfigMap")
    assert yaml.safe_load(cm["data"]["run.yaml"])["model"]["predict_device"] == "cuda"


def test_rbac_is_least_privilege(helm):
    objs = render(None, "--set", "notebookRbac.enabled=true")
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    (role,) = by_kind(objs, "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"] and "configmaps" not in rule["resources"]
        if rule["apiGroups"] == [""]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}  # core objects: read only
        # no pod-spec escalation: nothing is created, edited or deleted, except the replica count
        # of the chart's own notebook cluster (scale subresources, by name)
        writes = set(rule["verbs"]) - {"get", "list", "watch"}
        if writes:
            assert writes <= {"patch", "update"}, rule
            assert all(r.endswith("/scale") for r in rule["resources"]), rule
            assert rule["resourceNames"] == ["rel-sm1km-notebook", "rel-sm1km-notebook-default"], rule
        assert "create" not in rule["verbs"] and "delete" not in rule["verbs"], rule
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert ("kubernetes.dask.org", "daskclusters", "get") in granted
    assert ("kubernetes.dask.org", "daskclusters/scale", "patch") in granted
    # the fixed cluster the notebooks may resize: the chart's pod template, hardened like the rest
    (dc,) = by_kind(objs, "DaskCluster")
    assert dc["metadata"]["name"] == "rel-sm1km-notebook" and dc["spec"]["worker"]["replicas"] == 0
    assert kube.custom_resource_errors(dc) == []
    for pod in (dc["spec"]["scheduler"]["spec"], dc["spec"]["worker"]["spec"]):
        assert pod["serviceAccountName"] == "rel-sm1km" and psa_restricted_violations(pod) == []
    (rb,) = by_kind(objs, "RoleBinding")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": role["metadata"]["name"]}
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "rel-sm1km-notebook", "namespace": NAMESPACE}]
    # the runtime ServiceAccount is bound to nothing
    off = render(None)  # off by default (the notebook cluster's scheduler is a standing pod)
    assert not by_kind(off, "Role") and not by_kind(off, "RoleBinding") and not by_kind(off, "DaskCluster")


def test_deploy_daskjob_is_the_chart_render(helm):
    """deploy/daskjob.yaml (standalone example) is what the chart renders for examples/minimal.yaml."""
    text = run_helm("template", "sm1km", str(CHART), "-f", str(CHART / "examples" / "minimal.yaml"),
                    "--namespace", "default", "--show-only", "templates/networkpolicy.yaml",
                    "--show-only", "templates/serviceaccount.yaml",
                    "--show-only", "templates/configmap.yaml", "--show-only", "templates/daskjob.yaml").stdout
    fresh = [d for d in yaml.safe_load_all(text) if d]
    committed = [d for d in yaml.safe_load_all((REPO / "deploy" / "daskjob.yaml").read_text()) if d]
    assert committed == fresh, "regenerate deploy/daskjob.yaml with the command in its header"


# -- bad values are rejected -------------------------------------------------------------------

@pytest.mark.parametrize("bad", BAD, ids=[p.stem for p in BAD])
def test_bad_values_are_rejected(helm, bad):
    """`# expect: <text>` heads each file; schema violations fail lint and template, cross-key
    checks (`# rejected-by: template`) fail template/install while lint reports them."""
    lines = bad.read_text().splitlines()
    assert lines[0].startswith("# expect: ")
    expected = lines[0][len("# expect: "):]
    template_only = lines[1].startswith("# rejected-by: template")
    for cmd in (["lint", "--strict", str(CHART)], ["template", "rel", str(CHART)]):
        proc = run_helm(*cmd, "-f", str(bad), check=False)
        out = proc.stdout + proc.stderr
        assert expected in out, f"helm {cmd[0]} did not report the problem of {bad.name}:\n{out[:2000]}"
        if cmd[0] == "lint" and template_only:
            continue
        assert proc.returncode != 0, f"helm {cmd[0]} accepted {bad.name}:\n{out[:2000]}"


@pytest.mark.slow
def test_rendered_commands_and_certificates_form_a_tls_cluster(helm, tmp_path, monkeypatch):
    """The chart's own scheduler and worker commands and environment, with the chart's generated
    Secret as the mounted files, run for real (ports moved to free ones, 127.0.0.1): the workers
    join over TLS on their pinned-port flags, and the runner's config and environment (the dask TLS
    variables, the chart's tls:// address) drive a computation through ``make_client``."""
    import base64
    import json
    import os
    import subprocess
    import sys
    import time

    from sm1km.runtime.cluster import make_client
    from test_kube_spec import _expand, _free_port

    objs = render(None)
    (secret,) = by_kind(objs, "Secret")
    for k, v in secret["data"].items():
        (tmp_path / k).write_bytes(base64.b64decode(v))
    mount = {f"{kube.TLS_MOUNT}/{k}": str(tmp_path / k) for k in secret["data"]}

    def local(value: str) -> str:
        return mount.get(value, value)

    (job,) = by_kind(objs, "DaskJob")
    cluster = job["spec"]["cluster"]["spec"]
    (sctr,) = cluster["scheduler"]["spec"]["containers"]
    (wctr,) = cluster["worker"]["spec"]["containers"]
    (rctr,) = job["spec"]["job"]["spec"]["containers"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    base["DASK_TEMPORARY_DIRECTORY"] = str(tmp_path)
    exe = str(Path(sys.executable).parent / "dask")
    sargs = [local(a) for a in sctr["args"]]
    sargs[sargs.index("--host") + 1] = "127.0.0.1"
    sched_file = tmp_path / "scheduler.json"
    sargs += ["--port", "0", "--dashboard-address", f"127.0.0.1:{_free_port()}", "--scheduler-file", str(sched_file)]
    senv = {**base, **{e["name"]: local(e["value"]) for e in sctr["env"]}}
    procs = [subprocess.Popen([exe, *sargs[1:]], env=senv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        t_end = time.monotonic() + 120
        while not sched_file.exists() or "address" not in sched_file.read_text():
            assert procs[0].poll() is None and time.monotonic() < t_end, "the chart's scheduler did not start"
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tls://127.0.0.1:")
        wenv = {**base, **{e["name"]: local(e["value"]) for e in wctr["env"]}}
        assert wenv["DASK_SCHEDULER_ADDRESS"].startswith("tls://rel-sm1km-scheduler.")
        wenv["DASK_SCHEDULER_ADDRESS"] = address  # the Service name does not resolve here
        wargs = [local(a) for a in _expand(wctr["args"], {"DASK_WORKER_NAME": "chart-worker-0"})]
        for flag in ("--dashboard-address", "--worker-port", "--nanny-port"):
            wargs[wargs.index(flag) + 1] = str(_free_port())
        wargs += ["--host", "127.0.0.1"]
        procs.append(subprocess.Popen([exe, *wargs[1:]], env=wenv, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        # the runner: its env (dask TLS config) and the chart's run.yaml, the address as the operator would write it
        for e in rctr["env"]:
            monkeypatch.setenv(e["name"], local(e["value"]))
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address.replace("tls://", "tcp://"))
        import copy

        import dask

        saved = copy.deepcopy(dask.config.config)
        dask.config.refresh()  # dask reads DASK_* at import: re-read them as a fresh runner process would
        try:
            (cm,) = by_kind(objs, "ConfigMap")
            cfg = RunConfig.from_dict(yaml.safe_load(cm["data"]["run.yaml"]))
            with make_client(cfg) as client:
                client.wait_for_workers(1, timeout=60)
                (waddr,) = client.scheduler_info()["workers"]
                assert waddr.startswith("tls://127.0.0.1:")
                assert client.submit(sum, [4, 5]).result(timeout=30) == 9
        finally:
            monkeypatch.undo()
            dask.config.config.clear()
            dask.config.config.update(saved)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
