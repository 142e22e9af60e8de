"""Data errors: the named, actionable `DataError` hierarchy raised by `ssl_zoo.data`.

Every class is a `ValueError`, so callers may catch either the precise class or both.
"""


class DataError(ValueError):
    """Base class of the data errors raised by `ssl_zoo.data` (a `ValueError`)."""


class UnknownDatasetError(DataError):
    """A source string that is neither a known data set name nor an existing path."""


class DatasetNotFoundError(DataError):
    """A known tensorflow-datasets name that is not prepared locally."""


class MissingPathError(DataError):
    """A source path (folder, archive, .npz) that does not exist."""


class EmptyDatasetError(DataError):
    """A data set without any example (e.g. a folder or archive without image files)."""


class EmptyClassError(DataError):
    """A class folder that holds no image file."""


class LayoutError(DataError):
    """A folder or archive whose images are not laid out as <class>/ or <split>/<class>/."""


class SplitNotFoundError(DataError):
    """The requested split does not exist in the source."""


class CorruptImageError(DataError):
    """One or more image files could not be read or decoded; `.paths` lists them."""

    def __init__(self, message, paths=()):
        super().__init__(message)
        self.paths = list(paths)


class CorruptArchiveError(DataError):
    """An archive (.zip) that is truncated, damaged or not a zip archive at all."""


class LabelError(DataError):
    """Labels with the wrong length, type or range, or missing where they are needed."""


class ImageShapeError(DataError):
    """Images with the wrong rank, channels, dtype or value range, or mismatched sizes."""
