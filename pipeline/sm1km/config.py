"""The run configuration: one pydantic model, loaded from YAML, with every default in one place.

Unknown keys and invalid values raise :class:`~sm1km.errors.ConfigError` naming the key.
Secrets never live here: S3 credentials come from the environment (``AWS_ACCESS_KEY_ID`` …)
or a Kubernetes Secret mounted as environment variables.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sm1km.core.grid import DEFAULT_FACTOR, BBox, FineGrid, Region, snap_bbox
from sm1km.errors import ConfigError
from sm1km.redact import find_secret_keys, redact

if TYPE_CHECKING:
    import pandas as pd


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionConfig(_Strict):
    """Geographic box in degrees; snapped outward to whole 0.25° cells."""

    west: float = Field(ge=-180, le=180)
    south: float = Field(ge=-90, le=90)
    east: float = Field(ge=-180, le=180)
    north: float = Field(ge=-90, le=90)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.west < self.east:
            raise ValueError(f"west ({self.west}) must be less than east ({self.east})")
        if not self.south < self.north:
            raise ValueError(f"south ({self.south}) must be less than north ({self.north})")
        return self

    def bbox(self) -> BBox:
        return BBox(self.west, self.south, self.east, self.north)


class PeriodConfig(_Strict):
    """Inclusive UTC days. ``end: latest`` = the last day for which every daily input exists,
    resolved by ``sm1km.stages.ingest.latest.resolve_latest`` (ingest does it) before any use."""

    start: dt.date
    end: dt.date | Literal["latest"]

    @model_validator(mode="after")
    def _ordered(self):
        if self.end != "latest" and self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self

    @property
    def is_latest(self) -> bool:
        return self.end == "latest"

    @property
    def last_day(self) -> dt.date:
        """``end`` as a date (a ConfigError while it is still ``latest``)."""
        if isinstance(self.end, str):
            raise ConfigError("period.end", "'latest' has not been resolved to a day yet.",
                              "resolve it first (sm1km.stages.ingest.latest.resolve_latest, done by ingest).")
        return self.end

    @property
    def n_days(self) -> int:
        return (self.last_day - self.start).days + 1


class GridConfig(_Strict):
    factor: int = Field(DEFAULT_FACTOR, ge=1, le=240, description="fine pixels per 0.25° cell side")
    tile_cells: int = Field(4, ge=1, le=1440, description="master shard side in 0.25° cells")
    time_block_days: int = Field(128, ge=1, le=3660,
                                 description="master shard length in days (one downscale task per shard)")
    inner_days: int = Field(2, ge=1, le=3660,
                            description="master inner chunk length in days (the unit a reader fetches)")
    inner_cells: int = Field(2, ge=1, le=1440, description="master inner chunk side in 0.25° cells")


_SECRET_KEYS = {"key", "secret", "token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                "password", "session_token"}


def _no_secret_kwargs(v: dict[str, Any]) -> dict[str, Any]:
    bad = sorted(set(find_secret_keys(v)) | {k for k in v if k.lower() in _SECRET_KEYS})
    if bad:
        raise ValueError(f"credentials ({', '.join(bad)}) are not allowed in the config; "
                         "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment")
    return v


def _no_url_userinfo(v: str | None) -> str | None:
    if v and "://" in v and "@" in v.split("://", 1)[1].split("/", 1)[0]:
        raise ValueError("credentials in the URL (user:password@host) are not allowed in the config; "
                         "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment")
    return v


def _s3_options(anon: bool, client_kwargs: Mapping[str, Any], region_name: str | None,
                endpoint_url: str | None) -> dict[str, Any]:
    """s3fs storage options from a config section's S3 settings (credentials: environment)."""
    opts: dict[str, Any] = {"anon": anon}
    ck = dict(client_kwargs)
    if region_name:
        ck.setdefault("region_name", region_name)
    if ck:
        opts["client_kwargs"] = ck
    if endpoint_url:
        opts["endpoint_url"] = endpoint_url
    return opts


