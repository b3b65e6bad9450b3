"""Tiny Hugging Face causal LMs with random weights, saved with `save_pretrained` — no download anywhere.

What the tests, the multi-LoRA benchmark and a first `variant=hf` run load through the real loading path
(`hf_causal_lm`): a GPT-2 (Conv1D projections `c_attn`, `c_proj`, `c_fc`) or a Llama (`nn.Linear` projections
`q_proj` ... `down_proj`, grouped-query attention) built from a config, with a byte-level BPE tokenizer trained here
on a few kilobytes of text made of the kv vocabulary's characters (digits, letters, punctuation), so every prompt
of the text tasks tokenises.

    python -m ftcore.models.hf_tiny DIR [--arch gpt2|llama] [--n-embd 64] [--n-layer 2] [--vocab 512] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
import string
from pathlib import Path

import torch

ARCHS = ("gpt2", "llama")
EOS = "<|endoftext|>"


def _corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    """Lines mixing words, numbers and the dict / document syntax of the text tasks (for BPE merges)."""
    rng = random.Random(seed)
    words = ["the", "value", "of", "key", "is", "and", "it", "in", "Dictionary", "document", "Document", "answer",
             "code", "number", "what", "which", "a", "list", "below", "above", "report", "question"]
    lines = []
    for _ in range(n_lines):
        parts = [rng.choice(words) if rng.random() < 0.6 else str(rng.randint(0, 9999)) for _ in range(rng.randint(3, 12))]
        parts.append("".join(rng.choice("{}[]:,.?'<>-") for _ in range(rng.randint(1, 4))))
        lines.append(" ".join(parts))
    lines.append(string.printable[:94])
    return lines


def train_tokenizer(vocab_size: int = 512, extra: tuple[str, ...] = ()):
    """A byte-level BPE (GPT-2's scheme) trained on `_corpus` (plus `extra` lines), as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus() + list(extra), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def build(arch: str, vocab_size: int, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_positions: int = 1024,
          seed: int = 0):
    """A randomly initialised causal LM (dropout 0) of `arch`."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_positions=n_positions,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(cfg)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=n_embd, intermediate_size=2 * n_embd,
                          num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=max(1, n_head // 2),
                          max_position_embeddings=n_positions, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        return LlamaForCausalLM(cfg)
    raise ValueError(f"arch: must be one of {', '.join(ARCHS)} (got {arch!r})")


def save_tiny(out: str | Path, arch: str = "gpt2", n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
              vocab_size: int = 512, seed: int = 0) -> Path:
    """Write tokenizer + model (safetensors) to `out` with save_pretrained; -> the directory."""
    out = Path(out)
    tok = train_tokenizer(vocab_size)
    model = build(arch, len(tok), n_embd, n_layer, n_head, seed=seed)
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


VLM_CHAT = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
            "{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def save_tiny_vlm(out: str | Path, n_embd: int = 64, n_layer: int = 2, image_size: int = 32, patch: int = 8,
                  extra: tuple[str, ...] = (), vocab_size: int = 512, seed: int = 0) -> Path:
    """A tiny LLaVA (CLIP vision tower 32 wide, 2 layers, (image_size/patch)² patches; a 2-layer projector; a Llama
    text model) with random weights, its processor (a CLIP image transform built in code, the byte-level BPE above
    with an `<image>` token, a plain chat template) saved with save_pretrained to `out` -> the directory. The `extra`
    lines (a task's answer words, its questions) are added 20 times each to the tokenizer's corpus, so a word becomes
    one token and a question a few. Loaded back with
    AutoModelForImageTextToText / AutoProcessor (`hf_vlm`)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip import CLIPImageProcessorPil
    out = Path(out)
    tok = train_tokenizer(vocab_size, tuple(w for w in extra for _ in range(20)))
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=patch, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=n_embd, intermediate_size=2 * n_embd, num_hidden_layers=n_layer,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=0,
                       eos_token_id=0, pad_token_id=0)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=(image_size // patch) ** 2)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size,
                                                                                 "width": image_size})
    proc = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=patch, num_additional_image_tokens=1,
                          vision_feature_select_strategy="default", chat_template=VLM_CHAT)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--arch", choices=[*ARCHS, "llava"], default="gpt2",
                    help="llava: a tiny vision-language model for criterion_clustering's hf_vlm (its words as tokens)")
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0, help="the weights' draw (hf_backbone's `weights: random` is seed 0's)")
    a = ap.parse_args(argv)
    if a.arch == "llava":
        from ftcore.tasks.criterion_clustering import vlm_corpus
        print(save_tiny_vlm(a.out, a.n_embd, a.n_layer, extra=vlm_corpus(), vocab_size=a.vocab, seed=a.seed))
        return
    print(save_tiny(a.out, a.arch, a.n_embd, a.n_layer, a.n_head, a.vocab, seed=a.seed))


if __name__ == "__main__":
    main()
