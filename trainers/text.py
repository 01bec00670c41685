"""The path method files import `class_prompt_features` and `encode_prompts` from (it lives in trainers/common/text.py)."""
from .common.text import class_prompt_features, encode_prompts  # noqa: F401
