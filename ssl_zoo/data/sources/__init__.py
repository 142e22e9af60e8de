"""Data sources, one module each: digits, tfds, files (folders, zips) and numpy arrays.

Each turns its source into an `ArrayDataset`; `ssl_zoo.data.loaders` picks the source.
"""
