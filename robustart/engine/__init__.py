"""Batching, devices, job keys, shards and resume."""
