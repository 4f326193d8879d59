"""GRPO on the judge's own pairs (``train.objective=grpo|sft_then_grpo``), on TRL's ``GRPOTrainer``.

What TRL lacks for a judge, and this adds:

- ``dataset``: the ``grpo_data`` rows rendered in the model's chat template, ending in the verdict's opening
  (``train.grpo.prefill``), with the label, form, pair and order each reward reads;
- ``PairedRepeatSampler``: TRL's ``RepeatSampler`` (each prompt ``num_generations`` times, a generation batch of
  whole groups) over *pairs*: the two presentations of a pair stay next to each other, so they are always in the
  same generation batch (an even number of prompts);
- ``judge_grpo_trainer``: a ``GRPOTrainer`` with that sampler, whose consistency reward is computed after TRL
  gathers every process's rewards: a pair's two orders may be generated on two workers;
- ``REWARD_FUNCS``: the ``training.rewards`` functions as TRL calls them (named, so TRL logs
  ``rewards/<name>/mean`` per step);
- ``reference_as_causal_lm``: the KL term's reference loads from a folder whose config names no architecture.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from selftaught.training import rewards

CORRECTNESS, CONSISTENCY = rewards.NAMES.index("correctness"), rewards.NAMES.index("consistency")


def dataset(rows: list[dict], tokenizer, prefill: bool):
    """``grpo_data`` rows -> TRL's standard (string) prompt dataset: the chat template applied, the generation
    prompt added, then the verdict's opening when ``prefill`` (not for reasoning_first). Rows must come two per
    pair (the stage writes them so); a pair with another count is an error, as its consistency is undefined."""
    from collections import Counter

    from datasets import Dataset

    counts = Counter(r["pair_id"] for r in rows)
    odd = [p for p, n in counts.items() if n != 2]
    if odd:
        raise ValueError(f"GRPO rows: {len(odd)} pair(s) without exactly two presentations (first: {odd[0]!r})")
    cols: dict[str, list] = {"prompt": [], "prefill": [], "label": [], "form": [], "pair_id": [], "order": []}
    for r in rows:
        if r["form"] not in rewards.FORMS:
            raise ValueError(f"GRPO row {r['example_id']}: form {r['form']!r} is not one of {rewards.FORMS}")
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in r["prompt"]]
        opening = rewards.prefill(r["form"]) if prefill else ""
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        cols["prompt"].append(text + opening)
        cols["prefill"].append(opening)
        for k in ("label", "form", "pair_id", "order"):
            cols[k].append(str(r[k]))
    return Dataset.from_dict(cols)


def pair_groups(pair_ids: Sequence[str]) -> list[list[int]]:
    """Row indices grouped by pair, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pair_ids):
        groups.setdefault(p, []).append(i)
    return list(groups.values())


