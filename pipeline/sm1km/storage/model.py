"""The model artifact: ``model.ubj`` (XGBoost booster, UBJSON) + ``model.json`` (its card) and the
optional ``uncertainty.ubj`` (quantile booster), on a local path or any fsspec URL (``s3://``).

The card records the feature schema and the sha256 of every booster file. :func:`load_model`
re-checks both and refuses a mismatch with :class:`~sm1km.errors.ModelError`, so inference never
runs a model on features it was not trained on, nor a corrupted/tampered file.

What the booster's raw output becomes (residual added back, clip, NaN over sea; the uncertainty
from the quantile pair) is the pure ``sm1km.core.predict``; this module is the files: read, hash,
schema check, parse, and the in-place prediction call.

Caching: a dask worker calls :func:`load_model` once per task; the booster is parsed once per
process. The cache key is ``(url, card sha256, size + modification stamp of the file, options)``,
so loading again costs one small read of ``model.json`` plus one ``info`` call; a file rewritten in
place (new stamp) is re-read and re-verified. :func:`clear_model_cache` empties it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sm1km.core.features import FEATURE_SCHEMA
from sm1km.core.predict import TARGET_KINDS, check_features, sm_from_output, uncertainty_from_quantiles
from sm1km.errors import ModelError
from sm1km.storage import store

if TYPE_CHECKING:
    import xgboost as xgb

log = logging.getLogger(__name__)

CARD_NAME = "model.json"
UNCERTAINTY_NAME = "uncertainty.ubj"
QUANTILES = (0.16, 0.84)


def card_url(model_url: str) -> str:
    """URL of the card beside ``model_url`` (``.../model.ubj`` -> ``.../model.json``)."""
    return _sibling(model_url, CARD_NAME)


def _sibling(url: str, name: str) -> str:
    head, _, _ = url.rstrip("/").rpartition("/")
    return f"{head}/{name}" if head else name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(url: str, storage_options: Mapping[str, Any] | None, what: str) -> bytes:
    fs, path = store.filesystem(url, storage_options)
    try:
        raw: bytes = fs.cat_file(path)
        return raw
    except FileNotFoundError:
        raise ModelError(url, f"{what} not found.", "run `sm1km train --config run.yaml` first, "
                         "or set model.path to an existing model.ubj.") from None
    except Exception as exc:
        raise ModelError(url, f"cannot read {what} ({type(exc).__name__}: {exc}).",
                         "check the URL and the credentials.") from None


def schema_problems(schema: Mapping[str, Any] | None, expected: Mapping[str, Any] = FEATURE_SCHEMA) -> list[str]:
    """Differences between a model's feature schema and the code's (empty list = compatible)."""
    if not isinstance(schema, Mapping):
        return ["the card has no feature_schema"]
    out = []
    if str(schema.get("version")) != str(expected["version"]):
        out.append(f"schema version {schema.get('version')!r} != {expected['version']!r}")
    if list(schema.get("names", [])) != list(expected["names"]):
        got, want = list(schema.get("names", [])), list(expected["names"])
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(got, want)) if a != b][:3]
        out.append(f"feature names differ (model {len(got)}, code {len(want)}; first differences: "
                   f"{'; '.join(diff) or 'length'})")
    if list(schema.get("units", [])) != list(expected["units"]):
        out.append("feature units differ")
    return out


# --------------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------------
def save_model(url: str, booster: xgb.Booster, card: Mapping[str, Any] | None = None, *,
               uncertainty_booster: xgb.Booster | None = None,
               schema: Mapping[str, Any] | None = None, storage_options: Mapping[str, Any] | None = None
               ) -> dict[str, str]:
    """Write ``model.ubj`` at ``url``, ``uncertainty.ubj`` (if given) and ``model.json`` beside it.

    ``card``: any JSON-able facts (CV metrics, hyper-parameters, ...); this function adds
    ``feature_schema`` (default :data:`FEATURE_SCHEMA`) and ``files`` (name -> sha256). The card is
    written last, so a crash never leaves a card that points at a missing booster.
    Returns ``{"model": url, "card": ..., ["uncertainty": ...]}``.
    """
    raw = bytes(booster.save_raw(raw_format="ubj"))
    files: dict[str, dict[str, Any]] = {posixpath.basename(url.rstrip("/")): {"sha256": _sha256(raw), "bytes": len(raw)}}
    store.put_atomic(url, raw, storage_options)
    urls = {"model": url}
    if uncertainty_booster is not None:
        uraw = bytes(uncertainty_booster.save_raw(raw_format="ubj"))
        uurl = _sibling(url, UNCERTAINTY_NAME)
        store.put_atomic(uurl, uraw, storage_options)
        files[UNCERTAINTY_NAME] = {"sha256": _sha256(uraw), "bytes": len(uraw), "quantiles": list(QUANTILES)}
        urls["uncertainty"] = uurl
    body = dict(card or {})
    body["feature_schema"] = dict(schema or FEATURE_SCHEMA)
    body["files"] = files
    body["model_file"] = posixpath.basename(url.rstrip("/"))
    curl = card_url(url)
    store.write_json(curl, body, storage_options, indent=2, newline=True, default=_json_default)
    urls["card"] = curl
    log.info("model written: %s (sha256 %s)", url, files[body["model_file"]]["sha256"][:12])
    return urls


def _json_default(o: object) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A verified model: ``predict(X)`` (m3/m3) and ``predict_uncertainty(X)`` on feature matrices.

    Thread-safe (XGBoost's in-place prediction). Rows whose ``sm_25km`` feature is NaN (sea, no
    data) predict NaN; predictions are clipped to the physical range [0, 1] m3/m3. A card with
    ``target_kind: residual`` means the booster learned ``y − sm_25km``: ``predict`` adds it back.
    """

    url: str
    card: dict[str, Any]
    booster: xgb.Booster
    uncertainty_booster: xgb.Booster | None = None
    n_threads: int = 1
    device: str = "cpu"

    @property
    def feature_names(self) -> list[str]:
        return list(self.card["feature_schema"]["names"])

    @property
    def sha256(self) -> str:
        digest: str = self.card["files"][self.card["model_file"]]["sha256"]
        return digest

    @property
    def target_kind(self) -> str:
        """``residual``: the booster predicts y − sm_25km; ``sm``: it predicts y."""
        kind: str = self.card.get("target_kind", "sm")
        return kind

    @property
    def has_uncertainty(self) -> bool:
        return self.uncertainty_booster is not None

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Soil moisture (m3/m3, float32 ``(n,)``) for feature rows ``X`` (``(n, N_FEATURES)``)."""
        rows = check_features(X, self.url)
        if rows.shape[0] == 0:
            return np.empty(0, np.float32)
        y = np.asarray(self.booster.inplace_predict(rows), dtype=np.float32).reshape(-1)
        return sm_from_output(y, rows, self.target_kind)

    def predict_uncertainty(self, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Half the 16–84 % quantile range of the error (m3/m3, ≈ 1 σ), float32 ``(n,)``."""
        if self.uncertainty_booster is None:
            raise ModelError(self.url, "this model has no uncertainty model (uncertainty.ubj).",
                             "re-train with `sm1km train`, which writes it.")
        rows = check_features(X, self.url)
        if rows.shape[0] == 0:
            return np.empty(0, np.float32)
        q = np.asarray(self.uncertainty_booster.inplace_predict(rows), dtype=np.float32).reshape(rows.shape[0], -1)
        return uncertainty_from_quantiles(q, rows)


