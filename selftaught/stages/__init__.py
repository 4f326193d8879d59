"""The stages, each declared once in its own module (``SPEC``, a ``base.StageSpec``).

``PIPELINE`` is the order the driver runs them in each round (``driver.Run.pipeline``); a stage's
input is the output of the one before it. ``eval`` runs apart, once per judge (round 0: the seed),
and training (``selftaught.training``) between ``sft_data`` and ``eval``; ``verdicts`` and ``grades``
run alone (``selftaught judge``).
"""
from selftaught.stages import categorize, evaluate, grades, judge, load, pairs, select, sft_data, verdicts

PIPELINE = (load.SPEC, categorize.SPEC, select.SPEC, pairs.SPEC, judge.SPEC, sft_data.SPEC)
EVAL = evaluate.SPEC
VERDICTS = verdicts.SPEC  # ``selftaught judge``: a file of pairs, decided by a judge
GRADES = grades.SPEC  # ``selftaught judge judge_file.mode=absolute``: a file of responses, scored 1-5

__all__ = ["PIPELINE", "EVAL", "VERDICTS", "GRADES"]
