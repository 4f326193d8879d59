"""Token-budget micro-batches: SFT rows packed into padding-free sequences (TRL's best-fit-decreasing
packing, position ids restarting per row), with the gradient accumulation derived from the data so an
optimizer step still sees the recipe's number of rows.

Micro-batches of one ~600-token row leave a GPU latency-bound; a packed micro-batch of
``train.max_tokens_per_batch`` tokens holds several rows and no padding. TRL packs inside the trainer,
so the plan packs the same token lengths with the same function first, to know how many rows a pack
holds before the trainer (and DeepSpeed's batch config) is built. The loss is unchanged: the same
completion-only labels, one causal block per row (packed rows do not attend to each other).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from selftaught.training.budget import Budget


@dataclass(frozen=True)
class PackPlan:
    rows: int
    packs: int  # packed sequences of at most ``budget`` tokens
    budget: int
    tokens: int  # tokens in all rows (as packed: a row longer than the budget is cut to it)
    gradient_accumulation_steps: int  # packs per worker per optimizer step
    sized: Optional[Budget] = None  # how the budget was sized (None: train.max_tokens_per_batch)

    @property
    def rows_per_pack(self) -> float:
        return self.rows / self.packs if self.packs else 0.0

    def as_dict(self) -> dict:
        return {"rows": self.rows, "packs": self.packs, "budget": self.budget, "tokens": self.tokens,
                "rows_per_pack": round(self.rows_per_pack, 3), "gradient_accumulation_steps": self.gradient_accumulation_steps,
                **(self.sized.as_dict() if self.sized else {"budget_source": "train.max_tokens_per_batch"})}


def row_lengths(dataset, tokenizer) -> list[int]:
    """Tokens of each prompt/completion row, as the chat template renders the whole conversation."""
    return [len(tokenizer.apply_chat_template(list(p) + list(c), tokenize=True, return_dict=False))
            for p, c in zip(dataset["prompt"], dataset["completion"])]


def plan(lengths: list[int], budget: int, rows_per_step: int, world_size: int, sized: Optional[Budget] = None) -> PackPlan:
    """Pack ``lengths`` into sequences of ``budget`` tokens as TRL will (``pack_dataset``, bfd); the
    accumulation that makes one optimizer step hold about ``rows_per_step`` rows per worker
    (the recipe's per_device_batch_size x gradient_accumulation_steps), given 1 pack per micro-batch."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    packed = pack_dataset(Dataset.from_dict({"input_ids": [[0] * n for n in lengths]}), budget, strategy="bfd")
    packs = len(packed)
    per_pack = len(lengths) / packs if packs else 1.0
    accum = max(1, round(rows_per_step / per_pack))
    # Every worker needs a micro-batch per accumulation step: never accumulate past its share of packs.
    accum = min(accum, max(1, packs // max(1, world_size)))
    return PackPlan(rows=len(lengths), packs=packs, budget=budget, tokens=sum(min(n, budget) for n in lengths),
                    gradient_accumulation_steps=accum, sized=sized)
