"""SFT rows -> the dataset TRL's ``SFTTrainer`` trains on; preference rows -> ``DPOTrainer``'s.

Loss is on the judgment only: SFT rows (``messages`` = system, user, assistant) become TRL's
conversational prompt-completion format, so the prompt is masked whatever the chat template
(SmolLM2's ChatML has no ``{% generation %}`` tags, so ``assistant_only_loss`` cannot be used).
"""
from __future__ import annotations


def sft_dataset(rows: list[dict]):
    """SFT rows (``messages``: ..., assistant last) -> a ``datasets.Dataset`` of prompt/completion.

    Only ``prompt`` and ``completion`` are kept (metadata columns such as nested ``judge_meta`` do not
    go through the trainer).
    """
    from datasets import Dataset

    prompts, completions = [], []
    for i, r in enumerate(rows):
        msgs = r.get("messages")
        if not isinstance(msgs, (list, tuple)) or len(msgs) < 2:
            raise ValueError(f"SFT row {i}: 'messages' must be a list of >= 2 turns, got {type(msgs).__name__}")
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f"SFT row {i}: the last message must be the assistant's judgment, got role {msgs[-1]['role']!r}")
        prompts.append(msgs[:-1])
        completions.append(msgs[-1:])
    return Dataset.from_dict({"prompt": prompts, "completion": completions})


def dpo_dataset(rows: list[dict]):
    """Preference rows (``dpo_data``: conversational ``prompt``, ``chosen``, ``rejected``) -> the
    ``datasets.Dataset`` TRL's ``DPOTrainer`` reads (metadata columns dropped)."""
    from datasets import Dataset

    def turns(msgs, i: int, key: str) -> list[dict]:
        if not isinstance(msgs, (list, tuple)) or not msgs:
            raise ValueError(f"DPO row {i}: {key!r} must be a non-empty list of turns")
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]

    cols: dict[str, list] = {"prompt": [], "chosen": [], "rejected": []}
    for i, r in enumerate(rows):
        for k in cols:
            cols[k].append(turns(r.get(k), i, k))
    return Dataset.from_dict(cols)
