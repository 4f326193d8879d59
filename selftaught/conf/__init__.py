"""Hydra config (``config.yaml`` + groups) and the DeepSpeed JSONs, shipped in the package and
found with ``importlib.resources`` (``pkg://selftaught.conf``), so a wheel install needs no checkout."""
