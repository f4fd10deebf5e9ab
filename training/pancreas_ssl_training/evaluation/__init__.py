"""Metrics, generalization protocols, calibration and result tables/plots."""