class StoreConfig(_Strict):
    root: str = Field(description="local path or fsspec URL (s3://bucket/prefix) of the run's stores")
    endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, moto, Ceph); None = AWS")
    anon: bool = Field(False, description="anonymous access (public buckets); else credentials from env")
    region_name: str | None = None
    client_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("client_kwargs")
    @classmethod
    def _no_secrets(cls, v):
        return _no_secret_kwargs(v)

    @field_validator("endpoint_url", "root")
    @classmethod
    def _no_userinfo(cls, v):
        return _no_url_userinfo(v)

    def storage_options(self) -> dict[str, Any]:
        """fsspec storage options for ``root`` (empty for local paths). Credentials: environment."""
        if not self.root.startswith(("s3://", "s3a://")):
            return {}
        return _s3_options(self.anon, self.client_kwargs, self.region_name, self.endpoint_url)

    def url(self, *parts: str) -> str:
        """URL of a child of the root (``url('master.zarr')``)."""
        base = self.root.rstrip("/")
        return "/".join([base, *[p.strip("/") for p in parts]])


#: an ``inputs.*`` entry: a local or ``s3://`` path/glob, an HTTPS URL, a ``{date:%Y%m%d}`` URL
#: template, or a list of these (docs/inputs.md, "Inputs in object storage and over HTTPS")
InputSpec = str | list[str]


class PredictorInputs(_Strict):
    """Globs of 1 km predictor rasters (GeoTIFF / MODIS HDF). Dates are parsed from file names."""

    lst_day: InputSpec | None = None
    lst_night: InputSpec | None = None
    ndvi: InputSpec | None = None
    elevation: InputSpec | None = None
    slope: InputSpec | None = None
    twi: InputSpec | None = None
    clay: InputSpec | None = None
    sand: InputSpec | None = None
    land_cover: InputSpec | None = None


class PredictorSources(_Strict):
    """What ``sm1km predictors`` derives the static predictors from (docs/data.md): DEM tiles
    (GeoTIFF, EPSG:4326: Copernicus GLO-90, SRTM), SoilGrids clay/sand (g/kg) and a land-cover map."""

    dem: InputSpec | None = Field(None, description="DEM GeoTIFF tiles (glob or list) -> elevation, slope, twi")
    clay: InputSpec | None = Field(None, description="SoilGrids clay GeoTIFF/VRT in g/kg -> clay fraction")
    sand: InputSpec | None = Field(None, description="SoilGrids sand GeoTIFF/VRT in g/kg -> sand fraction")
    land_cover: InputSpec | None = Field(None, description="land-cover raster(s) -> IGBP codes (mode)")
    land_cover_scheme: Literal["worldcover", "mcd12q1"] = Field(
        "worldcover", description="classes of land_cover: ESA WorldCover (10..100) or MCD12Q1 LC_Type1 IGBP")


class InputStorageConfig(_Strict):
    """Where ``s3://`` inputs live when not in the store's object storage (credentials: environment)."""

    endpoint_url: str | None = Field(None, description="S3 endpoint of the inputs; None = AWS")
    anon: bool = Field(False, description="anonymous access (public buckets)")
    region_name: str | None = None
    client_kwargs: dict[str, Any] = Field(default_factory=dict)
    http_timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds per HTTP(S) request")

    @field_validator("client_kwargs")
    @classmethod
    def _no_secrets(cls, v):
        return _no_secret_kwargs(v)

    @field_validator("endpoint_url")
    @classmethod
    def _no_userinfo(cls, v):
        return _no_url_userinfo(v)

    def storage_options(self) -> dict[str, Any]:
        return _s3_options(self.anon, self.client_kwargs, self.region_name, self.endpoint_url)


def _spec_list(v: InputSpec | None) -> list[str]:
    return [] if v is None else ([v] if isinstance(v, str) else list(v))


