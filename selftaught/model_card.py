"""Model cards: every trained round's model folder gets a ``README.md`` in the Hugging Face model-card format
and a ``selftaught_judge.json`` saying how the judge is called (``huggingface_hub``'s ``ModelCard``).

The card's YAML header names the base model and its license (the seed's), the tags, and the round's eval
results as ``model-index`` (accuracy per eval set and mode, the 95% interval in the metric's name); its body
says how the judge was made (recipe, round, training rows and where they came from), the per-round eval table
with intervals, the judge's prompt format and how to call it. The driver writes both after each round's
eval (``Run._finish_round``); ``selftaught export`` copies them with the weights into a hub-ready folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from selftaught import atomic
from selftaught.config import EMBEDDED_MODEL, RunConfig

JUDGE_FILE = "selftaught_judge.json"
EMBEDDED_BASE = {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0"}
TAGS = ["selftaught", "llm-as-a-judge", "self-taught-evaluator", "reward-model"]
MODE_TEXT = {
    "verify": "a yes/no verifier: asked of one response at a time whether it answers the instruction; a pair is "
              "decided by the higher P(Yes) (no position to learn)",
    "pairwise": "a pairwise judge: both responses shown, it names the better one (`[[A]]` / `[[B]]`); decided "
                "in both orders",
    "absolute": "an absolute grader: one response scored 1-5 against a rubric (`[RESULT] n`)",
    "both": "a pairwise judge and an absolute grader (one model, two prompts)",
}


def seed_meta(cfg: RunConfig, seed_path: str) -> dict:
    """The base model and its license: the embedded seed's, else the seed folder's own card, else its hub id."""
    if cfg.model.path == EMBEDDED_MODEL:
        return dict(EMBEDDED_BASE)
    out: dict = {"base_model": cfg.model.path if not Path(seed_path).is_dir() else None, "license": None}
    card = Path(seed_path) / "README.md"
    if card.is_file():
        from huggingface_hub import ModelCard

        data = ModelCard.load(str(card), ignore_metadata_errors=True).data.to_dict()
        out["license"] = data.get("license")
        out["base_model"] = out["base_model"] or data.get("base_model")
    return out


def judge_spec(cfg: RunConfig, k: int, seed_path: str) -> dict:
    """How this round's judge is called (``selftaught_judge.json``): what ``selftaught judge`` / ``serve`` need."""
    from selftaught.config import eval_config

    e, j = eval_config(cfg), cfg.judge
    return {
        "run": cfg.name, "round": k, "judge_mode": j.mode, "format": e.format, "template": e.template,
        "verify_template": e.verify_template, "absolute_template": e.absolute_template, "explanation": j.explanation,
        "decide": "verify" if j.mode == "verify" else "logprob", "constrained": True,
        "max_model_len": cfg.model.max_model_len, "seed": {"path": cfg.model.path, **seed_meta(cfg, seed_path)},
        "train": {"objective": cfg.train.objective, "init_from": cfg.train.init_from, "lr": cfg.train.lr,
                  "epochs": cfg.train.epochs, "strategy": cfg.train.strategy, "lora": cfg.train.lora.enabled},
        "data": [cfg.data.path] + [s.path for s in cfg.data.also], "pairs_rejected": cfg.pairs.rejected,
        "rounds_per_run": cfg.rounds,
    }


def _sets(row: dict) -> list[tuple[str, str]]:
    """(mode, set) of every top-level eval set in a round row (``eval/<mode>/<set>/accuracy``)."""
    return [tuple(k.split("/")[1:3]) for k in row if k.startswith("eval/") and k.count("/") == 3
            and k.endswith("/accuracy")]


def _ci(row: dict, key: str) -> str:
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if v is None:
        return "–"
    return f"{v:.3f} [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"{v:.3f}"


def eval_table(rows: Sequence[dict]) -> str:
    lines = ["| round | eval set | mode | pairs | accuracy [95% CI] | consistency | yes rate / `[[A]]` rate |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for mode, name in _sets(r):
            p = f"eval/{mode}/{name}"
            rate = _ci(r, f"{p}/yes_rate") if mode == "verify" else _ci(r, f"{p}/verdict_A_rate")
            cons = "–" if mode == "verify" else _ci(r, f"{p}/consistency")  # verify: 1 by construction
            lines.append(f"| {r['round']} | {name} | {mode} | {r.get(f'{p}/pairs', '–')} | {_ci(r, f'{p}/accuracy')} | "
                         f"{cons} | {rate} |")
    return "\n".join(lines)


def eval_results(row: dict, model_name: str) -> list:
    from huggingface_hub import EvalResult

    out = []
    for mode, name in _sets(row):
        p = f"eval/{mode}/{name}"
        value = row.get(f"{p}/accuracy")
        if value is None or value != value:  # no pair counted (all too long): no result, the hub rejects a NaN
            continue
        lo, hi = row.get(f"{p}/accuracy_lo"), row.get(f"{p}/accuracy_hi")
        interval = f", 95% CI [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        out.append(EvalResult(task_type="text-classification", task_name="pairwise preference (judge)",
                              dataset_type=f"selftaught/{name}", dataset_name=name, metric_type="accuracy",
                              metric_value=value, metric_name=f"accuracy ({mode}{interval})",
                              verified=False))
    return out


