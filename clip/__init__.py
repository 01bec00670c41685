"""CLIP access on top of open_clip: OpenAI model names and checksummed weights, local files and
open_clip tags (`load`), OpenAI's tokenizer (`tokenize`) and the text path split open
(`TextEncoder`) for prompt-learning methods."""
from .model import (build_model, build_random, encode_image, encode_image_pre_projection, image_projection, load,
                    read_state_dict, visual_dtype)
from .text import CONTEXT_LENGTH, TextEncoder, tokenize
from .weights import MODEL_URLS, available_models, default_cache_dir, download, sha256_file, \
    url_sha256

__all__ = [
    "CONTEXT_LENGTH", "MODEL_URLS", "TextEncoder", "available_models", "build_model", "build_random",
    "default_cache_dir", "download", "encode_image", "encode_image_pre_projection", "image_projection", "load",
    "read_state_dict", "sha256_file", "tokenize", "url_sha256", "visual_dtype",
]
