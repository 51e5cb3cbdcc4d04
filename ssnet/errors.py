"""Exceptions with messages meant for the person running the pipeline."""


class PipelineError(Exception):
    """Base class: the message alone explains the problem (no traceback needed)."""


class ConfigError(PipelineError):
    """The configuration is invalid; the message names the offending key."""


class DataError(PipelineError):
    """An input file or case is missing or malformed; the message names the file or case."""
