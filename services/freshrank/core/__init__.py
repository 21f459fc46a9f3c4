"""Shared core: contracts (codec, topics, model repository) and service plumbing.

Nothing here imports a service package; services import from here.
"""
