"""Recipes: ordered lists of named stages (like Kaldi's ``egs/*/run.sh``)."""
