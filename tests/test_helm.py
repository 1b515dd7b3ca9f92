"""The Helm chart with the real ``helm`` (pinned, fetched once by tests/helm_tool.py): lint and
render the default and example values, validate every rendered object against the Kubernetes API
schemas (kubernetes-validate) and the dask custom resources against the operator's CRD schemas,
check the security and wiring invariants, and make sure bad values files are rejected."""

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
    assert cluster["scheduler"]["spec"]["containers"][0]["args"] == ["dask", "scheduler", "--host", "0.0.0.0"]


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
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://{name}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
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
    objs = render(None)
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    (role,) = by_kind(objs, "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"] and "configmaps" not in rule["resources"]
        if rule["apiGroups"] == [""]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}  # core objects: read only
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("kubernetes.dask.org", "daskclusters") in granted
    (rb,) = by_kind(objs, "RoleBinding")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": role["metadata"]["name"]}
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "rel-sm1km-notebook", "namespace": NAMESPACE}]
    # the runtime ServiceAccount is bound to nothing
    off = render(None, "--set", "notebookRbac.enabled=false")
    assert not by_kind(off, "Role") and not by_kind(off, "RoleBinding")


def test_deploy_daskjob_is_the_chart_render(helm):
    """deploy/daskjob.yaml (standalone example) is what the chart renders for examples/minimal.yaml."""
    text = run_helm("template", "sm1km", str(CHART), "-f", str(CHART / "examples" / "minimal.yaml"),
                    "--namespace", "default", "--show-only", "templates/serviceaccount.yaml",
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
