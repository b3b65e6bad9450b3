"""`hf_vlm`: a Hugging Face vision-language model as a frozen scorer of a closed answer vocabulary (DESIGN.md §7).

Loaded with `AutoModelForImageTextToText.from_pretrained(model.path)` and its `AutoProcessor` from local files only
unless `model.download: true`; one copy per pack, shared by all E members (`member_axis = False`), kept in eval mode.
A task that feeds it first calls `set_prompts(questions, words, side)`: P question texts (prompt p = question p,
written with the processor's chat template when it has one, else "<image>\\n{question}") and V answer words. Then

    x (E, N, 3·S·S + P) = [pixels in [0, 1]; prompt one-hot]
      -> rows r = (e, n), members major: image_r (3, S, S), prompt p_r
      -> the processor's image transform (the S×S image is RESIZED to the model's input size, e.g. 16 -> 336)
      -> ids_r = the prompt's token ids (image placeholders expanded), LEFT-padded to the longest prompt, masked
      -> VLM(ids, attention_mask, pixel_values).logits at the last position (the answer's first token) (E·N, vocab)
      -> s_rv = log softmax(...)[first token of word v]                                     -> (E, N, V)

— the answer-word log-probabilities of a zero-shot VQA scorer (IC|TC's step 1 restricted to a closed vocabulary),
the same output contract as a from-scratch captioner's logits. Left padding changes no score for rotary-position
language models (Llama, Qwen, ...: attention depends only on position differences, padded keys are masked); the
tests check it against an unpadded forward. Distinct words must start with distinct tokens (one-line error if not).
`image_features(pixels)` -> (M, H): the projector's image tokens mean-pooled, a criterion-blind encoder for baselines.
A LoRA adapter wraps its linear modules (adapters/lora_modules.py); every module sees the E members' rows folded
members-major into its batch dimension, as the wrappers require.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ftcore.fields import check
from ftcore.models.hf_causal_lm import FrozenHF, _loading, _local, check_path
from ftcore.registry import MODELS


@dataclass
class HFVLMConfig:
    name: str = "hf_vlm"
    path: str = ""            # local dir (save_pretrained of model + processor) or, with download: true, a hub id
    download: bool = False    # allow transformers to fetch `path` from the hub

    per_member = ()
    required = ("path",)

    def __post_init__(self):
        check_path(self.path, self.download)


def chat_text(processor, question: str) -> str:
    """The user turn [image, question] followed by the assistant's answer prompt."""
    if getattr(processor, "chat_template", None):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(msgs, add_generation_prompt=True)
    return f"{getattr(processor, 'image_token', '<image>')}\n{question}"


def first_tokens(tokenizer, words: list[str]) -> list[int]:
    """Each word's first token id (the word as the answer's start: no leading space); ValueError when two words
    share one — the scorer could not tell them apart."""
    first = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
    seen: dict[int, str] = {}
    for w, t in zip(words, first):
        if t in seen:
            raise ValueError(f"model.path: the words {seen[t]!r} and {w!r} start with the same token in this "
                             f"tokenizer (the scorer reads each word's first token)")
        seen[t] = w
    return first


@functools.lru_cache(maxsize=8)
def check_words(path: str, download: bool, words: tuple[str, ...]) -> None:
    """Config-time check of model.path (a saved model) and that its tokenizer starts the words with distinct
    tokens (the tokenizer alone is loaded)."""
    from ftcore.models.hf_causal_lm import load_tokenizer
    first_tokens(load_tokenizer(path, download), list(words))


@functools.lru_cache(maxsize=8)
def meta_model(path: str, download: bool = False) -> nn.Module:
    """The model's structure on the meta device (no weights read): for config checks that only need module names
    (`lora_modules._site_names` lists `vlm.<name>` from it without reading a weight)."""
    from transformers import AutoModelForImageTextToText

    from ftcore.models.hf_causal_lm import hf_config
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(hf_config(path, download))


