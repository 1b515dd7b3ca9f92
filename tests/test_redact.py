"""Secrets are redacted wherever they hide, and text from input files is data ([14]).

Planted in: a signed HTTPS input URL (query string), URL userinfo, a secret nested in
``client_kwargs``; checked in the config's checks, the provenance attrs every store carries, log
lines and error messages. A station name with ``$`` (matplotlib mathtext) goes through the report.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sm1km.config import RunConfig
from sm1km.errors import ConfigError
from sm1km.redact import (
    MASK,
    RedactingFilter,
    find_secret_keys,
    plain_label,
    redact,
    redact_text,
    redact_url,
)
from sm1km.storage.attrs import provenance_attrs

SIG = "planted-signature-0f9e8d7c6b5a"
PASSWORD = "planted-password-1a2b3c"


def _cfg(root, **inputs) -> dict:
    return {"region": {"west": 0, "east": 1, "south": 40, "north": 41},
            "period": {"start": "2020-04-01", "end": "2020-04-12"},
            "store": {"root": str(root)}, "inputs": inputs}


def test_redact_url_forms():
    assert redact_url(f"https://u:{PASSWORD}@host/a.nc") == f"https://{MASK}@host/a.nc"
    red = redact_url(f"https://host/a_{{date:%Y%m%d}}.nc?X-Amz-Signature={SIG}&X-Amz-Expires=3600#frag")
    assert SIG not in red and "X-Amz-Signature=***" in red and red.endswith("#frag")
    assert redact_url("s3://bucket/prefix/*.nc") == "s3://bucket/prefix/*.nc"
    assert redact_text(f"cannot read https://x/y?token={SIG} (404)") == "cannot read https://x/y?token=*** (404)"
    assert redact_text("no url here: a=b") == "no url here: a=b"


def test_redact_nested_structures():
    doc = {"a": {"client_kwargs": {"config": {"Password": PASSWORD}}}, "list": [f"http://h/?sig={SIG}"],
           "aws-secret-access-key": SIG, "token": None}
    out = json.dumps(redact(doc))
    assert PASSWORD not in out and SIG not in out
    assert find_secret_keys(doc) == ["a.client_kwargs.config.Password", "aws-secret-access-key"]


def test_config_refuses_nested_secrets_and_userinfo(tmp_path):
    d = _cfg(tmp_path)
    d["store"] = {"root": "s3://b/run", "client_kwargs": {"config": {"aws_secret_access_key": SIG}}}
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(d)
    assert SIG not in str(e.value) and "environment" in str(e.value)
    d["store"] = {"root": "s3://b/run", "endpoint_url": f"http://user:{PASSWORD}@127.0.0.1:9000"}
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(d)
    assert PASSWORD not in str(e.value)


def test_signed_input_url_never_reaches_the_attrs(tmp_path):
    cfg = RunConfig.from_dict(_cfg(tmp_path, cci=f"https://example.org/cci/{{date:%Y%m%d}}.nc?X-Amz-Signature={SIG}"))
    attrs = provenance_attrs(cfg, title="t", summary="s")
    blob = json.dumps(attrs)
    assert SIG not in blob
    assert "X-Amz-Signature=***" in json.loads(attrs["sm1km_config"])["inputs"]["cci"]


def test_log_lines_are_redacted():
    rec = logging.LogRecord("sm1km", logging.INFO, __file__, 1, "reading %s", (f"https://h/f.nc?sig={SIG}",), None)
    assert RedactingFilter().filter(rec)
    assert SIG not in rec.getMessage() and "sig=***" in rec.getMessage()


def test_plain_label():
    assert plain_label("a\x00b\nc") == "a b c"
    long = plain_label("x" * 200)
    assert len(long) == 64 and long.endswith("…")


def test_report_with_a_mathtext_station_name(tmp_path):
    """A station named like ``Le$ite_$^`` made matplotlib's mathtext parser raise inside validate."""
    from sm1km.validation.report import write_report

    cfg = RunConfig.from_dict(_cfg(tmp_path / "run"))
    times = pd.date_range("2020-04-01", "2020-04-12")
    xr.Dataset(coords={"time": times}).to_zarr(cfg.store.url("inputs", "stations.zarr"), mode="w")
    names = ["NET/Le$ite_$^", "NET/$\\frac{", "NET/plain"]
    rng = np.random.default_rng(0)
    obs = rng.uniform(0.1, 0.4, (len(times), 3))
    series = {"obs": obs, "master_1km": obs + 0.01}
    per_station = pd.DataFrame({"r": [0.8, 0.7, 0.9], "ubrmse": [0.03, 0.04, 0.02], "lat": [40.2, 40.5, 40.8],
                                "lon": [0.2, 0.5, 0.8]}, index=names)
    files = write_report(cfg, {}, {}, series, per_station, {})
    assert "timeseries.png" in files and "index.html" in files