def prompt_names(spec: dict) -> list[str]:
    """The templates this judge is called with."""
    return {"verify": [spec["verify_template"]], "absolute": [spec["absolute_template"]],
             "both": [spec["template"], spec["absolute_template"]]}.get(spec["judge_mode"], [spec["template"]])


def _round(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 4)


def _template_text(t) -> str:
    return (f"[system]\n{t.system.strip()}\n\n" if t.system else "") + f"[user]\n{t.user.strip()}"


def render(spec: dict, rows: Sequence[dict], prompts: Optional[dict[str, str]] = None) -> str:
    """The card's text. ``rows``: the run summary's rows up to this round (round 0 = the seed)."""
    from huggingface_hub import ModelCard, ModelCardData

    from selftaught.prompts import load_template

    k = spec["round"]
    row = next((r for r in rows if r["round"] == k), {})
    name = f"{spec['run']}-round-{k}"
    seed = spec["seed"]
    data = ModelCardData(model_name=name, base_model=seed.get("base_model"), license=seed.get("license") or "other",
                         library_name="transformers", pipeline_tag="text-generation",
                         tags=TAGS + [f"judge-{spec['judge_mode']}"], eval_results=eval_results(row, name) or None)
    t = spec["train"]
    decide = spec["decide"]
    serve_args = f"model.path=<this folder> judge_file.decide={decide} judge_file.constrained=true"
    prompts = prompts or {n: _template_text(load_template(n)) for n in prompt_names(spec)}
    trained = [("instructions", ", ".join(Path(str(p)).name for p in spec["data"] if p)),
               ("rejected answers", spec["pairs_rejected"]), ("pairs", row.get("pairs/out")),
               ("training rows", row.get("judge/sft_examples") or row.get("judge/dpo_examples")
                or row.get("judge/grpo_prompts")),
               ("objective", t["objective"]), ("from", "the seed" if t["init_from"] == "seed" or k == 1
                                               else f"round {k - 1}'s judge"),
               ("learning rate", t["lr"]), ("epochs", t["epochs"]), ("strategy", t["strategy"]),
               ("LoRA", t["lora"]), ("steps", row.get("train/steps")), ("final train loss", _round(row.get("train/train_loss")))]
    body = f"""
# {name}

A judge trained with selftaught (the Self-Taught Evaluator recipe: the model makes
its own preference pairs from unlabeled instructions, judges them, keeps its correct judgments and trains
on them, round after round). This is round {k} of run `{spec['run']}`: {MODE_TEXT.get(spec['judge_mode'], spec['judge_mode'])}.
Base model: {seed.get('base_model') or seed.get('path')} (license: {seed.get('license') or 'see the base model'}).

## How to call it

```bash
selftaught judge {serve_args} judge_file.path=pairs.jsonl   # a file of {{instruction, response_a, response_b}}
selftaught serve {serve_args}                               # HTTP: /v1/compare, /v1/grade, /get_reward
```

Decision rule: `judge_file.decide={decide}`; verdicts are read with constrained decoding (a forced verdict
token and its log-probabilities); context {spec['max_model_len']} tokens. The prompts (the model's own chat
template renders them):

""" + "\n".join(f"`{n}`:\n\n```\n{text.strip()}\n```\n" for n, text in prompts.items()) + f"""
## Training (round {k})

| | |
|---|---|
""" + "\n".join(f"| {a} | {b if b is not None else '–'} |" for a, b in trained) + f"""

## Evaluation

Every round's judge, the seed (round 0) included, on the run's eval sets; accuracy over pairs with its 95%
interval. `holdout`: pairs made the training pairs' way from instructions no round trained on (the
label-free signal of the judge's own task). An interval that contains the seed's accuracy is no measured progress.

{eval_table(rows)}

## Limitations

A small judge learns what its pairs teach: on `holdout`-style pairs (an answer against the answer to a
neighbouring instruction) it can learn "answers this instruction"; that is not a judgment of quality.
Read the table above before using its verdicts as a reward.
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def write(model_dir: Path, spec: dict, rows: Sequence[dict]) -> Path:
    """``README.md`` and ``selftaught_judge.json`` in a trained round's model folder (atomic)."""
    atomic.write_json(model_dir / JUDGE_FILE, spec)
    atomic.write_text(model_dir / "README.md", render(spec, rows))
    return model_dir / "README.md"


def read_spec(model_dir: Path) -> Optional[dict]:
    p = Path(model_dir) / JUDGE_FILE
    return json.loads(p.read_text()) if p.is_file() else None
