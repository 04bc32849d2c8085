"""Speaker embeddings, similarity and verification error rates.

* :mod:`.encoders`: speaker encoders behind one interface (``embed(16 kHz float32 signal) ->
  unit-norm vector``): Resemblyzer's GE2E d-vector (the offline default; weights from the
  Resemblyzer wheel, verified) and SpeechBrain's ECAPA-TDNN (``spkrec-ecapa-voxceleb`` or any
  local ``from_hparams`` folder).
* :mod:`.eer`: cosine similarity and the equal error rate of same/different-speaker trials.

Importing this package is cheap: torch, resemblyzer and speechbrain are imported lazily.
"""

from __future__ import annotations

from .eer import EERResult, cosine_similarity, eer, trial_scores
from .encoders import ENCODERS, EncoderConfig, SpeakerEncoder, load_encoder

__all__ = [
    "ENCODERS",
    "EERResult",
    "EncoderConfig",
    "SpeakerEncoder",
    "cosine_similarity",
    "eer",
    "load_encoder",
    "trial_scores",
]
