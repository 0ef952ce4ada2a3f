"""Errors a user acts on: reported as one line, `enrich: error: <message>`, and a status.

2: an error of the job found before any work (bad flag or spec, missing input, output inside
input, another fingerprint's output without --overwrite, model not found): `usage_errors`,
THE table. 3: another live run holds the output's lease (retry later; nothing of this run was
written). 1: a run that failed (anything else, or anything raised inside Ray). The classes
raised elsewhere keep their modules (read.InputError, commit.OutputExistsError); the ones
below had no class.
"""

from __future__ import annotations

import sys
import traceback

from pydantic import ValidationError

PROG = "enrich"
USAGE_ERROR, RUN_FAILED, OUTPUT_LOCKED = 2, 1, 3


class ConfigError(ValueError):
    """The job spec or the flags are invalid (found before any work)."""


class ModelNotFoundError(FileNotFoundError):
    """The model or adapter named by the job is not where it says (a local folder that does
    not exist, an s3:// prefix with no objects). A FileNotFoundError, so existing handlers
    keep working; raise it where a model location is resolved (model_store)."""


class UsageError(Exception):
    """A bad command line (argparse's complaint), reported like any other error."""


def usage_errors() -> list[tuple[type[BaseException], int]]:
    """Exceptions that mean "fix the job, nothing ran", with their exit status: THE table.
    Anything else, or any of these raised while the run was under way (inside Ray), is a
    failed run (exit 1). Imported here, not at module level: `--help` stays fast."""
    from enrich.commit import OutputExistsError
    from enrich.lease import OutputLockedError
    from enrich.read import InputError

    return [
        (UsageError, USAGE_ERROR),  # bad flag
        (ConfigError, USAGE_ERROR),  # bad spec or flag value (pydantic ValidationError, YAML)
        (ValidationError, USAGE_ERROR),
        (InputError, USAGE_ERROR),  # missing input, no shards, unknown extension
        (OutputExistsError, USAGE_ERROR),  # another fingerprint's output without --overwrite
        (ModelNotFoundError, USAGE_ERROR),  # model or adapter not where the job says
        (OutputLockedError, OUTPUT_LOCKED),  # another live run writes this output: retry later
    ]


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line; pydantic's errors as `--flag: problem; ...`."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
            msg = str(err["msg"]).removeprefix("Value error, ")
            if not loc:  # a check across fields (model validator): its message says it all
                parts.append(msg)
                continue
            flag = "--" + loc[-1].replace("_", "-")
            nested = f" ({'.'.join(loc)})" if len(loc) > 1 else ""  # the key in a YAML spec
            parts.append(f"{flag}{nested}: {msg}")
        return "; ".join(parts)
    text = " ".join(str(exc).split())  # multi-line messages joined, whitespace squeezed
    return text or type(exc).__name__


def raised_in_ray(exc: BaseException) -> bool:
    """Raised by a Ray task or actor, i.e. while the run was under way."""
    if "ray" not in sys.modules:
        return False
    from ray.exceptions import RayError

    return isinstance(exc, RayError)


def _cause(exc: BaseException) -> BaseException:
    """The user-level error inside Ray's wrappers (RayTaskError.cause, Ray Data's
    UserCodeException chained from it), for its message."""
    for _ in range(8):  # a few wrappers deep at most
        if not raised_in_ray(exc):
            break
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    return exc


def exit_status(exc: BaseException) -> int:
    """The status of usage_errors' table (2, or 3 for a locked output), else 1."""
    if raised_in_ray(exc):
        return RUN_FAILED
    for cls, status in usage_errors():
        if isinstance(exc, cls):
            return status
    return RUN_FAILED


def report_error(exc: BaseException, debug: bool) -> int:
    """Print `enrich: error: <message>` (after the traceback when `debug`); the exit status."""
    status = exit_status(exc)
    if debug:
        traceback.print_exception(exc)
    # Ray appends its retry advice to a task's exception after a newline: keep the first line.
    cause = _cause(exc)
    message = str(cause).split("\n", 1)[0].strip() if raised_in_ray(exc) else one_line(cause)
    message = message or type(cause).__name__
    if status == RUN_FAILED and not debug:
        message += " (the run failed; --log-level DEBUG shows the traceback)"
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return status
