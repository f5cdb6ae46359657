"""runtime: the lean, torch-free leaf of audiotoken-rt, what a Jetson, a CPU host or a server installs alone.

Two floors. The engine core: the engine contract and constants (``contract``), bundles and their manifest
(``bundle``, ``external_data``), audio loading (``audio``), the prompt tokenizer (``tokenizer``), portable noise
(``noise``), numpy schedulers (``schedulers``) and the sampling recipe over them (``sampling``), engine backends
(``backends``, ``tensorrt``), the pipeline that chains them (``pipeline``, ``regions``, ``source_picture``),
pictures (``picture``), errors (``errors``) and atomic writes (``atomic``). Above it, the commands (``commands``:
generate, edit, compose, info, bench, doctor's checks, the batch they share) and the services (``serving``: serve
on Triton, triton-repo, their load and soak tests). Nothing here imports ``audiotoken``, ``export``, the app or
torch, at module level or inside functions (tests/test_layering.py); the core imports nothing from ``commands`` or
``serving`` (the same test).
"""
