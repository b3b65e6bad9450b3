"""ftcore: packed tiny training runs for capacity and scaling curves of fine-tuning (pure PyTorch, no Ray)."""
__version__ = "0.1.0"

from ftcore.config import MemberConfig, TrainConfig, member_from_dict  # noqa: E402,F401
from ftcore.fit import MemberResult, fit  # noqa: E402,F401
from ftcore.registry import ADAPTERS, MODELS, TASKS  # noqa: E402,F401
