"""runtime: the lean, torch-free side of audiotoken-rt (audio loading, tokenizer, schedulers, engines, CLI).

Nothing here imports torch, audiotoken or export at module level: a Jetson or CPU host installs this alone.
"""
