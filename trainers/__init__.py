"""One module per method; importing this package registers every trainer."""
from . import taskres, taskres_enhanced_base, zsclip  # noqa: F401