def _booster_from(raw: bytes, n_threads: int, device: str) -> xgb.Booster:
    import xgboost as xgb

    b = xgb.Booster()
    b.load_model(bytearray(raw))
    b.set_param({"nthread": int(n_threads), "device": device})
    return b


def _verified_bytes(url: str, expected: str, storage_options: Mapping[str, Any] | None, what: str) -> bytes:
    raw = _read_bytes(url, storage_options, what)
    got = _sha256(raw)
    if got != expected:
        raise ModelError(url, f"{what} is corrupt or was modified: sha256 {got[:16]}… does not match the card "
                         f"({expected[:16]}…).", "re-run `sm1km train`, or restore the file that belongs to "
                         "this model.json.")
    return raw


def _stamp(url: str, storage_options: Mapping[str, Any] | None) -> str:
    fs, path = store.filesystem(url, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise ModelError(url, "model file not found.", "run `sm1km train --config run.yaml` first, "
                         "or set model.path to an existing model.ubj.") from None
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('ETag') or ''}"


def _options_key(storage_options: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(storage_options or {}), sort_keys=True, default=str)


@functools.lru_cache(maxsize=8)
def _load_cached(url: str, card_text: str, stamp: str, options_key: str, n_threads: int, device: str) -> LoadedModel:
    storage_options = json.loads(options_key)
    try:
        card = json.loads(card_text)
    except json.JSONDecodeError as exc:
        raise ModelError(card_url(url), f"model card is not valid JSON ({exc}).", "re-run `sm1km train`.") from None
    problems = schema_problems(card.get("feature_schema"))
    if card.get("target_kind", "sm") not in TARGET_KINDS:
        problems.append(f"unknown target_kind {card.get('target_kind')!r}")
    if problems:
        raise ModelError(url, "the model's feature schema does not match this sm1km's feature builder: "
                         + "; ".join(problems) + ".",
                         "re-train the model with this sm1km version (`sm1km train`), or use the sm1km "
                         "version that trained it.")
    name = card.get("model_file") or posixpath.basename(url.rstrip("/"))
    files = card.get("files") or {}
    if name not in files:
        raise ModelError(card_url(url), f"the card lists no sha256 for {name}.", "re-run `sm1km train`.")
    booster = _booster_from(_verified_bytes(url, files[name]["sha256"], storage_options, "model file"),
                            n_threads, device)
    unc = None
    if UNCERTAINTY_NAME in files:
        uurl = _sibling(url, UNCERTAINTY_NAME)
        unc = _booster_from(_verified_bytes(uurl, files[UNCERTAINTY_NAME]["sha256"], storage_options,
                                            "uncertainty model"), n_threads, device)
    log.info("model loaded: %s (sha256 %s)", url, files[name]["sha256"][:12])
    return LoadedModel(url=url, card=card, booster=booster, uncertainty_booster=unc, n_threads=n_threads,
                       device=device)


def load_model(path: str, storage_options: Mapping[str, Any] | None = None, *, n_threads: int = 1,
               device: str = "cpu") -> LoadedModel:
    """Load and verify ``model.ubj`` (+ card, + ``uncertainty.ubj``); cached per process.

    Raises :class:`ModelError` if a file is missing, its sha256 differs from the card, or the
    card's feature schema differs from :data:`sm1km.core.features.FEATURE_SCHEMA`.
    """
    text = _read_bytes(card_url(path), storage_options, "model card (model.json)").decode("utf-8", "replace")
    stamp = _stamp(path, storage_options)
    return _load_cached(path, text, stamp, _options_key(storage_options), int(n_threads), str(device))


def clear_model_cache() -> None:
    """Forget every cached model (tests; a long-lived process that swaps models)."""
    _load_cached.cache_clear()
