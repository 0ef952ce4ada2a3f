"""The log a user reads: the job's own lines (enrich.*) unless --log-level DEBUG.

At INFO and above, the chatter of the libraries under the job is cut (vLLM to its errors,
Ray and Ray Data to their warnings):
Ray Data's progress bars and its every-10-s progress lines (non-tty), its execution-plan
lines, Ray's driver INFO lines, and vLLM's per-engine INFO lines. At DEBUG all of it shows.

Call `setup_logging(level)` once in the driver, before Ray is imported or started (the CLI
and the demo do; a script that calls the pipeline directly should too).
"""

from __future__ import annotations

import logging
import os

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def library_env(level: str) -> dict[str, str]:
    """Environment variables that set the libraries' own log levels. Set in the driver's
    environment, an embedded Ray's workers (and so the vLLM engines) inherit them; on a
    cluster pass them in `ray.init(runtime_env={"env_vars": library_env(level)})`."""
    debug = level.upper() == "DEBUG"
    return {
        # vLLM logs every engine step's setup at INFO (config dumps, kv-cache sizes, graphs), and
        # at WARNING its view of the platform (no Triton, no tcmalloc, oneDNN fallbacks,
        # deprecations) at every engine start: errors only, unless DEBUG.
        "VLLM_LOGGING_LEVEL": "DEBUG" if debug else "ERROR",
        # The default level of the "ray" logger, read when Ray is imported (ray.init's default).
        "RAY_LOGGER_LEVEL": "debug" if debug else "warning",
    } | ({} if debug else QUIET_PROCESS_ENV)


# What the engine processes print outside any logger: deprecation warnings at vLLM's import,
# torch's C++ NUMA notice, and multiprocessing's note on the shared memory of an engine
# worker killed at shutdown. Cut below DEBUG.
QUIET_PROCESS_ENV = {
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,ignore:resource_tracker:UserWarning",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
}


def setup_logging(level: str) -> None:
    """Configure the driver's logging for a job run at `level` (one of LEVELS)."""
    level = level.upper()
    logging.basicConfig(level=level, format=FORMAT, force=True)
    for name, value in library_env(level).items():
        os.environ.setdefault(name, value)  # a user's explicit setting wins
    quiet_ray_data(debug=level == "DEBUG")


def quiet_ray_data(debug: bool) -> None:
    """Ray Data's progress display off and its console cut to warnings, unless `debug`.

    Settings of the driver's current DataContext: a Dataset built afterwards takes them."""
    import ray.data  # here, not at module level: `enrich --help` must not import Ray
    from ray.util import log_once

    ctx = ray.data.DataContext.get_current()
    # Off: the tqdm bars, and without a tty the "Total Progress" block logged every 10 s;
    # enrich's own status line (enrich.progress) reports rows, shards, rates and ETA instead.
    ctx.enable_progress_bars = debug
    ctx.enable_operator_progress_bars = debug
    ctx.print_on_execution_start = debug  # the execution plan, printed at every run
    if not debug:
        # Ray Data warns once that progress bars are off, which is what we asked for.
        log_once("ray_data_progress_manager_disabled")
        logging.getLogger("ray").setLevel(logging.WARNING)
        # The embedded Ray says at every start that token auth is on (its default): not news.
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_drop_auth_on_notice)
    ray_data = logging.getLogger("ray.data")
    for handler in ray_data.handlers:
        # The console only: Ray Data's own log file (session dir) keeps its DEBUG lines.
        if handler.get_name() != "console":
            continue
        handler.setLevel(logging.INFO if debug else logging.WARNING)  # INFO: Ray's default
        if not debug and not isinstance(handler.formatter, _FirstLine):
            # A failed task is logged with its traceback, twice; the CLI's last line names the
            # failure, and --log-level DEBUG shows the tracebacks.
            handler.setFormatter(_FirstLine(handler.formatter))
            handler.addFilter(_drop_trace_records)


class _FirstLine(logging.Formatter):
    """A record's first line, without its traceback (other handlers of the same record,
    like Ray Data's log file, still get the whole of it)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record).split("\n", 1)[0]
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _drop_trace_records(record: logging.LogRecord) -> bool:
    """Ray Data's records that only introduce a traceback (cut by _FirstLine) or ask to
    report a user's error as a Ray bug (it calls a failed task's exception "internal")."""
    message = str(record.msg)
    return not message.startswith(("Full stack trace", "Exception occurred in Ray Data or Ray Core internal code"))


def _drop_auth_on_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")