@MODELS.register("hf_vlm")
class HFVLM(FrozenHF):
    """x (E, N, 3·S·S + P) -> answer-word scores (E, N, V) of one frozen HF vision-language model."""
    Config = HFVLMConfig
    HF_ATTR = "vlm"

    def __init__(self, cfg: HFVLMConfig, in_dim: int, out_dim: int, gens: list[torch.Generator]):
        super().__init__()
        from transformers import AutoModelForImageTextToText
        self.cfg, self.E, self.in_dim, self.out_dim = cfg, 1, in_dim, out_dim
        kw = _local(cfg.path, cfg.download)
        self.processor = None     # loaded by set_prompts: a config check that builds the model for its module
        #                           names (adapters/lora_modules.site_names) never imports the processors
        self.vlm = _loading(cfg.path, "vision-language model",
                            lambda: AutoModelForImageTextToText.from_pretrained(cfg.path, dtype=torch.float32, **kw))
        self.vlm.eval()
        self.prompts: list[torch.Tensor] = []

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def set_prompts(self, questions: list[str], words: list[str], side: int) -> None:
        """Load the processor; tokenise the P prompts (placeholders expanded for an S×S image) and the V words'
        first tokens."""
        from transformers import AutoProcessor
        path = self.cfg.path
        self.processor = _loading(path, "processor", lambda: AutoProcessor.from_pretrained(
            path, **_local(path, self.cfg.download)))
        check(hasattr(self.processor, "image_processor"), "model.path",
              "a vision-language model directory with an image processor (AutoProcessor)", path)
        if 3 * side * side + len(questions) != self.in_dim or len(words) != self.out_dim:
            raise ValueError(f"model.path: the task's inputs ({self.in_dim}) / words ({self.out_dim}) do not match "
                             f"{len(questions)} prompts, side {side}, {len(words)} words")
        self.side, self.words = side, list(words)
        blank = torch.zeros(3, side, side)
        self.prompts = [self.processor(text=[chat_text(self.processor, q)], images=[blank], return_tensors="pt",
                                       do_rescale=False)["input_ids"][0] for q in questions]       # P × (T_p,)
        first = first_tokens(self.tokenizer, words)
        self.register_buffer("word_ids", torch.tensor(first), persistent=False)              # (V,)

    def image_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixels (M, 3, S, S) in [0, 1] -> the processor's image tensors (resized, normalised), on the model."""
        out = self.processor.image_processor(list(pixels.detach().float().clamp(0, 1).cpu()), do_rescale=False,
                                             return_tensors="pt")
        w = next(self.vlm.parameters())                    # the model's device and dtype (the pack's)
        return {k: (v.to(w.device, w.dtype) if v.is_floating_point() else v.to(w.device)) for k, v in out.items()
                if isinstance(v, torch.Tensor)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, N, 3·S·S + P) -> (E, N, V) answer-word log-probabilities."""
        if not self.prompts:
            raise RuntimeError("hf_vlm: set_prompts(...) must be called by the task before the first forward")
        E, N = x.shape[:2]
        S, P = self.side, len(self.prompts)
        pix = x[..., :3 * S * S].reshape(E * N, 3, S, S)
        p = x[..., 3 * S * S:].reshape(E * N, P).argmax(-1).tolist()
        T = max(len(self.prompts[i]) for i in set(p))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((E * N, T), pad, dtype=torch.long)
        mask = torch.zeros(E * N, T, dtype=torch.long)
        for r, i in enumerate(p):                                         # left padding: the answer position is -1
            ids[r, T - len(self.prompts[i]):] = self.prompts[i]
            mask[r, T - len(self.prompts[i]):] = 1
        dev = self.word_ids.device
        out = self.vlm(input_ids=ids.to(dev), attention_mask=mask.to(dev), **self.image_inputs(pix),
                       use_cache=False, logits_to_keep=1)
        logp = torch.log_softmax(out.logits[:, -1].float(), -1)                                  # (E·N, vocab)
        return logp[:, self.word_ids].reshape(E, N, -1).to(x.dtype)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (M, 3, S, S) -> (M, H): the image tokens the language model receives, mean-pooled."""
        feats = self.vlm.model.get_image_features(**self.image_inputs(pixels))
        feats = getattr(feats, "pooler_output", feats)
        if isinstance(feats, (list, tuple)):
            return torch.stack([f.reshape(-1, f.shape[-1]).mean(0) for f in feats])
        return feats.reshape(pixels.shape[0], -1, feats.shape[-1]).mean(1)
