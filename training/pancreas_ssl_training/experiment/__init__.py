"""Experiments: arms x seeds trained from one recipe, scored on every target, reported with
intervals (``pancreas-ssl-train experiment``; configs in ``training/experiments/``)."""
