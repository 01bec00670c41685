"""The path method files import `encode_prompts` from (it lives in trainers/common/text.py)."""
from .common.text import encode_prompts  # noqa: F401
