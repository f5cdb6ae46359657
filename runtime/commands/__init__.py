"""The runtime's commands: ``generate``, ``edit``, ``compose``, ``info``, ``bench`` and the checks of ``doctor``, each
a typer function the app (``audiotoken_rt.cli``) assembles, over the engine core (``runtime.pipeline`` and below).

``cli`` holds what every command of the project shares (one-line errors, options read from the options
dataclasses); ``jobs`` the batch that ``generate``, ``edit`` and ``compose`` share (output checks, the drawing loop,
the picture lines on stdout, the timing table).
"""
