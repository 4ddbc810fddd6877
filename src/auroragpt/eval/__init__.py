"""Evaluation: perplexity on validation splits and lm-evaluation-harness tasks."""
