"""Video data: shard building, streaming, DALI/PyAV decoding, sampling, augmentation, synthetic data.

Never imports `core`: sizes, frame counts and mean/std arrive as plain values.
"""
