"""``train.verdict_weight``: SFT whose loss weighs the verdict token of each target against its other tokens.

A verdict-first target is one verdict token among the verdict line's fixed words, an explanation and EOS; a
reasoning-first one, a verdict after a paragraph. With plain SFT the loss is spent on the text, the decision is
one token of it. Here a target token's loss is multiplied by ``verdict_weight`` where it is a verdict: an option
(``A``/``B``, or ``Yes``/``No``) right after its form's opening (``: [[``, or ``dict:`` of ``Verdict:``), found in
the labels themselves, so every chat template, packing and judgment format works the same. The sum is divided by
the number of target tokens, as TRL's own loss is, so ``verdict_weight=1`` is plain SFT.
"""
from __future__ import annotations

from typing import Any

from selftaught.parsing import VERDICT_FIRST, VERDICT_OPTIONS, VERIFY_OPEN, VERIFY_OPTIONS, verdict_open

# (the verdict's opening, its options): the pairwise line of both formats ends in the same ": [[".
FORMS = ((verdict_open(VERDICT_FIRST), VERDICT_OPTIONS), (VERIFY_OPEN, VERIFY_OPTIONS))


def verdict_patterns(tokenizer) -> list[tuple[int, int, list[int]]]:
    """Per verdict form: the last two token ids of its opening and its options' ids, as the tokenizer writes a
    verdict line (``"Verdict: [[A"`` -> ..., ``:``, `` [[``, ``A``)."""
    out = []
    for opening, options in FORMS:
        ids = [tokenizer.encode(opening + o, add_special_tokens=False) for o in options]
        if any(len(x) < 3 or x[:-1] != ids[0][:-1] for x in ids):
            raise ValueError(f"train.verdict_weight: {opening!r} + {options} does not tokenize as one opening and "
                             "one option token with this tokenizer")
        out.append((ids[0][-3], ids[0][-2], [x[-1] for x in ids]))
    return out


def verdict_mask(labels, patterns: list[tuple[int, int, list[int]]]):
    """A bool tensor like ``labels``: True where the label is a verdict option right after its opening."""
    import torch

    mask = torch.zeros_like(labels, dtype=torch.bool)
    if labels.shape[-1] < 3:
        return mask
    for a, b, options in patterns:
        hit = torch.isin(labels[..., 2:], torch.tensor(options, device=labels.device))
        hit &= (labels[..., 1:-1] == b) & (labels[..., :-2] == a)
        mask[..., 2:] |= hit
    return mask


def weighted_sft_trainer(base: type, verdict_weight: float) -> type:
    """A subclass of TRL's ``SFTTrainer`` (``base``) whose loss weighs verdict tokens by ``verdict_weight``."""

    class VerdictWeightedSFTTrainer(base):
        def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
            import torch

            if not hasattr(self, "_verdict_patterns"):
                self._verdict_patterns = verdict_patterns(self.processing_class)
            inputs["use_cache"] = False
            labels = inputs["labels"]
            outputs = model(**inputs, fused_lm_head=True)  # log_probs: of labels[:, 1:], zero where ignored
            weights = torch.where(verdict_mask(labels, self._verdict_patterns)[:, 1:], verdict_weight, 1.0)
            n = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -(outputs.log_probs * weights.to(outputs.log_probs.dtype)).sum() / torch.as_tensor(n).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as TRL: num_items_in_batch counts every rank's tokens
            return (loss, outputs) if return_outputs else loss

    return VerdictWeightedSFTTrainer
