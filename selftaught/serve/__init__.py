"""``selftaught serve``: a trained judge as an HTTP service (``app.py``), its rows gathered into engine
batches (``batching.py``), decided by the same functions as ``selftaught judge`` (``judge.py``)."""
