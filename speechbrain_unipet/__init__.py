"""speechbrain-unipet: parameter-efficient tuning of SSL speech encoders for
speaker verification, as SpeechBrain lobes and recipes."""

__version__ = "0.1.0"
