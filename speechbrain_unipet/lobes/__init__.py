"""SpeechBrain lobes of speechbrain-unipet."""

from speechbrain_unipet.pet.methods import PET_METHODS

from .backends import CAMHFA, MHFA, LayerAdapterMFA
from .pet_encoder import PETEncoder

__all__ = ["CAMHFA", "MHFA", "PET_METHODS", "LayerAdapterMFA", "PETEncoder"]
