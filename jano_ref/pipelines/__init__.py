"""Prompt -> (velocity field, noise, sigmas, decode) for a family of models, ready for ``jano_ref.generate``."""