class PairedRepeatSampler:
    """``trl``'s ``RepeatSampler`` order (chunks of ``batch_size`` prompts, each chunk ``repeat_count`` times, each
    prompt ``mini_repeat_count`` times in a row) with the shuffle over pairs: a pair's rows are adjacent, and with an
    even ``batch_size`` never split across two chunks. A last chunk short of ``batch_size`` is dropped, as TRL does."""

    def __init__(self, groups: list[list[int]], mini_repeat_count: int, batch_size: int, repeat_count: int = 1,
                 shuffle: bool = True, seed: int = 0):
        if batch_size % 2:
            raise ValueError(f"a generation batch of {batch_size} prompts cannot hold whole pairs (it must be even)")
        import torch

        self.groups, self.mini, self.batch = groups, mini_repeat_count, batch_size
        self.repeat, self.shuffle = repeat_count, shuffle
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.num_samples = sum(len(g) for g in groups)

    def __iter__(self) -> Iterator[int]:
        import torch

        n = len(self.groups)
        order = torch.randperm(n, generator=self.generator).tolist() if self.shuffle else range(n)
        flat = [i for g in order for i in self.groups[g]]
        for start in range(0, len(flat) - self.batch + 1, self.batch):
            chunk = flat[start:start + self.batch]
            for _ in range(self.repeat):
                for index in chunk:
                    for _ in range(self.mini):
                        yield index

    def __len__(self) -> int:
        return (self.num_samples // self.batch) * self.batch * self.mini * self.repeat


def _texts(completions: list, prefill: list[str]) -> list[str]:
    """Whole judgments: the prefilled opening plus what the judge wrote (string or chat completions)."""
    out = []
    for c, p in zip(completions, prefill, strict=True):
        text = c if isinstance(c, str) else c[-1]["content"]
        out.append(p + text)
    return out


def correctness(completions, label, form, prefill, **_: Any) -> list[float]:
    return rewards.correctness(_texts(completions, prefill), label, form)


def consistency(completions, **_: Any) -> list[float]:
    """Filled in by the trainer over the gathered batch (``judge_grpo_trainer``); 0 here."""
    return [0.0] * len(completions)


def format(completions, form, prefill, **_: Any) -> list[float]:  # noqa: A001 - TRL logs the function's name
    return rewards.format_ok(_texts(completions, prefill), form)


def degeneracy(completions, prefill, **_: Any) -> list[float]:
    return rewards.degeneracy(_texts(completions, prefill))


REWARD_FUNCS = (correctness, consistency, format, degeneracy)  # in rewards.NAMES order
assert tuple(f.__name__ for f in REWARD_FUNCS) == rewards.NAMES


@contextmanager
def reference_as_causal_lm() -> Iterator[None]:
    """With ``train.grpo.beta > 0`` (and no LoRA) TRL builds the reference model from the policy's folder, with the
    class its ``config.json`` names in ``architectures``; a folder without that key (the embedded seed) fails there
    ("'NoneType' object is not subscriptable"). A judge's reference is a causal LM: while the trainer is built, TRL's
    loader falls back to ``AutoModelForCausalLM``. Patched on ``trl.trainer.grpo_trainer``, whose name it calls."""
    import trl.trainer.grpo_trainer as trl_grpo
    from transformers import AutoModelForCausalLM

    original = trl_grpo.create_model_from_path

    def create(model_id, architecture=None, **kwargs):
        return original(model_id, architecture or AutoModelForCausalLM, **kwargs)

    trl_grpo.create_model_from_path = create
    try:
        yield
    finally:
        trl_grpo.create_model_from_path = original


def judge_grpo_trainer(base: type, group_pairs: bool = False) -> type:
    """A subclass of TRL's ``GRPOTrainer`` (``base``): pairs kept together, consistency over the gathered batch;
    ``group_pairs`` (``train.grpo.group=pair``): advantages normalised over a pair's two presentations."""

    class JudgeGRPOTrainer(base):
        def _get_train_sampler(self, dataset=None):
            data = dataset if dataset is not None else self.train_dataset
            return PairedRepeatSampler(pair_groups(data["pair_id"]), mini_repeat_count=self.num_generations,
                                       batch_size=self.args.generation_batch_size // self.num_generations,
                                       repeat_count=self.num_iterations * self.args.steps_per_generation,
                                       shuffle=self.shuffle_dataset, seed=self.args.seed)

        def _generate_and_score_completions(self, inputs):
            # TRL's step_time holds the whole step; this is its sampling and scoring part (optimisation: the rest).
            t0 = time.perf_counter()
            self._pair_advantages = None
            out = super()._generate_and_score_completions(inputs)
            if self._pair_advantages is not None:  # train.grpo.group=pair: this process's slice of the gathered ones
                n, i = out["advantages"].shape[0], self.accelerator.process_index
                out["advantages"] = self._pair_advantages[i * n:(i + 1) * n].to(out["advantages"])
            self._metrics["train" if self.model.training else "eval"]["time/generate_s"].append(time.perf_counter() - t0)
            return out

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            import torch
            from accelerate.utils import gather_object

            per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # gathered
            keys = gather_object([(x["pair_id"], x["order"]) for x in inputs])
            cons, unpaired = rewards.consistency(per_func[:, CORRECTNESS].tolist(), [k[0] for k in keys],
                                                 [k[1] for k in keys])
            per_func[:, CONSISTENCY] = torch.tensor(cons, dtype=per_func.dtype, device=per_func.device)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["rewards/unpaired"].append(float(unpaired))
            if group_pairs:
                totals = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
                totals[torch.isnan(per_func).all(dim=1)] = float("nan")  # unscorable, as TRL marks it: no advantage
                adv, flat = rewards.pair_advantages(totals.tolist(), [k[0] for k in keys], scale=self.scale_rewards != "none")
                self._pair_advantages = torch.tensor(adv, dtype=per_func.dtype)
                self._metrics[mode]["frac_pair_reward_zero_std"].append(flat)
            return per_func

    return JudgeGRPOTrainer


def summary(history: list[dict]) -> dict:
    """First and last logged reward and each reward's share, the mean of the last quarter of steps (one step's
    batch is a few prompts: a single step is noisy), and the seconds of a step and of its sampling."""
    logged = [h for h in history if "reward" in h]
    if not logged:
        return {}
    tail = logged[-max(1, len(logged) // 4):]
    gen = [float(h["time/generate_s"]) for h in logged if "time/generate_s" in h]
    step = [float(h["step_time"]) for h in logged if "step_time" in h]
    out = {"grpo_reward_first": float(logged[0]["reward"]), "grpo_reward_last": float(logged[-1]["reward"]),
           "grpo_reward_last_quarter": sum(float(h["reward"]) for h in tail) / len(tail),
           # seconds a step (TRL's step_time), and of it the sampling and scoring (the rest is optimisation)
           **({"grpo_step_s": sum(step) / len(step)} if step else {}),
           **({"grpo_generate_s_per_step": sum(gen) / len(gen)} if gen else {})}
    for name in rewards.NAMES:
        key = f"rewards/{name}/mean"
        if key in logged[0]:
            out[f"grpo_{name}_first"] = float(logged[0][key])
            out[f"grpo_{name}_last_quarter"] = sum(float(h.get(key, 0.0)) for h in tail) / len(tail)
    return out
