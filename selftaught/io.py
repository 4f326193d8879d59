"""Reading user data and reading/writing stage records.

User files are untrusted: every bad row becomes a ``Reject`` (file, 1-based line, reason) and
loading goes on, so one broken line never costs a run; a file that gives no row at all (empty,
every row rejected, another format than its suffix says) is a ``DataError``, one line naming the
key to fix, raised before any engine starts. Stage outputs are ours: they are written
durably and atomically (``atomic.py``) so a killed stage never leaves a half file that a resumed
run would take as done.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

from selftaught.atomic import atomic_path
from selftaught.config import ConfigError, DataConfig

log = logging.getLogger("selftaught.io")

BUILTIN = "builtin:"
FORMATS = ("jsonl", "json", "parquet")
MAX_LOGGED_REJECTS = 20
SNIPPET_LEN = 120
_MISSING = object()  # distinguishes an absent field from an explicit null

PathLike = Union[str, "os.PathLike[str]"]


class DataError(ConfigError):
    """An input file that cannot give a single row; the message starts with the key to fix (the
    CLI prints it as one line and exits 2, like any config error)."""


def _key(what: str, name: str) -> str:
    """The config key beside ``what``: ("data.also.0.path", "format") -> "data.also.0.format"."""
    return f"{what.rsplit('.', 1)[0]}.{name}" if what.endswith(".path") else name


@dataclass
class Reject:
    file: str  # absolute path of the input file
    line: int  # 1-based line (jsonl), element index (json) or row index (parquet)
    reason: str
    snippet: str  # <= 120 chars, escaped so it prints on one line


def _snippet(raw: Any) -> str:
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return repr(raw.strip())[2:-1][:SNIPPET_LEN]  # bytes repr: b'\xff' -> \xff
    elif isinstance(raw, str):
        text = raw
    else:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    return repr(text.strip())[1:-1][:SNIPPET_LEN]  # repr escapes newlines/control chars


def get_field(row: Any, dotted: str) -> Any:
    """``turns.0.content`` -> row["turns"][0]["content"]; ``_MISSING`` if any step is absent."""
    cur = row
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


@contextmanager
def _source_path(spec: str, what: str) -> Iterator[str]:
    """Yield a real filesystem path for ``builtin:<name>`` or a user path; fail fast if absent."""
    if spec.startswith(BUILTIN):
        name = spec[len(BUILTIN):]
        pkg = resources.files("selftaught.data")
        res = pkg.joinpath(name)
        if not name or "/" in name or "\\" in name or not res.is_file():
            shipped = sorted(p.name for p in pkg.iterdir() if p.name.endswith((".jsonl", ".json", ".parquet")))
            raise FileNotFoundError(f"{what}: {spec} does not exist; shipped: {shipped}")
        with resources.as_file(res) as p:  # a real file even if the package is zipped
            yield str(p)
        return
    p = os.path.abspath(os.path.expanduser(str(spec)))
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{what}: {p} does not exist")
    yield p


def resolve_data_path(spec: str, what: str = "data.path") -> str:
    """Absolute path of a data file (or a shipped ``builtin:`` one); ``FileNotFoundError`` if absent."""
    with _source_path(spec, what) as p:
        return p


def _format(path: str, fmt: str, what: str = "path") -> str:
    key = _key(what, "format")
    if fmt != "auto":
        if fmt not in FORMATS:
            raise DataError(f"{key}: must be auto|{'|'.join(FORMATS)}, got {fmt!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix.lstrip(".") in FORMATS:
        return suffix.lstrip(".")
    hint = "CSV is not read: convert it to JSON lines" if suffix == ".csv" else "jsonl = one JSON object per line"
    raise DataError(f"{what}: cannot infer the format of {path} from suffix {suffix!r}; set {key}=jsonl|json|parquet ({hint})")


def _iter_rows(path: str, fmt: str, what: str = "path") -> Iterator[tuple[int, Any, Any, Optional[str]]]:
    """Yield (line, row, raw for the snippet, error). Streams so ``limit`` stops early."""
    if fmt == "jsonl":
        with open(path, "rb") as f:  # bytes: a non-UTF-8 line is one reject, not a crash
            for i, raw in enumerate(f, 1):
                if not raw.strip():
                    continue  # blank lines (e.g. a trailing newline) are not rows
                try:
                    text = raw.decode("utf-8-sig" if i == 1 else "utf-8")  # tolerate a BOM
                except UnicodeDecodeError:
                    yield i, None, raw, "not valid UTF-8"
                    continue
                try:
                    yield i, json.loads(text), raw, None
                except json.JSONDecodeError as e:
                    yield i, None, raw, f"invalid JSON: {e.msg} at column {e.colno}"
    elif fmt == "json":
        with open(path, "rb") as f:
            data = f.read()
        try:
            obj = json.loads(data)
        except json.JSONDecodeError as e:
            if e.msg == "Extra data" and _first_line_is_json(data):  # JSON lines under a .json name
                raise DataError(f"{what}: {path} holds JSON lines (one object per line), not one JSON document; "
                                f"set {_key(what, 'format')}=jsonl") from None
            raise DataError(f"{what}: {path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{what}: {path}: not valid UTF-8 at byte {e.start}") from None
        if not isinstance(obj, list):
            raise DataError(f"{what}: {path}: expected a top-level JSON list of objects, got {type(obj).__name__} "
                            f"(one object per line is {_key(what, 'format')}=jsonl)")
        for i, row in enumerate(obj, 1):
            yield i, row, row, None
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{what}: {path} is not a parquet file ({e}); set {_key(what, 'format')}=jsonl|json|parquet") from None
        i = 0
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                i += 1
                yield i, row, row, None


def _first_line_is_json(data: bytes) -> bool:
    line = next((x for x in data.splitlines() if x.strip()), b"")
    try:
        json.loads(line)
        return True
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def _text(row: dict, dotted: str, strip: bool = True) -> tuple[str, Optional[str]]:
    """(text, error) for a required non-empty string field; ``strip=False`` keeps an answer verbatim
    (its whitespace can be what a judge must notice)."""
    v = get_field(row, dotted)
    if v is _MISSING or v is None:
        return "", f"missing field {dotted!r}"
    if not isinstance(v, str):
        return "", f"field {dotted!r} is not a string (got {type(v).__name__})"
    if not v.strip():
        return "", f"field {dotted!r} is empty"
    return (v.strip() if strip else v), None


# A converter turns one JSON object into a partial record (without "source"; "id" may be None
# for the default) or returns an error string.
Converter = Callable[[dict], Union[dict, str]]


def _iter_load(spec: str, fmt: str, convert: Converter, limit: Optional[int], what: str) -> Iterator[Union[dict, Reject]]:
    """Rows and rejects of one file, in file order, streamed (only the ids seen are kept)."""
    n_rows = n_rejects = 0
    first_line: dict[str, int] = {}
    with _source_path(spec, what) as path:
        name, stem = Path(path).name, Path(path).stem
        for line, row, raw, err in _iter_rows(path, _format(path, fmt, what), what):
            if limit is not None and n_rows >= limit:
                break
            out: Union[dict, str] = err if err is not None else (
                convert(row) if isinstance(row, dict) else f"row is not a JSON object (got {type(row).__name__})"
            )
            if isinstance(out, dict):
                rid = str(out["id"]) if out.get("id") is not None else f"{stem}-{line}"
                if rid in first_line:
                    out = f"duplicate id {rid!r} (first at line {first_line[rid]})"
                else:
                    first_line[rid] = line
                    n_rows += 1
                    yield {"id": rid, **{k: v for k, v in out.items() if k != "id"}, "source": f"{name}:{line}"}
                    continue
            n_rejects += 1
            if n_rejects <= MAX_LOGGED_REJECTS:
                log.warning("%s:%d: %s", path, line, out)
            yield Reject(path, line, out, _snippet(raw))
        if n_rejects > MAX_LOGGED_REJECTS:
            log.warning("%s: %d more rejected rows not shown (%d in all)", path, n_rejects - MAX_LOGGED_REJECTS, n_rejects)
        log.info("%s: %d rows loaded, %d rejected", path, n_rows, n_rejects)


def _load(spec: str, fmt: str, convert: Converter, limit: Optional[int], what: str) -> tuple[list[dict], list[Reject]]:
    items = list(_iter_load(spec, fmt, convert, limit, what))
    return [x for x in items if isinstance(x, dict)], [x for x in items if isinstance(x, Reject)]


def check_instructions(cfg: DataConfig) -> tuple[int, int]:
    """(rows, rejected) of the instruction files, read as the load stage reads them (up to
    ``data.limit``, streamed: nothing kept); ``DataError`` if a file gives no row. For the driver,
    before Ray or any engine starts: an input that cannot work stops the run in one line."""
    rows = rejects = 0
    for x in iter_instructions(cfg):
        rows += isinstance(x, dict)
        rejects += isinstance(x, Reject)
    return rows, rejects


def load_instructions(cfg: DataConfig) -> tuple[list[dict], list[Reject]]:
    """Rows ``{"id", "instruction", "source": "<file name>:<line>"}`` plus the rejected lines, from
    ``data.path`` and then every ``data.also`` file (ids prefixed with the file stem there).
    ``DataError`` (naming the key to fix) if a file gives no row."""
    items = list(iter_instructions(cfg))
    return [x for x in items if isinstance(x, dict)], [x for x in items if isinstance(x, Reject)]


def iter_instructions(cfg: DataConfig) -> Iterator[Union[dict, Reject]]:
    """``load_instructions``, streamed in file order: the load stage writes its shards from this."""
    seen: set[str] = set()
    n = 0
    sources = [(cfg, "data.path")] + [(src, f"data.also.{i}.path") for i, src in enumerate(cfg.also)]
    for i, (src, what) in enumerate(sources):
        if cfg.limit is not None and n >= cfg.limit:
            break
        for x in _iter_source(src, None if cfg.limit is None else cfg.limit - n, what):
            if isinstance(x, dict) and i > 0:  # data.also: ids get the file stem, unique across files
                rid = f"{Path(x['source'].rsplit(':', 1)[0]).stem}:{x['id']}"
                if rid in seen:
                    x = Reject(src.path, int(x["source"].rsplit(":", 1)[1]), f"duplicate id {rid!r} across files",
                               _snippet(x["instruction"]))
                else:
                    x = {**x, "id": rid}
            if isinstance(x, dict):
                seen.add(x["id"])
                n += 1
            yield x


def _iter_source(cfg, limit: Optional[int], what: str = "data.path") -> Iterator[Union[dict, Reject]]:
    """One file of ``iter_instructions`` (a ``DataConfig`` or ``DataSourceConfig``)."""
    row_keys: list[str] = []  # the first object's keys: the hint when no row maps

    def convert(row: dict) -> Union[dict, str]:
        if not row_keys:
            row_keys.extend(str(k) for k in list(row)[:12])
        text, err = _text(row, cfg.instruction_field)
        if err:
            return err
        if cfg.input_field:  # self-instruct: optional input appended; absent/empty is fine
            extra = get_field(row, cfg.input_field)
            if extra is not _MISSING and extra is not None and not isinstance(extra, str):
                return f"field {cfg.input_field!r} is not a string (got {type(extra).__name__})"
            if isinstance(extra, str) and extra.strip():
                text = f"{text}\n\n{extra.strip()}"
        rid = None
        if cfg.id_field:
            rid = get_field(row, cfg.id_field)
            if rid is _MISSING:
                rid = None  # forgiving: <file stem>-<line>, so plain {"instruction"} rows load under data=demo's id_field
            if isinstance(rid, (dict, list)):
                return f"field {cfg.id_field!r} is not a scalar id"
        out = {"id": rid, "instruction": text}
        if cfg.category_field:  # an optional reference label: absent or not a string = unlabelled
            ref = get_field(row, cfg.category_field)
            out["reference_category"] = ref.strip() if isinstance(ref, str) and ref.strip() else None
        return out

    yield from _rows_or_stop(cfg, convert, limit, what, row_keys)


def _rows_or_stop(src, convert: Converter, limit: Optional[int], what: str, row_keys: list[str]) -> Iterator[Union[dict, Reject]]:
    """``_iter_load`` of ``src.path``; a file that gives no row is a ``DataError`` naming why (the counts
    by reason and the field mapping or format to fix)."""
    early: list[Reject] = []  # the rejects before the first row: the message when no row comes
    any_row = False
    for x in _iter_load(src.path, src.format, convert, limit, what):
        if isinstance(x, dict):
            any_row = True
        elif not any_row:
            early.append(x)
        yield x
    if not any_row:
        raise DataError(_no_rows(src, what, early, row_keys))


def _no_rows(src, what: str, rejects: list[Reject], row_keys: list[str]) -> str:
    """Why a file gave no row, in one line: counts by reason and the mapping or format to fix."""
    path = rejects[0].file if rejects else resolve_data_path(src.path, what)
    if not rejects:
        return f"{what}: {path} has no rows (an empty file)"
    kinds = Counter(re.sub(r"^(invalid JSON|duplicate id).*", r"\1", r.reason) for r in rejects)
    counts = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    msg = f"{what}: none of the {len(rejects)} rows of {path} is usable ({counts})"
    if any(k in kinds for k in ("invalid JSON", "not valid UTF-8")):
        fmt = src.format if src.format != "auto" else Path(path).suffix.lstrip(".")
        msg += f"; read as {fmt}: set {_key(what, 'format')}=jsonl|json|parquet to the file's format"
    mapping = [(name, getattr(src, name, None)) for name in ("instruction_field", "input_field", "id_field", "a_field",
                                                            "b_field", "response_field", "reference_field")]
    named = [f"{_key(what, name)}={field}" for name, field in mapping if field and any(f"field {field!r}" in k for k in kinds)]
    if named:
        seen = f" (the rows have {', '.join(row_keys)})" if row_keys else ""
        msg += f"; map the rows' fields{seen}: now {', '.join(named)}"
    return msg


def input_path(path: Optional[str]) -> Optional[str]:
    """A user's input path made absolute (``builtin:`` names and None as they are)."""
    if not path or path.startswith(BUILTIN):
        return path
    return os.path.abspath(os.path.expanduser(path))


