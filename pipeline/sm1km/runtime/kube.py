"""Kubernetes layer: the ``DaskCluster`` resource built from the run config, and the ``KubeCluster``
behind ``cluster.kind: kubernetes``.

:func:`build_cluster_spec` is pure (config in, dict out) so it is tested without a cluster: its
output is validated against the DaskCluster CRD schema shipped inside ``dask-kubernetes``
(:func:`validate_custom_resource`, which also rejects unknown fields, as a strict API server would).
:func:`kube_cluster` is a thin context manager around ``dask_kubernetes.operator.KubeCluster``.

Placement: ``cluster.kubernetes.node_selector``/``tolerations``/``worker_gpu`` apply to worker pods
only (the scheduler is small and should not occupy GPU nodes). S3 credentials reach the workers
through ``envFrom: secretRef`` (``env_from_secret``); they never appear in the spec.

TLS (``cluster.security.tls``): the Secret ``cluster.security.secret_name`` (keys ``ca.crt``,
``tls.crt``, ``tls.key``, as the chart and cert-manager write them) is mounted read-only at
:data:`TLS_MOUNT` in both pods; the scheduler listens on ``tls://`` (``--protocol tls --tls-*``),
workers dial ``tls://<name>-scheduler:8786`` (the operator would inject ``tcp://``; it keeps an
address already in the env) and every process gets the dask TLS config in its environment.
:func:`kube_cluster` refuses TLS: ``KubeCluster`` (dask-kubernetes 2026.3) opens its own RPC to the
scheduler without certificates and would wait forever; apply the spec and use ``kind: address``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import re
from pathlib import Path
from typing import Any

from sm1km.config import RunConfig
from sm1km.errors import ConfigError

log = logging.getLogger(__name__)

#: uid/gid of the non-root user in deploy/Dockerfile (the chart's values.yaml uses the same)
RUN_AS_USER = 10001
#: scratch for dask spill, matplotlib/numba caches: the root filesystem is read-only
SCRATCH_MOUNT = "/tmp"

POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

CRD_KINDS = {"DaskCluster": "daskcluster.yaml", "DaskJob": "daskjob.yaml",
             "DaskWorkerGroup": "daskworkergroup.yaml", "DaskAutoscaler": "daskautoscaler.yaml"}

# Service "<name>-scheduler" must be a DNS-1035 label (<= 63 chars): leave room for the suffix.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,51}[a-z0-9])?$")
_CPU_RE = re.compile(r"^([0-9]+(\.[0-9]{1,3})?|[0-9]+m)$")
_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$")
_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "PRIVATE_KEY", "CREDENTIAL")

#: where the TLS Secret (ca.crt, tls.crt, tls.key) is mounted in every pod (the chart uses the same)
TLS_MOUNT = "/etc/sm1km-tls"
TLS_CA, TLS_CERT, TLS_KEY = (f"{TLS_MOUNT}/{f}" for f in ("ca.crt", "tls.crt", "tls.key"))
#: dask config of a process in a TLS pod: clients (runner, notebook) read it, `dask` CLIs too
TLS_ENV: dict[str, str] = {
    "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": TLS_CA,
    **{f"DASK_DISTRIBUTED__COMM__TLS__{role}__{part}": path
       for role in ("CLIENT", "SCHEDULER", "WORKER") for part, path in (("CERT", TLS_CERT), ("KEY", TLS_KEY))},
}


def tls_cli_args() -> list[str]:
    """``dask scheduler`` / ``dask worker`` flags for the mounted TLS Secret."""
    return ["--tls-ca-file", TLS_CA, "--tls-cert", TLS_CERT, "--tls-key", TLS_KEY]


def k8s_memory(value: str, where: str) -> str:
    """Dask-style size (``4GiB``, ``4 GB``, ``4Gi``) as a Kubernetes quantity (``4Gi``)."""
    from dask.utils import parse_bytes

    try:
        n = int(parse_bytes(value))
    except (ValueError, TypeError):
        n = -1
    if n <= 0:
        raise ConfigError(where, f"'{value}' is not a memory size.", "write e.g. 4GiB or 512MiB.")
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("G", 10**9), ("M", 10**6), ("Ki", 2**10), ("k", 10**3)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _cpu(value: str, where: str) -> str:
    if not _CPU_RE.match(str(value)):
        raise ConfigError(where, f"'{value}' is not a Kubernetes CPU quantity.", "write e.g. 2, 0.5 or 500m.")
    return str(value)


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ConfigError("cluster.kubernetes.name", f"'{name}' is not a valid DaskCluster name.",
                          "use 1-53 lowercase letters, digits and '-', starting with a letter.")


def _check_ref(value: str | None, where: str) -> None:
    """Names of existing objects (Secret, ServiceAccount): DNS-1123 subdomains."""
    if value is not None and not re.match(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", value):
        raise ConfigError(where, f"'{value}' is not a Kubernetes object name.",
                          "use the exact lowercase name shown by `kubectl get`.")


def _check_env(env: dict[str, str]) -> list[dict[str, str]]:
    bad = sorted(k for k in env if any(w in k.upper() for w in _SECRET_WORDS))
    if bad:
        raise ConfigError("cluster.kubernetes.env", f"{', '.join(bad)} look like credentials.",
                          "put credentials in a Kubernetes Secret and name it in cluster.kubernetes.env_from_secret.")
    for k in env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            raise ConfigError("cluster.kubernetes.env", f"'{k}' is not a valid environment variable name.",
                              "use letters, digits and '_'.")
    return [{"name": k, "value": str(v)} for k, v in sorted(env.items())]


def adaptive_bounds(cfg: RunConfig) -> tuple[int, int] | None:
    """``(minimum, maximum)`` workers for adaptive scaling, or None for a fixed worker count."""
    k = cfg.cluster.kubernetes
    if k.adaptive_max is None:
        if k.adaptive_min is not None:
            raise ConfigError("cluster.kubernetes.adaptive_max", "adaptive_min is set but adaptive_max is not.",
                              "set both (or neither, for a fixed cluster.n_workers).")
        return None
    lo = k.adaptive_min or 0
    if lo > k.adaptive_max:
        raise ConfigError("cluster.kubernetes.adaptive_min",
                          f"adaptive_min ({lo}) is larger than adaptive_max ({k.adaptive_max}).",
                          "make adaptive_min <= adaptive_max.")
    return lo, k.adaptive_max


def build_cluster_spec(cfg: RunConfig) -> dict[str, Any]:
    """The ``DaskCluster`` resource (a dict) for ``cfg.cluster``: image, worker count and size,
    env, S3 secret, placement and hardened security contexts. Pure; raises ConfigError."""
    from dask_kubernetes.operator import make_cluster_spec

    c = cfg.cluster
    k = c.kubernetes
    _check_name(k.name)
    _check_ref(k.env_from_secret, "cluster.kubernetes.env_from_secret")
    _check_ref(k.service_account, "cluster.kubernetes.service_account")
    env = _check_env(k.env)
    tls = c.security.tls
    if tls:
        if not c.security.secret_name:
            raise ConfigError("cluster.security.secret_name", "cluster.security.tls is on but no Secret is named.",
                              "create a Secret with ca.crt, tls.crt and tls.key (the chart's <release>-tls or "
                              "a cert-manager Certificate) and name it here (docs/security.md).")
        _check_ref(c.security.secret_name, "cluster.security.secret_name")
        env = env + [{"name": n, "value": v} for n, v in TLS_ENV.items()]
    bounds = adaptive_bounds(cfg)
    n_workers = c.n_workers if bounds is None else min(max(c.n_workers, bounds[0]), bounds[1])
    worker_mem = k8s_memory(c.memory_limit, "cluster.memory_limit")
    sched_mem = k8s_memory(k.scheduler_memory, "cluster.kubernetes.scheduler_memory")
    worker_cpu = _cpu(k.worker_cpu, "cluster.kubernetes.worker_cpu")
    sched_cpu = _cpu(k.scheduler_cpu, "cluster.kubernetes.scheduler_cpu")
    if k.scratch_size is not None:
        scratch = {"sizeLimit": k8s_memory(k.scratch_size, "cluster.kubernetes.scratch_size")}
    else:
        scratch = {}

    worker_command = ["dask", "worker", "--nthreads", str(c.threads_per_worker),
                      "--memory-limit", worker_mem]
    if tls:
        worker_command += tls_cli_args()
    spec = copy.deepcopy(make_cluster_spec(name=k.name, image=k.image, n_workers=n_workers, env=env or None,
                                           worker_command=worker_command, idle_timeout=k.idle_timeout_s))
    labels = {"app.kubernetes.io/name": "sm1km", "app.kubernetes.io/instance": k.name,
              "app.kubernetes.io/managed-by": "sm1km"}
    spec["metadata"]["labels"] = labels

    worker_res: dict[str, Any] = {"requests": {"cpu": worker_cpu, "memory": worker_mem},
                                  "limits": {"memory": worker_mem}}
    if k.worker_gpu:
        worker_res["limits"]["nvidia.com/gpu"] = str(k.worker_gpu)
    sched_res = {"requests": {"cpu": sched_cpu, "memory": sched_mem}, "limits": {"memory": sched_mem}}

    sched = spec["spec"]["scheduler"]
    worker = spec["spec"]["worker"]
    # the image has the `dask` command only (no legacy dask-scheduler/dask-worker scripts)
    sched["spec"]["containers"][0]["args"] = ["dask", "scheduler", "--host", "0.0.0.0"] + (
        ["--protocol", "tls", *tls_cli_args()] if tls else [])
    for part, res, component in ((sched, sched_res, "scheduler"), (worker, worker_res, "worker")):
        part["metadata"] = {"labels": {**labels, "app.kubernetes.io/component": component}}
        pod = part["spec"]
        ctr = pod["containers"][0]
        ctr["resources"] = res
        ctr["imagePullPolicy"] = k.image_pull_policy
        ctr["securityContext"] = copy.deepcopy(CONTAINER_SECURITY_CONTEXT)
        ctr["volumeMounts"] = [{"name": "scratch", "mountPath": SCRATCH_MOUNT}]
        if ctr.get("env") is None:
            ctr.pop("env", None)
        else:  # make_cluster_spec shares one env list between scheduler and worker
            ctr["env"] = copy.deepcopy(ctr["env"])
        pod["securityContext"] = copy.deepcopy(POD_SECURITY_CONTEXT)
        pod["volumes"] = [{"name": "scratch", "emptyDir": dict(scratch)}]
        if tls:
            ctr["volumeMounts"].append({"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True})
            pod["volumes"].append({"name": "tls", "secret": {"secretName": c.security.secret_name,
                                                             "defaultMode": 0o440}})
        pod["automountServiceAccountToken"] = False  # no pod here talks to the Kubernetes API
        if k.service_account:
            pod["serviceAccountName"] = k.service_account
    wpod = worker["spec"]
    if tls:  # the operator only injects DASK_SCHEDULER_ADDRESS (tcp://) when the env has none
        wpod["containers"][0]["env"].append({"name": "DASK_SCHEDULER_ADDRESS",
                                             "value": f"tls://{k.name}-scheduler:8786"})
    if k.env_from_secret:
        wpod["containers"][0]["envFrom"] = [{"secretRef": {"name": k.env_from_secret}}]
    if k.node_selector:
        wpod["nodeSelector"] = dict(k.node_selector)
    if k.tolerations:
        wpod["tolerations"] = copy.deepcopy(k.tolerations)
    return spec


# -- CRD schema validation ---------------------------------------------------------------------

def crd_dir() -> Path:
    """Folder of the CRDs shipped inside the installed dask-kubernetes package."""
    import dask_kubernetes

    return Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"


@functools.cache
def _crd_schema(kind: str) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((crd_dir() / CRD_KINDS[kind]).read_text(), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Copy of a CRD ``openAPIV3Schema`` that rejects unknown fields (``additionalProperties: false``
    on every object with declared properties) and declares the top-level apiVersion/kind/metadata.
    A structural CRD silently prunes unknown fields; a typo would otherwise vanish without error."""

    def walk(node):
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if "properties" in out and "additionalProperties" not in out \
                    and not out.get("x-kubernetes-preserve-unknown-fields"):
                out["additionalProperties"] = False
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    s = walk(schema)
    s["properties"] = {**s.get("properties", {}), "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                       "metadata": {"type": "object"}}
    s.setdefault("required", [])
    s["required"] = sorted(set(s["required"]) | {"apiVersion", "kind", "metadata", "spec"})
    return s


@functools.cache
def _validator(kind: str):
    import jsonschema

    return jsonschema.Draft7Validator(strict_schema(_crd_schema(kind)))


def custom_resource_errors(obj: dict[str, Any]) -> list[str]:
    """Schema errors of a dask custom resource (DaskCluster, DaskJob, ...) as ``path: message``."""
    kind = obj.get("kind")
    if kind not in CRD_KINDS:
        return [f"kind: '{kind}' is not a dask-kubernetes custom resource"]
    if obj.get("apiVersion") != "kubernetes.dask.org/v1":
        return [f"apiVersion: '{obj.get('apiVersion')}' is not kubernetes.dask.org/v1"]
    errors = sorted(_validator(kind).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """Raise ConfigError when ``obj`` does not match its CRD schema (unknown fields included)."""
    errors = custom_resource_errors(obj)
    if errors:
        name = obj.get("metadata", {}).get("name", "?")
        raise ConfigError(f"{obj.get('kind')}/{name}", "; ".join(errors[:5]) + ".",
                          "fix cluster.kubernetes in the run config (see docs/kubernetes.md).")


# -- the live cluster (needs a Kubernetes API and the dask operator) ---------------------------

@contextlib.contextmanager
def kube_cluster(cfg: RunConfig):
    """Create (or connect to, when one of that name exists) a DaskCluster from the config; yield
    the ``KubeCluster``; close it on exit (deleting it only if this call created it)."""
    spec = build_cluster_spec(cfg)
    validate_custom_resource(spec)
    bounds = adaptive_bounds(cfg)
    if cfg.cluster.security.tls:
        raise ConfigError("cluster.security.tls", "cluster.kind 'kubernetes' cannot use TLS: dask-kubernetes' "
                          "KubeCluster connects to the scheduler without certificates.",
                          "apply the DaskCluster (sm1km.runtime.kube.build_cluster_spec) with kubectl or use the "
                          "chart's notebook cluster, and connect with cluster.kind: address (docs/security.md).")
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as exc:  # pragma: no cover - k8s extra missing
        raise ConfigError("cluster.kind", f"'kubernetes' needs dask-kubernetes ({exc}).",
                          "pip install 'sm1km[k8s]'.") from None
    k = cfg.cluster.kubernetes
    log.info("creating DaskCluster %s (image %s)", k.name, k.image)
    try:
        cluster = KubeCluster(custom_cluster_spec=spec, namespace=k.namespace, quiet=True)
    except Exception as exc:  # kr8s/kopf/HTTP errors: no credentials, no operator, scheduler failed
        raise ConfigError("cluster.kind", f"cannot start DaskCluster '{k.name}' on Kubernetes "
                          f"({type(exc).__name__}: {exc}).",
                          "check `kubectl auth can-i create daskclusters.kubernetes.dask.org`, that the dask "
                          "operator is installed and the image can be pulled (docs/kubernetes.md).") from exc
    try:
        if bounds is not None:
            cluster.adapt(minimum=bounds[0], maximum=bounds[1])
        yield cluster
    finally:
        cluster.close()
