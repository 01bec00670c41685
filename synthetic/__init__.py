"""Synthetic stand-ins for what cannot be downloaded here: images in each dataset's real
layout and a tiny CLIP in OpenAI's state-dict format. Used by the tests and the demo."""
