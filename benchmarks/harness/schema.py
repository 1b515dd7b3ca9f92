"""JSON Schema (draft 2020-12) of a ``sm1km bench`` result; ``tests/test_bench.py`` validates with it."""

from __future__ import annotations

SCHEMA_VERSION = 2  # 2: results.units and results.whole_run

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
_UNIT_INGEST = _obj(["written_bytes", "stage_wall_s", "stage_cpu_s", "decode_wall_s", "naive_wall_s", "ratio_to_decode",
                     "ratio_to_naive"], {"stage_wall_s": _REF, "stage_cpu_s": _REF, "decode_wall_s": _REF,
                                         "naive_wall_s": _REF, "ratio_to_decode": {"type": "number"}})

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
    "units": _obj(["size", "ingest_cci_day", "ingest_era5_day", "modis_tile", "export_cog_strip", "export_modis_days"],
                  {"ingest_cci_day": _UNIT_INGEST, "ingest_era5_day": _UNIT_INGEST,
                   "modis_tile": _obj(["stage_cpu_s", "decode_cpu_s", "ratio_to_decode"],
                                      {"stage_cpu_s": _REF, "decode_cpu_s": _REF}),
                   "export_cog_strip": _obj(["px", "bytes", "stage_cpu_s", "floor_cpu_s", "ratio_to_floor"],
                                            {"stage_cpu_s": _REF, "floor_cpu_s": _REF}),
                   "export_modis_days": _obj(["days", "bytes", "stage_cpu_s", "tile_year_scale"],
                                             {"stage_cpu_s": _REF})}),
    "whole_run": _obj(["rows", "core_hours_total", "nrt_day_core_hours_total", "bytes_stored_total"],
                      {"rows": {"type": "array", "items": _obj(
                          ["stage", "store", "core_hours", "share", "bytes_stored", "basis"])}}),
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
