"""``python -m audiotoken_rt ...`` (e.g. ``accelerate launch -m audiotoken_rt train ...``): the app's entry point."""

from audiotoken_rt.cli import main

main()
