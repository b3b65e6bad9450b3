"""Tasks. Importing this package registers every task."""
from ftcore.tasks import ftc_relabel, icl_regression, lora_teacher  # noqa: F401
from ftcore.tasks import mqar, sparse_parity  # noqa: F401
from ftcore.tasks import kv_retrieval  # noqa: F401
from ftcore.tasks import dual_modes_task  # noqa: F401
from ftcore.tasks.base import Task  # noqa: F401