class InputsConfig(_Strict):
    cci: InputSpec | None = Field(None, description="ESA CCI SM COMBINED daily netCDF files (glob, list, template)")
    era5: InputSpec | None = Field(None, description="ERA5 swvl1 netCDF/GRIB files (glob, list, template)")
    era5_lsm: str | None = Field(None, description="ERA5 land-sea mask file (optional)")
    ismn: InputSpec | None = Field(None, description="ISMN download folder or zip (Header+values or CEOP)")
    predictors: PredictorInputs = Field(default_factory=PredictorInputs)
    predictor_sources: PredictorSources | None = Field(
        None, description="downloads `sm1km predictors` derives the static predictor rasters from")
    truth: str | None = Field(None, description="synthetic-world truth store (evaluation only)")
    storage: InputStorageConfig | None = Field(
        None, description="object storage of s3:// inputs (default: the store's endpoint and options)")

    @field_validator("cci", "era5", "ismn")
    @classmethod
    def _not_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("an empty list; leave the key out (null) instead")
        return v

    def specs(self) -> dict[str, list[str]]:
        """Every configured entry as a list of paths/URLs/templates (``predictors.<key>`` named so)."""
        out = {k: _spec_list(getattr(self, k)) for k in ("cci", "era5", "era5_lsm", "ismn")}
        out.update({f"predictors.{k}": _spec_list(v) for k, v in self.predictors.model_dump().items()})
        return {k: v for k, v in out.items() if v}


