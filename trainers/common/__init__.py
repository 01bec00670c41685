"""What several methods share: prompt encoding and templates, CoOp's prompt text encoder,
Tip-Adapter's cache and search, the masks of mask tuning and the masked-encoder combinations.
Method files import from here (`trainers/text.py` and `trainers/templates.py` keep the paths
that method files written for earlier releases import)."""
