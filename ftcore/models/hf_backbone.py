"""`hf_backbone`: a Hugging Face causal LM as the frozen sequence backbone of a feature-token task — the
multimodal-LLM recipe in miniature (LLaVA, Liu et al. 2023: a trained projector maps another modality into a frozen
LLM's embedding space; Lu et al. 2022, "Frozen pretrained transformers as universal computation engines").

Any `SequenceTask` (tokens of F features in, O outputs per position) runs on it: per member a trained read-in and
read-out (ftcore's own `PackedLinear`, the sequence models' nn.Linear default init), one frozen transformer stack
shared by the pack (`AutoModel.from_pretrained(model.path)`: no LM head; its own position embeddings):

    x (E, B, T, F) -> read_in (E, F, H) -> inputs_embeds (E·B, T, H) -> lm(...).last_hidden_state (E·B, T, H)
                   -> read_out (E, H, O) -> (E, B, T, O)

The read-in/read-out are the member's own parameters (leading member axis, trained under every adapter: `freeze`
freezes the transformer only; over a trained base, `model.from`, every member starts from the source's), so
`adapter: lora` tunes the transformer's linears (`adapter.targets`, e.g. [c_attn] for GPT-2) on top of the trained
projection, and LoRA rank 0 trains the projection alone (the frozen pretrained transformer). A task whose first
input features are words (`Task.input_words`: t2i_icl's texts) has them enter as the model's own tokens: the
read-in's row of word w starts at the mean of the model's input embeddings of the tokens of " w" (the same for
every member; trained with the rest), so a multi-hot text token is the sum of its words' embeddings.

`model.weights: random` builds the same architecture from its config with freshly initialised weights (HF's own
init, torch seeded with 0: one fixed draw for every member and pack, so packing never changes a member's base) —
the control for "does the pretraining help". Local files only unless `model.download: true`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ftcore.fields import check
from ftcore.models.blocks import PackedLinear
from ftcore.models.hf_causal_lm import FrozenHF, _loading, _local, check_path, hf_config
from ftcore.registry import MODELS

WEIGHTS = ("pretrained", "random")
RANDOM_SEED = 0             # the `weights: random` draw (torch's global RNG, forked: the caller's is untouched)


@dataclass
class HFBackboneConfig:
    name: str = "hf_backbone"
    path: str = ""              # local dir (save_pretrained) or, with download: true, a hub id
    download: bool = False      # allow transformers to fetch `path` from the hub
    weights: str = "pretrained"  # pretrained | random (same architecture, HF's init: the control)

    per_member = ()
    required = ("path",)        # no default: a config must name its model

    def __post_init__(self):
        check_path(self.path, self.download)
        check(self.weights in WEIGHTS, "model.weights", f"one of {', '.join(WEIGHTS)}", self.weights)


@functools.lru_cache(maxsize=8)
def meta_model(path: str, download: bool = False) -> nn.Module:
    """The transformer stack's structure on the meta device (LoRA site names for config checks)."""
    from transformers import AutoModel
    with torch.device("meta"):
        return AutoModel.from_config(hf_config(path, download))


def max_positions(path: str, download: bool = False) -> int | None:
    """The longest sequence the model's config allows (n_positions or max_position_embeddings; None: it names none)."""
    cfg = hf_config(path, download)
    for key in ("n_positions", "max_position_embeddings"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    return None


@functools.lru_cache(maxsize=8)
def word_ids(path: str, download: bool, words: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """The model tokenizer's ids of " w" for every word w (a one-line config error without a tokenizer)."""
    from ftcore.models.hf_causal_lm import load_tokenizer
    tok = load_tokenizer(path, download)
    return tuple(tuple(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in words)


def load_stack(cfg: HFBackboneConfig) -> nn.Module:
    """The pretrained stack, or (weights: random) the same architecture freshly initialised with seed 0. A directory
    that lacks some of the stack's weights is refused (transformers would initialise them at random and go on);
    the causal LM's head, which the stack does not use, is left unread."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging
    if cfg.weights == "pretrained":
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()          # its load report lists the unused LM head as "UNEXPECTED"
        try:
            stack, info = _loading(cfg.path, "model", lambda: AutoModel.from_pretrained(
                cfg.path, dtype=torch.float32, output_loading_info=True, **_local(cfg.path, cfg.download)))
        finally:
            hf_logging.set_verbosity(level)
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            raise ValueError(f"model.path: {cfg.path!r} lacks weights of the model's transformer stack "
                             f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        return stack
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return AutoModel.from_config(hf_config(cfg.path, cfg.download), dtype=torch.float32)


@MODELS.register("hf_backbone")
class HFBackbone(FrozenHF):
    """x (E, B, T, F) -> (E, B, T, O): members' read-in/read-out around one frozen HF transformer stack."""
    Config = HFBackboneConfig
    HF_ATTR = "lm"

    def __init__(self, cfg: HFBackboneConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        self.cfg, self.E = cfg, len(gens)
        self.lm = load_stack(cfg)
        self.lm.eval()
        H = self.lm.get_input_embeddings().weight.shape[1]
        self.read_in = PackedLinear(gens, in_dim, H, init_std=None)                 # (E, F, H)
        self.read_out = PackedLinear(gens, H, out_dim, init_std=None)               # (E, H, O)

    def freeze(self):
        """Freeze the shared stack only: the read-in/read-out are the members' own and always train."""
        for p in self.lm.parameters():
            p.requires_grad_(False)
        return self

    @torch.no_grad()
    def embed_words(self, words: tuple[str, ...]) -> None:
        """Read-in rows 0 … len(words)−1 := each word's mean token embedding (E, F, H)[:, w] = mean_t emb[t]."""
        emb = self.lm.get_input_embeddings().weight                                 # (vocab, H)
        for w, ids in enumerate(word_ids(self.cfg.path, self.cfg.download, tuple(words))):
            if ids:                                   # a word the tokenizer drops keeps the member's drawn row
                self.read_in.weight[:, w] = emb[list(ids)].mean(0)

    @torch.no_grad()
    def for_members(self, E: int) -> HFBackbone:
        """A trained base (`model.from`: the source's one-member model, member axis 1) made ready for a pack of E:
        each member's read-in/read-out starts from the source's and trains as its own."""
        for m in (self.read_in, self.read_out):
            for name, p in list(m.named_parameters(recurse=False)):
                setattr(m, name, nn.Parameter(p.expand(E, *p.shape[1:]).clone()))
            m.E = E
        self.E = E
        return self

    def n_params(self) -> int:
        """The stack's parameters and one member's read-in/read-out."""
        return super().n_params() + sum(p[0].numel() for m in (self.read_in, self.read_out) for p in m.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, B, T, F) -> (E, B, T, O)."""
        E, B, T = x.shape[:3]
        h = self.read_in(x).reshape(E * B, T, -1)                                   # (E·B, T, H), members major
        h = self.lm(inputs_embeds=h, use_cache=False).last_hidden_state             # (E·B, T, H)
        return self.read_out(h.reshape(E, B, T, -1))                                # (E, B, T, O)
