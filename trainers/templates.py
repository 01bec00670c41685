"""The path method files import the prompt templates from (trainers/common/templates.py)."""
from .common.templates import (CUSTOM_TEMPLATES, GENERIC_TEMPLATE, IMAGENET_TEMPLATES_SELECT,  # noqa: F401
                               custom_template)
