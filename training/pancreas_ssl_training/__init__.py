"""PancreasSSLSeg training: data readers, self-supervised methods, trainer, evaluation, export."""
