"""seektune: LoRA fine-tuning for DeepSeek-family language models."""

__version__ = "0.1.0"


def train(config=None, **kwargs):
    from seektune.training.run import train as _train

    return _train(config, **kwargs)


def load(run_dir, **kwargs):
    from seektune.api import load as _load

    return _load(run_dir, **kwargs)


__all__ = ["train", "load", "__version__"]
