"""The evaluation: the AudioToken paper's metrics (AIS, IIS, AIC, FID; docs/method.md#evaluation-metrics) of pictures
drawn from sound clips, and ``compare``, which draws two bundles side by side.

The data flow, one module per step (each imports only the ones before it; none imports torch at import time but
``models``, ``networks`` and ``stand_ins``, which only ``Evaluator`` and ``make-random --eval`` load):

    inputs     pictures paired with their clips, labels and frames; each clip as Wav2CLIP hears it
    metrics    win rates, zero-shot agreement, the Frechet distance, their intervals (numpy)
    networks   the FID Inception and Wav2CLIP, written here (no library provides them without torchvision or
               torchaudio: its docstring says why)
    models     the model files of --models DIR, their sha256 against the published files', the loaders
    stand_ins  random stand-ins of those files (make-random --eval)
    scoring    options, Evaluator (models -> embeddings -> metrics) and Scores
    report     tables, JSON, the picture sheet and page
    evaluate   the ``evaluate`` command; compare: the ``compare`` command
"""
