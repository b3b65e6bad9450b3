"""Shared test set-up."""
import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. The interpreter replaces
# @triton.jit at decoration time, so this must be set before any kernels module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(params=["cuda"] if torch.cuda.is_available() else ["cpu"])
def kernel_device(request) -> torch.device:
    """Where kernel tests put their tensors: the GPU when there is one, else CPU tensors in Triton's interpreter
    (TRITON_INTERPRET above; one process cannot have both: the interpreter replaces @triton.jit at import)."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: intra-op threads only add contention on the shared 2-core runner."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _environment_restored():
    """A test that starts a sweep in-process (sweeps.run, run_sweep) leaves what `init_ray` sets for the local Ray
    in os.environ (RAY_AUTH_MODE, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Tune's logger switch ...), which every later
    subprocess would inherit: e.g. a `ray start` worker node refuses to join with clusters disabled."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """tiny_hf(arch) -> a directory holding a tiny random GPT-2 or Llama and its tokenizer, written with
    save_pretrained (ftcore.models.hf_tiny): the real HF loading path, nothing downloaded. Built once per session."""
    built = {}

    def make(arch: str = "gpt2"):
        if arch not in built:
            from ftcore.models.hf_tiny import save_tiny
            built[arch] = str(save_tiny(tmp_path_factory.mktemp(f"hf_{arch}"), arch, n_embd=32, n_layer=2, n_head=4,
                                        vocab_size=300))
        return built[arch]
    return make
