"""The shared runtime of every method: samplers, the models as velocity fields, token cost, preset lookup, timing,
and one generation over several processes (``parallel``: CFG-parallel and sequence-parallel under torchrun).

It imports ``models/`` and nothing else of jano_ref; the methods (``jano``, ``jit``, ``baselines``) build on it.
"""
