"""runtime: the lean, torch-free leaf of audiotoken-rt, what a Jetson, a CPU host or a server installs alone.

The engine contract and constants (``contract``), bundles and their manifest (``bundle``), audio loading
(``audio``), the prompt tokenizer (``tokenizer``), portable noise (``noise``), numpy schedulers (``schedulers``),
engine backends (``backends``, ``tensorrt``), the pipeline that chains them (``pipeline``), pictures
(``picture``), atomic writes (``atomic``), and the ``generate``, ``info`` and ``bench`` commands with what every
command shares (``command``). Nothing here imports ``audiotoken``, ``export``, the app or torch, at module level
or inside functions (tests/test_layering.py).
"""
