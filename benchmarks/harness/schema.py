"""JSON Schema (draft 2020-12) of a ``sm1km bench`` result; ``tests/test_bench.py`` validates with it."""

from __future__ import annotations

SCHEMA_VERSION = 1

_FIGURE = {
    "type": "object",
    "required": ["median", "unit", "n", "reps"],
    "properties": {
        "median": {"type": "number"},
        "unit": {"type": "string"},
        "n": {"type": "integer", "minimum": 1},
        "reps": {"type": "array", "items": {"type": "number"}, "minItems": 1},
    },
}
_REF = {"$ref": "#/$defs/figure"}


def _obj(required: list[str], props: dict | None = None) -> dict:
    return {"type": "object", "required": required, "properties": props or {}}


_SKIPPED = _obj(["skipped"], {"skipped": {"const": True}})

_SECTIONS = {
    "downscale": _obj(
        ["tasks", "pixel_days", "land_pixel_days", "end_to_end", "raw_predict", "features", "ratio_to_raw_predict",
         "ratio_to_raw_predict_cpu", "ratio_to_raw_predict_all_rows", "ratio_target", "meets_target"],
        {"end_to_end": _obj(["pixel_days_per_s_per_core", "cpu_pixel_days_per_s_per_core",
                             "land_pixel_days_per_s_per_core"],
                            {"pixel_days_per_s_per_core": _REF, "cpu_pixel_days_per_s_per_core": _REF,
                             "land_pixel_days_per_s_per_core": _REF}),
         "raw_predict": _obj(["pixel_days_per_s_per_core", "land_rows_pixel_days_per_s_per_core", "boosters"],
                             {"pixel_days_per_s_per_core": _REF, "land_rows_pixel_days_per_s_per_core": _REF}),
         "features": _obj(["pixel_days_per_s_per_core"], {"pixel_days_per_s_per_core": _REF}),
         "ratio_to_raw_predict": {"type": "number", "exclusiveMinimum": 0}}),
    "fusion": _obj(["pixel_days", "pixel_days_per_s_per_core"], {"pixel_days_per_s_per_core": _REF}),
    "ingest": _obj(["1x", "4x"], {k: _obj(["read_mb_per_s", "written_mb_per_s", "peak_rss_mb", "input_bytes",
                                           "written_bytes"],
                                          {"read_mb_per_s": _REF, "written_mb_per_s": _REF, "peak_rss_mb": _REF})
                                  for k in ("1x", "4x")}),
    "export": {"type": "object", "minProperties": 1, "additionalProperties": _obj(
        ["written_mb_per_s", "bytes", "files"], {"written_mb_per_s": _REF, "master_mb_per_s": _REF})},
    "memory": _obj(["ingest", "downscale", "ratio_target"],
                   {k: _obj(["1x_peak_rss_mb", "4x_peak_rss_mb", "ratio_4x_to_1x", "meets_target"],
                            {"1x_peak_rss_mb": _REF, "4x_peak_rss_mb": _REF, "ratio_4x_to_1x": {"type": "number"}})
                    for k in ("ingest", "downscale")}),
    "scaling": _obj(["runs", "scheduler"], {
        "runs": {"type": "object", "minProperties": 1, "additionalProperties": _obj(
            ["workers", "threads_per_worker", "xgboost_threads", "pixel_days_per_s", "parallel_efficiency"],
            {"pixel_days_per_s": _REF})},
        "scheduler": _obj(["client_map_ms_per_task", "run_bounded_ms_per_task"],
                          {"client_map_ms_per_task": _REF, "run_bounded_ms_per_task": _REF})}),
    "projection": _obj(["land_pixel_days", "core_hours", "wall_hours_on_workers", "tasks", "objects", "bytes",
                        "scheduler"]),
    "profile": _obj(["wall_s", "cumulative_s", "top_tottime"]),
    "model_cost": _obj(["model"], {"model": _obj(["trees", "max_depth", "rows_per_s_per_core"],
                                                 {"rows_per_s_per_core": _REF})}),
    "compression": _obj(["codecs", "raw_bytes"]),
    "gpu": _obj(["available"], {"available": {"type": "boolean"}}),
}

BENCH_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "sm1km bench result",
    "type": "object",
    "required": ["benchmark", "schema_version", "preset", "reps", "created", "machine", "packages", "world",
                 "results", "total_wall_s"],
    "properties": {
        "benchmark": {"const": "sm1km"},
        "schema_version": {"const": SCHEMA_VERSION},
        "reps": {"type": "integer", "minimum": 1},
        "machine": _obj(["cores", "cpu_model", "memory_gib"],
                        {"cores": {"type": "integer", "minimum": 1}, "cpu_model": {"type": "string"},
                         "memory_gib": {"type": "number"}}),
        "packages": {"type": "object", "required": ["sm1km", "xgboost", "dask", "zarr", "numpy"]},
        "results": {"type": "object", "required": list(_SECTIONS),
                    "properties": {k: {"oneOf": [v, _SKIPPED]} for k, v in _SECTIONS.items()}},
    },
    "$defs": {"figure": _FIGURE},
}