class ReferencePeriodConfig(_Strict):
    """The days the fusion parameters are fitted on (inclusive ISO dates)."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self):
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self


class FusionConfig(_Strict):
    method: Literal["meanstd", "cdf"] = "meanstd"
    min_overlap_days: int = Field(20, ge=2, description="CCI+ERA5 days a pixel needs for its own matching")
    neighbourhood_cells: int = Field(2, ge=0, le=20, description="radius for the regional fallback")
    space_chunk: int = Field(16, ge=1, le=1440, description="0.25° cells per chunk side for fusion")
    reference_period: ReferencePeriodConfig | None = Field(
        None, description="days the rescaling parameters are fitted on, once (default: the period of the "
                          "run that first fits them); later days reuse them")


class ModelConfig(_Strict):
    path: str | None = Field(None, description="model file (model.ubj); default <root>/model/model.ubj")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$",
                               description="pin the model: `update`/`downscale` refuse a stored model with another sha256")
    algorithm: Literal["auto", "rf", "gbt"] = "auto"
    cv_folds: int = Field(5, ge=2, le=20)
    min_station_days: int = Field(10, ge=1)
    min_hours_per_day: int = Field(12, ge=1, le=24)
    predict_device: Literal["cpu", "cuda"] = "cpu"
    n_threads: int = Field(1, ge=0, description="xgboost threads per prediction task (0 = all)")


class KubernetesConfig(_Strict):
    image: str = "ghcr.io/sm1km/sm1km:0.1.0"
    namespace: str | None = None
    name: str = "sm1km"
    service_account: str | None = None
    env_from_secret: str | None = Field(None, description="Secret holding AWS_ACCESS_KEY_ID etc.")
    adaptive_min: int | None = Field(None, ge=0)
    adaptive_max: int | None = Field(None, ge=1)
    worker_cpu: str = "2"
    node_selector: dict[str, str] = Field(default_factory=dict)
    # worker placement/extras (node_selector and tolerations apply to worker pods only)
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="worker pod tolerations")
    worker_gpu: int = Field(0, ge=0, le=16, description="nvidia.com/gpu per worker (predict_device: cuda)")
    scheduler_cpu: str = "1"
    scheduler_memory: str = "2GiB"
    env: dict[str, str] = Field(default_factory=dict, description="extra env on scheduler and workers (no secrets)")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    idle_timeout_s: int = Field(0, ge=0, description="delete the DaskCluster after this idle time (0 = never)")
    scratch_size: str | None = Field(None, description="sizeLimit of the /tmp emptyDir (dask spill)")


class SecurityConfig(_Strict):
    """TLS between the client, the scheduler and the workers (dask ``distributed.security.Security``,
    mutual TLS: every party shows a certificate signed by the cluster's CA). Paths only, never key
    material: an unset path falls back to dask's own config (``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``,
    ``..._TLS__CLIENT__CERT``, ``..._TLS__CLIENT__KEY``), which the Helm chart sets to its mounted Secret."""

    tls: bool = Field(False, description="TLS (tls:// addresses) for every connection to and in the cluster")
    ca_file: str | None = Field(None, description="PEM CA certificate (default: dask config comm.tls.ca-file)")
    cert_file: str | None = Field(None, description="PEM client certificate (default: comm.tls.client.cert)")
    key_file: str | None = Field(None, description="PEM client key (default: comm.tls.client.key)")
    secret_name: str | None = Field(None, description="kubernetes: Secret (ca.crt, tls.crt, tls.key) mounted "
                                                      "into the scheduler and worker pods")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _a_path_not_a_pem(cls, v):
        if v is not None and ("-----BEGIN" in v or "\n" in v):
            raise ValueError("give the path of a PEM file (a mounted Secret), never the certificate or key itself")
        return v


class ClusterConfig(_Strict):
    kind: Literal["local", "address", "kubernetes", "synchronous"] = "local"
    address: str | None = Field(None, description="scheduler address; default $DASK_SCHEDULER_ADDRESS")
    n_workers: int = Field(2, ge=1, le=10000)
    threads_per_worker: int = Field(1, ge=1, le=256)
    memory_limit: str = "4GiB"
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)


class NetcdfExportConfig(_Strict):
    period: Literal["month", "year"] | None = Field(
        None, description="one netCDF file per month or per year (default: month for the daily product, "
                          "year for the monthly)")


class ExportConfig(_Strict):
    """What ``sm1km run`` / ``update`` export (the pipeline's ``export`` step) and the netCDF files' period."""

    formats: tuple[Literal["geotiff", "hdf5", "netcdf"], ...] = Field(
        ("geotiff", "hdf5"), min_length=1, description="daily exports of the pipeline's export step")
    netcdf: NetcdfExportConfig = Field(default_factory=NetcdfExportConfig)

    @field_validator("formats")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"formats repeat: {list(v)}")
        return v


class SeedsConfig(_Strict):
    synth: int = 20240601
    withhold: int = 7
    train: int = 42


class RunConfig(_Strict):
    """A whole run: where, when, on which grid, from which inputs, into which store, on which cluster."""

    name: str = "sm1km-run"
    region: RegionConfig
    period: PeriodConfig
    grid: GridConfig = Field(default_factory=GridConfig)
    store: StoreConfig
    inputs: InputsConfig = Field(default_factory=InputsConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    # -- derived --------------------------------------------------------------------------
    @property
    def coarse_region(self) -> Region:
        return snap_bbox(self.region.bbox())

    @property
    def fine_grid(self) -> FineGrid:
        return FineGrid(self.grid.factor)

    @property
    def model_path(self) -> str:
        return self.model.path or self.store.url("model", "model.ubj")

    def dates(self) -> pd.DatetimeIndex:
        import pandas as pd

        return pd.date_range(self.period.start, self.period.last_day, freq="D")

    def with_end(self, end: dt.date) -> RunConfig:
        """This config with ``period.end`` set (how ``latest`` is resolved)."""
        return self.model_copy(update={"period": PeriodConfig(start=self.period.start, end=end)})

    def redacted(self) -> dict:
        """The config as a plain dict for provenance attrs and logs: credentials the config cannot
        refuse (query strings of signed input URLs, secrets nested anywhere) masked (:mod:`sm1km.redact`)."""
        out: dict[str, Any] = redact(self.model_dump(mode="json"))
        return out

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "<config>") -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError(source, "the config must be a YAML mapping of keys to values.",
                              "start from `sm1km config --example`.")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc, source) from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> RunConfig:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(str(p), "config file not found.", "pass the path of an existing YAML file.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(p), f"cannot read config file ({exc}).", "check the file and its permissions.") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(str(p), f"not valid YAML ({exc}).", "fix the YAML syntax.") from None
        cfg = cls.from_dict(data, source=str(p))
        return cfg._resolve_relative(p.parent)

    def _resolve_relative(self, base: Path) -> RunConfig:
        """Local relative paths in the config are relative to the config file's folder."""

        def fix(v):
            if isinstance(v, list):
                return [fix(x) for x in v]
            if v is None or "://" in v or os.path.isabs(v):
                return v
            return str((base / v).resolve())

        data = self.model_dump()
        data["store"]["root"] = fix(data["store"]["root"])
        if data["model"]["path"]:
            data["model"]["path"] = fix(data["model"]["path"])
        for k in ("cci", "era5", "era5_lsm", "ismn", "truth"):
            data["inputs"][k] = fix(data["inputs"][k])
        for k, v in data["inputs"]["predictors"].items():
            data["inputs"]["predictors"][k] = fix(v)
        if data["inputs"].get("predictor_sources"):
            for k in ("dem", "clay", "sand", "land_cover"):
                data["inputs"]["predictor_sources"][k] = fix(data["inputs"]["predictor_sources"][k])
        return type(self).model_validate(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in exc.errors():
        key = ".".join(str(x) for x in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        elif e["type"] == "missing":
            lines.append(f"missing required key '{key}'")
        else:
            lines.append(f"invalid value for '{key}': {e['msg']}")
    return ConfigError(source, "; ".join(lines) + ".",
                       "compare with `sm1km config --example` and docs/configuration.md.")


EXAMPLE_CONFIG = """\
# sm1km run configuration (YAML). Every key is documented in docs/configuration.md.
name: demo-run
region:            # degrees; snapped outward to whole 0.25-degree cells
  west: 10.0
  south: 44.0
  east: 14.0
  north: 48.0
period:            # inclusive, ISO dates (UTC days)
  start: 2020-04-01
  end: 2020-06-29
grid:
  factor: 30           # fine pixels per 0.25-degree cell side: 30 -> 1/120 deg (~0.93 km)
  tile_cells: 4         # master shard side, in 0.25-degree cells (4 -> 120x120 px)
  time_block_days: 128  # master shard length in days (~3 objects per pixel-year)
  inner_days: 2         # master inner chunk: 2 days x inner_cells (2 -> 60x60 px), see docs/master-store.md
  inner_cells: 2
store:
  root: ./work/store   # local path or s3://bucket/prefix
  endpoint_url: null   # e.g. http://minio:9000 ; credentials come from AWS_* environment variables
  anon: false
inputs:
  cci: ./work/inputs/cci/*.nc          # ESA CCI SM COMBINED daily netCDF
  era5: ./work/inputs/era5/*.nc        # ERA5 swvl1 netCDF or GRIB
  era5_lsm: null
  ismn: ./work/inputs/ismn             # ISMN download (folder or zip)
  predictors:
    lst_day: ./work/inputs/predictors/lst_day_*.tif
    lst_night: ./work/inputs/predictors/lst_night_*.tif
    ndvi: ./work/inputs/predictors/ndvi_*.tif
    elevation: ./work/inputs/predictors/elevation.tif
    slope: ./work/inputs/predictors/slope.tif
    twi: ./work/inputs/predictors/twi.tif
    clay: ./work/inputs/predictors/clay.tif
    sand: ./work/inputs/predictors/sand.tif
    land_cover: ./work/inputs/predictors/land_cover.tif
  truth: null                          # synthetic world only: truth store for evaluation
fusion:
  method: meanstd      # meanstd (published) or cdf
  min_overlap_days: 20
  neighbourhood_cells: 2
  space_chunk: 16
  reference_period: null  # {start, end}: fit the rescaling once on these days (default: the first run's period)
model:
  path: null           # default: <store.root>/model/model.ubj
  algorithm: auto      # auto (best under station-grouped CV), rf, gbt
  cv_folds: 5
  min_station_days: 10
  min_hours_per_day: 12
  predict_device: cpu  # cpu or cuda
  n_threads: 1
cluster:
  kind: local          # local, address ($DASK_SCHEDULER_ADDRESS), kubernetes, synchronous
  address: null
  n_workers: 2
  threads_per_worker: 1
  memory_limit: 4GiB
  security:
    tls: false         # true: tls:// with the CA/cert/key below (paths; default: dask's comm.tls config)
seeds:
  synth: 20240601
  withhold: 7
  train: 42
export:               # what `sm1km run` / `update` export (docs/exports.md)
  formats: [geotiff, hdf5]   # add netcdf for CF netCDF-4 files
  netcdf:
    period: null      # month or year (default: month for daily data, year for monthly)
"""
