"""enrich: typed, validated tables from raw text with small fine-tuned LLMs."""
