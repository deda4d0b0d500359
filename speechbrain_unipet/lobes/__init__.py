"""SpeechBrain lobes of speechbrain-unipet."""

from speechbrain_unipet.pet.methods import PET_METHODS

from .pet_encoder import PETEncoder

__all__ = ["PET_METHODS", "PETEncoder"]