def file_fingerprint(path: Optional[str]) -> Optional[list]:
    """What identifies an input file in a stage hash: its absolute path, size and mtime."""
    if not path:
        return None
    p = input_path(path)
    if p.startswith(BUILTIN):
        p = resolve_data_path(p, "judge_file.path")
    st = os.stat(p)
    return [p, st.st_size, st.st_mtime_ns]


SAME_ANSWERS = "the two responses are identical"


def _judge_file_row(row: dict, cfg, answers: dict[str, str]) -> Union[dict, str]:
    """What both judge-file readers take from a row: the instruction, the answers (``{key: field}``,
    kept verbatim), an optional reference and the id; or the reason it cannot be used. Every missing
    field is named at once, so the message for an unmapped file names every field to map."""
    instruction, err = _text(row, cfg.instruction_field)
    errors, texts = [err] if err else [], {}
    for key, field in answers.items():
        texts[key], err = _text(row, field, strip=False)
        errors += [err] if err else []
    if errors:
        return "; ".join(errors)
    ref = get_field(row, cfg.reference_field) if cfg.reference_field else None
    if ref is not _MISSING and ref is not None and not isinstance(ref, str):
        return f"field {cfg.reference_field!r} is not a string (got {type(ref).__name__})"
    rid = get_field(row, cfg.id_field) if cfg.id_field else None
    if isinstance(rid, (dict, list)):
        return f"field {cfg.id_field!r} is not a scalar id"
    return {"id": None if rid is _MISSING else rid, "instruction": instruction, **texts,
            "reference": ref.strip() if isinstance(ref, str) and ref.strip() else None}


