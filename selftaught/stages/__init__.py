"""The stages, each declared once in its own module (``SPEC``, a ``base.StageSpec``).

``PIPELINE`` is the order the driver runs them in each round (``driver.Run.pipeline``); a stage's
input is the output of the one before it, or of the ``sources`` it names. ``eval`` runs apart, once per judge (round 0: the seed),
and training (``selftaught.training``) between ``sft_data`` and ``eval``; ``verdicts`` and ``grades``
run alone (``selftaught judge``).
"""
from selftaught.stages import (categorize, dpo_data, evaluate, grade_pairs, grades, grpo_data, holdout, judge, load,
                               neighbors, pairs, select, sft_data, verdicts, verify_pairs)

# holdout (eval.holdout) sets instructions aside before select; holdout_neighbors and holdout_pairs make their
# pairs once; select reads categorize. neighbors (pairs.rejected=neighbor|mixed) finds each selected instruction
# similar ones of the pool, which pairs answers. judge (pairwise verdicts), grade_pairs (absolute gradings) and
# verify_pairs (yes/no on one answer) read the pairs; judge.mode picks which run, and sft_data reads them all.
# dpo_data (train.objective=dpo|sft_then_dpo) reads the judge's and verify_pairs'; grpo_data (train.objective=grpo|sft_then_grpo)
# the pairs.
PIPELINE = (load.SPEC, categorize.SPEC, holdout.SPEC, neighbors.HOLDOUT, pairs.HOLDOUT, select.SPEC, neighbors.SPEC,
            pairs.SPEC, judge.SPEC, grade_pairs.SPEC, verify_pairs.SPEC, sft_data.SPEC, dpo_data.SPEC,
            grpo_data.SPEC)

EVAL = evaluate.SPEC
VERDICTS = verdicts.SPEC  # ``selftaught judge``: a file of pairs, decided by a judge
GRADES = grades.SPEC  # ``selftaught judge judge_file.mode=absolute``: a file of responses, scored 1-5

__all__ = ["PIPELINE", "EVAL", "VERDICTS", "GRADES"]
