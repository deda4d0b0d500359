"""Prints the method and option tables of docs/methods.md from the registry:

python -m speechbrain_unipet.pet
"""

from speechbrain_unipet.pet.methods import method_tables

print(method_tables(), end="")
