"""Errors a user acts on, which the CLI reports as one line (`enrich: error: ...`).

The classes raised elsewhere keep their modules (read.InputError, commit.OutputExistsError);
these are the ones that had no class. The CLI maps each class to an exit status in one table
(`enrich.cli.usage_errors`).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """The job spec or the flags are invalid (found before any work)."""


class ModelNotFoundError(FileNotFoundError):
    """The model or adapter named by the job is not where it says (a local folder that does
    not exist, an s3:// prefix with no objects). A FileNotFoundError, so existing handlers
    keep working; raise it where a model location is resolved (model_store)."""
