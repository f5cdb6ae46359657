"""The runtime's services: ``serve`` (a bundle on NVIDIA Triton through PyTriton, with ``stub`` as each model's
Python-backend file), ``triton-repo`` (a model repository for a stock Triton, with ``triton_model`` as its BLS model),
and their load figures (``bench``) and soak test (``soak``). They run in ``.venv-serve`` (PyTriton needs numpy < 2)
over the engine core (``runtime.pipeline`` and below); docs/serving.md tells how to run them.
"""