def iter_response_pairs(cfg, what: str = "judge_file.path") -> Iterator[Union[dict, Reject]]:
    """A file of response pairs (``config.JudgeFileConfig``: field mapping, format, limit) ->
    ``{id, instruction, response_a, response_b, reference, source}`` rows and file:line rejects,
    streamed. A file that gives no row raises ``DataError``."""
    row_keys: list[str] = []

    def convert(row: dict) -> Union[dict, str]:
        if not row_keys:
            row_keys.extend(str(k) for k in list(row)[:12])
        out = _judge_file_row(row, cfg, {"response_a": cfg.a_field, "response_b": cfg.b_field})
        if isinstance(out, dict) and out["response_a"].strip() == out["response_b"].strip():
            return SAME_ANSWERS
        return out

    yield from _rows_or_stop(cfg, convert, cfg.limit, what, row_keys)


MT_BENCH_TIE = "tie vote (excluded from accuracy)"


def _mt_bench(row: dict) -> Union[dict, str]:
    """One human vote of MT-Bench (``lmsys/mt_bench_human_judgments``): ``{question_id, model_a,
    model_b, winner: model_a|model_b|tie, judge, conversation_a/b: [{role, content}], turn: 1|2}``.
    Turn 1: the first question and the two first answers. Turn 2: the judge sees the whole
    conversation, the first question with the follow-up, and each model's two answers."""
    winner, turn = row.get("winner"), row.get("turn")
    if winner not in ("model_a", "model_b"):
        if isinstance(winner, str) and winner.startswith("tie"):  # "tie", "tie (bothbad)"
            return MT_BENCH_TIE
        return f"field 'winner' must be model_a, model_b or tie, got {winner!r}"
    if turn not in (1, 2):
        return f"field 'turn' must be 1 or 2, got {turn!r}"
    turns = {}
    for side in ("a", "b"):
        conv = row.get(f"conversation_{side}")
        if not isinstance(conv, list) or len(conv) < 2 * turn:
            return f"field 'conversation_{side}' must hold {2 * turn} messages for turn {turn}"
        msgs = [m.get("content") if isinstance(m, dict) else None for m in conv[: 2 * turn]]
        if not all(isinstance(m, str) and m.strip() for m in msgs):
            return f"field 'conversation_{side}': a message without text"
        turns[side] = msgs
    if turn == 1:
        instruction = turns["a"][0]
        answers = {s: turns[s][1] for s in "ab"}
    else:
        instruction = f"{turns['a'][0]}\n\n[Follow-up question]\n{turns['a'][2]}"
        answers = {s: f"[First answer]\n{turns[s][1]}\n\n[Answer to the follow-up]\n{turns[s][3]}" for s in "ab"}
    win, lose = ("a", "b") if winner == "model_a" else ("b", "a")
    if answers[win].strip() == answers[lose].strip():
        return SAME_ANSWERS
    rid = "-".join(str(row.get(k)) for k in ("question_id", "model_a", "model_b", "judge")) + f"-t{turn}"
    return {"id": rid, "instruction": instruction, "chosen": answers[win], "rejected": answers[lose],
            "subset": f"turn{turn}"}


