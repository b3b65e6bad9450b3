"""Models with a leading member axis. Importing this package registers every model."""
from ftcore.models import embeddings, hf_backbone, hf_causal_lm, hf_vlm, hybrid, looped, mamba, transformer  # noqa: F401
from ftcore.models.mlp import PackedMLP, build_model  # noqa: F401
