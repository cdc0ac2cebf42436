"""The one exception type the data layer raises for bad input."""


class DataError(ValueError):
    """Input data that cannot be read as asked: the message says which file, line and why."""
