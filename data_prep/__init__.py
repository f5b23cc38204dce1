"""Corpus-specific preparation that ends in one standard manifest (like Kaldi's ``local/``)."""
