"""Tasks. Importing this package registers every task."""
from ftcore.tasks import ftc_relabel, icl_regression, lora_teacher  # noqa: F401
from ftcore.tasks.base import Task  # noqa: F401
