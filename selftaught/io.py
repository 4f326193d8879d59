"""Reading user data and reading/writing stage records: one import for the rest of the package.

The formats live in ``selftaught.formats`` (one module each, behind a registry), the record files in
``selftaught.records``; this module names what the stages, the driver and the scripts use.
"""
from __future__ import annotations

from selftaught.formats import load_eval as load_pairwise_eval  # every eval format, not only pairs
from selftaught.formats.instructions import check_instructions, iter_instructions, load_instructions
from selftaught.formats.judge_file import iter_graded_responses, iter_response_pairs
from selftaught.formats.graded import human_score, rubric_text
from selftaught.formats.reading import (BUILTIN, FORMATS, DataError, Reject, file_fingerprint, get_field,
                                        input_path, resolve_data_path)
from selftaught.records import PathLike, read_jsonl, read_records, write_jsonl, write_records

__all__ = ["BUILTIN", "FORMATS", "DataError", "PathLike", "Reject", "check_instructions", "file_fingerprint", "get_field",
           "human_score", "input_path", "iter_graded_responses", "iter_instructions", "iter_response_pairs",
           "load_instructions", "load_pairwise_eval", "read_jsonl", "read_records", "resolve_data_path", "rubric_text",
           "write_jsonl", "write_records"]