TIES = "Ties"  # RewardBench 2's subset scored by ratings (``ties``), not pairwise


def _scalar_id(row: dict):
    """An eval row's own ``id`` when it is a string or an integer; else None (the reader numbers it)."""
    rid = row.get("id")
    return rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


def _subset(row: dict, stem: str) -> str:
    """An eval row's ``subset`` when it names one; else its file's stem."""
    return row["subset"] if isinstance(row.get("subset"), str) and row["subset"] else stem


def _rewardbench2(row: dict, stem: str) -> Union[dict, str]:
    """A RewardBench 2 item (``allenai/reward-bench-2``): ``{id, prompt, chosen: [one], rejected:
    [three], subset}`` -> its candidates, the correct one first (``eval_data`` expands them into a
    round robin); in the Ties subset, ``chosen`` holds every correct answer (``num_correct``) and
    each candidate is rated alone."""
    prompt, err = _text(row, "prompt", strip=False)
    if err:
        return err
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not isinstance(rejected, list) or not rejected:
        return "field 'rejected' must be a non-empty list of answers (RewardBench 2)"
    cands = list(chosen) + list(rejected)
    if not all(isinstance(c, str) and c.strip() for c in cands):
        return "fields 'chosen'/'rejected': every answer must be a non-empty string"
    if not chosen:
        return "field 'chosen' is empty"
    rid, subset = _scalar_id(row), _subset(row, stem)
    if subset == TIES:  # several correct answers (or one, its reference item): each candidate rated alone
        return {"id": rid, "instruction": prompt, "candidates": cands, "num_correct": len(chosen), "subset": subset}
    if len(chosen) != 1:
        return f"{len(chosen)} correct answers outside the Ties subset (best-of-n needs one)"
    if len({c.strip() for c in cands}) < len(cands):
        return SAME_ANSWERS
    return {"id": rid, "instruction": prompt, "candidates": cands, "subset": subset}


