"""Training: fine-tune the judge on its kept judgments.

- ``data``: SFT rows -> the prompt/completion dataset (loss on the judgment only);
- ``args``: a ``TrainConfig`` -> ``trl.SFTConfig`` keywords, precision, LoRA;
- ``worker``: one process, ``load`` -> ``fit`` -> ``save`` (no Ray);
- ``launch``: Ray Train (``TorchTrainer``) runs the worker on N processes, DDP or DeepSpeed ZeRO-2/3.
"""
