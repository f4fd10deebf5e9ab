"""Metrics, generalization protocols, calibration and result tables/plots."""


def __getattr__(name: str):
    # ``run_evaluation`` (the CLI's ``evaluate``) pulls in the data readers and the exporter;
    # imported on first use so that ``evaluation.metrics`` and friends stay light.
    if name == "run_evaluation":
        from .evaluate import run_evaluation

        return run_evaluation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
