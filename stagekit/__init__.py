"""Small shared pieces every stage uses: atomic files, hashing, stage records, privacy switches.

Light on purpose (no torch): the registry imports it on inference surfaces.
"""
