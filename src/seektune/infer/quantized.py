"""`--load-in 8bit|4bit`: bitsandbytes quantization for inference (GPU only)."""

from __future__ import annotations

from seektune.errors import SeektuneError

CHOICES = ("8bit", "4bit")


def quantization_kwargs(load_in: str, compute_dtype) -> dict:
    """from_pretrained arguments for a bitsandbytes-quantized model on the GPU; a clear error anywhere else."""
    import torch

    if load_in not in CHOICES:
        raise SeektuneError(f"--load-in {load_in!r}: choose 8bit or 4bit")
    if not torch.cuda.is_available():
        raise SeektuneError(
            f"--load-in {load_in} needs an NVIDIA GPU (bitsandbytes quantized kernels run on CUDA only) and "
            "torch sees none here. Run without --load-in on this machine, or on a GPU machine"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise SeektuneError(
            f"--load-in {load_in} needs bitsandbytes: pip install 'seektune[gpu]' (or pip install bitsandbytes)"
        ) from e
    from transformers import BitsAndBytesConfig

    if load_in == "8bit":
        q = BitsAndBytesConfig(load_in_8bit=True)
    else:
        q = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype if compute_dtype != torch.float32 else torch.bfloat16,
        )
    return {"quantization_config": q, "device_map": {"": 0}, "dtype": compute_dtype}
