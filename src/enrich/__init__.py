"""enrich: typed, validated tables from raw text with small fine-tuned LLMs."""

__all__ = ["read_output"]


def __getattr__(name: str) -> object:
    # Lazy: `import enrich` stays cheap (no pyarrow/fsspec import) until the reader is used.
    if name == "read_output":
        from enrich.output import read_output

        return read_output
    raise AttributeError(f"module 'enrich' has no attribute {name!r}")
