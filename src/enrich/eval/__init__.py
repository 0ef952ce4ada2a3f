"""Evaluation against the shared gold sets: loaders, metrics and rule-based baselines.

Nothing here needs Ray or vLLM; every module is import-light (jieba loads on first use).
"""
