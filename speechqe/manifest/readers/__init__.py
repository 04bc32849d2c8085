"""One reader per format a speech set can come in (see ``docs/speech-sets.md``).

Each reader builds a :class:`~speechqe.manifest.core.SpeechSet` by reading its lists and the
audio files' headers and hashing their contents; samples are decoded later, by the runner.
"""
