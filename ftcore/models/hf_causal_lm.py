"""`hf_causal_lm`: a Hugging Face causal LM as the frozen base of a pack (DESIGN.md §7, multi-LoRA training).

Loaded with `AutoModelForCausalLM.from_pretrained(model.path)` (and its `AutoTokenizer`, `ftcore.tokenizers`) from
local files only unless `model.download: true` — so a sweep never fetches weights behind the user's back. One copy
per pack, shared by all E members: the module has no member axis; the E members' prompts are folded into the
batch,

    ids (E, B, T)  ->  lm(ids.reshape(E·B, T)).logits  ->  (E, B, T, V),

and a LoRA adapter's wrappers (adapters/lora_modules.py) unfold the rows per member again inside every adapted
linear, so E fine-tunes cost one base forward over E batches (S-LoRA/Punica's SGMV; mLoRA).
`model.output: hidden` reads the last layer's hidden states instead (after the final norm; the LM head is not run),

    ids (E, B, T)  ->  lm.base_model(ids).last_hidden_state  ->  (E, B, T, H),

for tasks that pool them into text embeddings (`feature_retrieval`); its out_dim is H, not V. The base stays in
eval mode (its dropout off) whatever mode the adapted model is put in: a frozen base is a fixed function.
Positions are right-padded by the tasks; causal attention never lets padding reach an earlier position, so no
attention mask is needed.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ftcore.fields import check
from ftcore.registry import MODELS


def _local(path: str, download: bool) -> dict:
    return {"local_files_only": not download}


OUTPUTS = ("logits", "hidden")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_path(path: str, download: bool) -> None:
    """A local directory with config.json and the weights (what `save_pretrained` writes), unless downloads are
    allowed."""
    check(bool(path), "model.path", "a local directory saved with save_pretrained (or a hub id with "
          "model.download: true)", path)
    if not download:
        check((Path(path) / "config.json").is_file(), "model.path",
              "a local directory with config.json (save_pretrained's output); set model.download: true to fetch "
              "a hub id", path)
        check(any((Path(path) / w).is_file() for w in WEIGHT_FILES), "model.path",
              f"a directory with the model's weights ({' or '.join(WEIGHT_FILES[::2])}, save_pretrained's output)",
              path)


def _loading(path: str, what: str, load):
    """load() with transformers' errors (a broken config.json, missing files) as the one-line config error."""
    try:
        return load()
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"model.path: cannot load the {what} of {path!r} ({str(e).splitlines()[0][:200]})") from None


@functools.lru_cache(maxsize=8)
def hf_config(path: str, download: bool = False):
    from transformers import AutoConfig
    return _loading(path, "config", lambda: AutoConfig.from_pretrained(path, **_local(path, download)))


def load_tokenizer(path: str, download: bool = False):
    """The model's tokenizer; a directory without tokenizer files is refused (transformers would hand back an
    empty GPT-2 tokenizer that encodes every text to no ids)."""
    from transformers import AutoTokenizer
    tok = _loading(path, "tokenizer", lambda: AutoTokenizer.from_pretrained(path, **_local(path, download)))
    check(len(tok("0a", add_special_tokens=False)["input_ids"]) > 0, "model.path",
          "a directory with a tokenizer that encodes text (tokenizer.json or vocab files: the tokenizer's "
          "save_pretrained output)", path)
    return tok


def model_hidden_size(path: str, download: bool = False) -> int:
    """H, the width of the last hidden states (the input embedding's columns)."""
    return int(meta_model(path, download).get_input_embeddings().weight.shape[1])


def model_vocab_size(path: str, download: bool = False) -> int:
    """Rows of the model's output logits (config.vocab_size)."""
    return int(hf_config(path, download).vocab_size)


@functools.lru_cache(maxsize=8)
def meta_model(path: str, download: bool = False) -> nn.Module:
    """The model's structure on the meta device (no weights read, no memory): what config checks look at before
    anything runs — `adapter.targets` against its linear modules, `bias_only` against its biases."""
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(hf_config(path, download))


def has_biases(path: str, download: bool = False) -> bool:
    """Whether the model has any bias parameter (GPT-2 yes, Llama no)."""
    return any(n.rpartition(".")[2] == "bias" for n, _ in meta_model(path, download).named_parameters())


@dataclass
class HFCausalLMConfig:
    name: str = "hf_causal_lm"
    path: str = ""            # local dir (save_pretrained) or, with download: true, a hub id
    download: bool = False    # allow transformers to fetch `path` from the hub
    output: str = "logits"    # logits (E, B, T, V) | hidden: the last hidden states (E, B, T, H)

    per_member = ()
    required = ("path",)      # no default: a config must name its model

    def __post_init__(self):
        check_path(self.path, self.download)
        check(self.output in OUTPUTS, "model.output", f"one of {', '.join(OUTPUTS)}", self.output)


class FrozenHF(nn.Module):
    """What every wrapper of one frozen Hugging Face model shared by a pack does alike (hf_causal_lm, hf_vlm): the
    model lives in the attribute named by HF_ATTR (its parameters' and LoRA sites' prefix), stays in eval mode, is
    frozen and counted whole."""
    member_axis = False       # parameters have no leading member axis (one copy per pack)
    HF_ATTR = ""

    def __init__(self):
        super().__init__()
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()        # one loading bar per pack would flood a sweep's log

    def train(self, mode: bool = True):
        super().train(mode)
        getattr(self, self.HF_ATTR).eval()      # the frozen base is a fixed function: dropout stays off
        return self

    def freeze(self):
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def n_params(self) -> int:
        return sum(p.numel() for p in getattr(self, self.HF_ATTR).parameters())


@MODELS.register("hf_causal_lm")
class HFCausalLM(FrozenHF):
    """ids (E, B, T) -> logits (E, B, T, V) (or, `output: hidden`, the last hidden states (E, B, T, H)) of one
    frozen HF causal LM shared by the pack's E members."""
    Config = HFCausalLMConfig
    HF_ATTR = "lm"

    def __init__(self, cfg: HFCausalLMConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        from transformers import AutoModelForCausalLM
        self.cfg, self.E = cfg, 1
        self.lm = AutoModelForCausalLM.from_pretrained(cfg.path, dtype=torch.float32,
                                                       **_local(cfg.path, cfg.download))
        self.lm.eval()
        if cfg.output == "hidden":
            H = self.lm.get_input_embeddings().weight.shape[1]
            if out_dim != H:
                raise ValueError(f"model.path: the model's hidden states have {H} dimensions, the task expects {out_dim}")
            return
        V = self.lm.get_output_embeddings().weight.shape[0]
        if out_dim != V:
            raise ValueError(f"model.path: the model's output vocabulary has {V} rows, the task expects {out_dim}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, T) token ids (any dtype; tasks carry ids as floats) -> (E, B, T, V) (hidden: (E, B, T, H))."""
        E, B, T = x.shape[:3]
        ids = x.reshape(E * B, T).round().long()
        if self.cfg.output == "hidden":
            return self.lm.base_model(input_ids=ids, use_cache=False).last_hidden_state.reshape(E, B, T, -1)
        return self.lm(input_ids=ids, use_cache=False).logits.reshape(E, B, T, -1)