def rubric_text(row: dict, dotted: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(the row's rubric as the judge reads it, error). A string as is; ``{criteria,
    score1_description..score5_description}`` (or Feedback-Collection's top-level ``orig_criteria``,
    ``orig_score1_description``..) rendered one score per line; None when the row has none (the
    shipped general rubric applies)."""
    v = get_field(row, dotted) if dotted else _MISSING
    if isinstance(v, str) and v.strip():
        return v.strip(), None
    if isinstance(v, dict):
        parts = (v.get("criteria"), [v.get(f"score{i}_description") for i in range(1, 6)])
    elif (v is _MISSING or v is None) and isinstance(row.get("orig_criteria"), str):
        parts = (row["orig_criteria"], [row.get(f"orig_score{i}_description") for i in range(1, 6)])
    elif v is _MISSING or v is None:
        return None, None
    else:
        parts = (None, [])
    if not isinstance(parts[0], str) or not all(isinstance(d, str) and d.strip() for d in parts[1]):
        return None, f"field {dotted!r}: a rubric is a string or {{criteria, score1_description..score5_description}}"
    criteria = parts[0].strip()
    return "\n".join([criteria if criteria.startswith("[") else f"[{criteria}]"]
                      + [f"Score {i}: {d.strip()}" for i, d in enumerate(parts[1], 1)]), None


def human_score(row: dict, dotted: Optional[str]) -> tuple[Optional[float], Optional[str]]:
    """(the row's 1-5 human score or None when it has none, error)."""
    raw = get_field(row, dotted) if dotted else None
    if raw is _MISSING or raw is None:
        return None, None
    try:
        v = None if isinstance(raw, bool) else float(raw)
    except (TypeError, ValueError):
        v = None
    if v is None or not 1 <= v <= 5:
        return None, f"field {dotted!r} must be a score from 1 to 5, got {raw!r}"
    return v, None


def _graded_eval(row: dict, stem: str) -> Union[dict, str]:
    """A response with a human 1-5 score, Prometheus style: ``{instruction, response, score (or
    human_score), rubric?, reference?}`` or Feedback-Collection's ``orig_*`` fields -> ``{id,
    instruction, response, rubric, reference, human_score, subset}`` (per-round eval: correlations)."""
    orig = "orig_response" in row
    keys = ("orig_instruction", "orig_response") if orig else ("instruction", "response")
    (instruction, err1), (response, err2) = _text(row, keys[0], strip=False), _text(row, keys[1], strip=False)
    if err1 or err2:
        return "; ".join(e for e in (err1, err2) if e)
    score_key = "orig_score" if orig else "human_score" if "human_score" in row else "score"
    human, err = human_score(row, score_key)
    if err or human is None:
        return err or f"missing field {score_key!r}"
    rubric, err = rubric_text(row, None if orig else "rubric")
    if err:
        return err
    ref = row.get("orig_reference_answer" if orig else "reference")
    return {"id": _scalar_id(row), "instruction": instruction, "response": response, "rubric": rubric,
            "reference": ref.strip() if isinstance(ref, str) and ref.strip() else None, "human_score": human,
            "subset": _subset(row, stem)}


def iter_graded_responses(cfg, what: str = "judge_file.path") -> Iterator[Union[dict, Reject]]:
    """A file of single responses (``config.JudgeFileConfig``, absolute mode) -> ``{id, instruction,
    response, rubric, reference, human_score, source}`` rows and file:line rejects, streamed."""
    row_keys: list[str] = []

    def convert(row: dict) -> Union[dict, str]:
        if not row_keys:
            row_keys.extend(str(k) for k in list(row)[:12])
        out = _judge_file_row(row, cfg, {"response": cfg.response_field})
        if not isinstance(out, dict):
            return out
        rubric, err = rubric_text(row, cfg.rubric_field)
        if err:
            return err
        human, err = human_score(row, cfg.score_field)
        if err:
            return err
        return {**out, "rubric": rubric, "human_score": human}

    yield from _rows_or_stop(cfg, convert, cfg.limit, what, row_keys)


def load_pairwise_eval(path: str, format: str = "auto", limit: Optional[int] = None,
                       what: str = "eval path") -> tuple[list[dict], list[Reject]]:
    """LLMBar ``{input, output_1, output_2, label}``, RewardBench ``{prompt, chosen, rejected,
    subset}``, a pairs stage's rows (``rows.Pair``: its subset is ``rejected_source``) or MT-Bench human votes
    (``_mt_bench``) -> ``{id, instruction, chosen, rejected,
    subset, source}``; RewardBench 2 (``_rewardbench2``) -> ``{id, instruction, candidates, subset,
    source}``; a response with a human 1-5 score (``_graded_eval``) -> ``{id, instruction, response,
    rubric, reference, human_score, subset, source}``. LLMBar's subset is the file stem (e.g.
    "Natural"); MT-Bench's the turn."""
    stem = Path(path).stem

    def convert(row: dict) -> Union[dict, str]:
        if "conversation_a" in row and "winner" in row:
            return _mt_bench(row)
        if "orig_response" in row or ("response" in row and ("score" in row or "human_score" in row)):
            return _graded_eval(row, stem)
        if isinstance(row.get("chosen"), list):
            return _rewardbench2(row, stem)
        if "pair_id" in row and "instruction" in row and "chosen" in row:  # a pairs stage's rows (eval.holdout)
            keys = ("instruction", "chosen", "rejected")
            subset = row.get("rejected_source") or stem
        elif "output_1" in row:  # LLMBar
            label = row.get("label")
            if str(label) not in ("1", "2") or isinstance(label, bool):
                return f"field 'label' must be 1 or 2, got {label!r}"
            keys = ("input", "output_1", "output_2") if str(label) == "1" else ("input", "output_2", "output_1")
            subset = stem
        elif "chosen" in row:  # RewardBench
            keys = ("prompt", "chosen", "rejected")
            subset = _subset(row, stem)
        else:
            return ("unrecognized row: expected LLMBar {input, output_1, output_2, label}, RewardBench {prompt, chosen, "
                    "rejected}, MT-Bench human {conversation_a, conversation_b, winner, turn} or a graded response "
                    "{instruction, response, score}")
        vals = []
        for k in keys:
            v, err = _text(row, k, strip=False)  # kept verbatim, only checked
            if err:
                return err
            vals.append(v)
        if vals[1].strip() == vals[2].strip():
            return SAME_ANSWERS
        return {"id": row["pair_id"] if "pair_id" in row else _scalar_id(row), "instruction": vals[0], "chosen": vals[1],
                "rejected": vals[2], "subset": subset}

    return _load(path, format, convert, limit, what)


# ---------------------------------------------------------------------------- stage records

def write_records(path: PathLike, records: list[dict], schema=None) -> None:
    """Write dicts as parquet. Columns are the union of all records' keys (first-seen order):
    a key missing from a record reads back as None (``from_pylist`` would use row 0's only).
    Nested dicts become structs whose keys are unioned the same way.

    ``schema`` (a stage's ``rows.arrow_schema``): its columns come first, in its types (absent ones
    as nulls), then any others as inferred. No rows: a file with the schema and no row group (a
    0-row row group makes ``datasets`` fail on "BatchSize must be greater than 0"); pyarrow reads it
    as an empty table with its columns, ``datasets`` streamed as an empty split with its features."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    cols = {}
    for n in names:
        try:
            cols[n] = pa.array([r.get(n) for r in records])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"write_records({path}): column {n!r} has values of incompatible types: {e}") from e
    table = pa.table(cols) if cols else pa.table({})
    if schema is not None:
        table = _conform(table, schema, path)
    with atomic_path(path) as tmp:
        if table.num_rows == 0:
            pq.ParquetWriter(tmp, table.schema).close()  # schema only: a 0-row row group breaks readers
        else:
            pq.write_table(table, tmp)


def _widen(declared, inferred):
    """``declared`` plus the struct fields only ``inferred`` has (Arrow's struct cast drops fields the
    target lacks: a row's undeclared key would be lost)."""
    import pyarrow as pa

    if pa.types.is_struct(declared) and pa.types.is_struct(inferred):
        have = {f.name: f for f in inferred}
        fields = [pa.field(f.name, _widen(f.type, have[f.name].type) if f.name in have else f.type) for f in declared]
        fields += [f for f in inferred if f.name not in declared.names]
        return pa.struct(fields)
    if pa.types.is_list(declared) and pa.types.is_list(inferred):
        return pa.list_(_widen(declared.value_type, inferred.value_type))
    return declared


def _conform(table, schema, path: PathLike):
    """``table`` in ``schema``'s columns and types first; a value that does not fit its declared type
    keeps the inferred one (logged), never lost."""
    import pyarrow as pa

    cols, fields = [], []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            try:
                col = col.cast(_widen(f.type, col.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
                log.warning("%s: column %r is %s, not its declared %s (%s)", path, f.name, col.type, f.type, e)
        else:
            col = pa.nulls(table.num_rows, f.type)
        cols.append(col)
        fields.append(pa.field(f.name, col.type))
    for name in table.column_names:
        if name not in schema.names:
            cols.append(table[name])
            fields.append(pa.field(name, table[name].type))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def read_records(path: PathLike, columns: Optional[list[str]] = None) -> list[dict]:
    """Rows of one parquet file, or of every ``part-*.parquet`` in a folder (a stage's shards, in order).
    ``columns``: only these (those a file lacks read as None)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        return [r for f in sorted(p.glob("part-*.parquet")) for r in read_records(f, columns)]
    if columns is None:
        return pq.read_table(str(p)).to_pylist()
    have = set(pq.read_schema(str(p)).names)
    t = pq.read_table(str(p), columns=[c for c in columns if c in have])
    missing = dict.fromkeys(c for c in columns if c not in have)
    if not missing:
        return t.to_pylist()
    if t.num_columns == 0:
        return [dict(missing) for _ in range(t.num_rows)]
    return [{**r, **missing} for r in t.to_pylist()]


def write_jsonl(path: PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: PathLike) -> list[dict]:
    """Strict reader for our own files: a bad line is a bug, so it raises (with file:line)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: invalid JSON: {e.msg}") from e
    return out
