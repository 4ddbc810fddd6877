"""Data curation between raw corpora and `data tokenize`: dedup, quality/language filters, PII, decontamination."""
