"""Feast over the lake (store), the offline stores, Redis, and the online side (online).
May import lake, stream, sim, contract and the base modules.
"""
