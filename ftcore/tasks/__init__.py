"""Tasks. Importing this package registers every task."""
from ftcore.tasks import (  # noqa: F401
    contrastive,
    criterion_clustering,
    digits_contrastive,
    dual_modes_task,
    feature_retrieval,
    ftc_relabel,
    icl_regression,
    kv_retrieval,
    lm_text,
    lora_teacher,
    mqar,
    needles_finetune,
    sparse_parity,
    t2i_icl,
)
from ftcore.tasks.base import Task  # noqa: F401
