"""Data files of the shared package (the radiology finding lexicon)."""
