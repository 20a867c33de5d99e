"""Tiny random text models built at test time from configs and hand-written vocabularies (no Hub).

Every builder writes a transformers directory (config, weights, tokenizer) that `pipeline(task, model=dir)`
loads offline. The weights are random with a fixed seed, so outputs are meaningless but deterministic:
good enough to check that the server returns exactly what the in-process pipeline returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Words of the tiny WordPiece vocabulary; anything else falls back to "##"-pieces and single letters.
_WORDS = [
    "the",
    "a",
    "an",
    "is",
    "was",
    "are",
    "be",
    "to",
    "of",
    "and",
    "in",
    "on",
    "at",
    "for",
    "with",
    "it",
    "this",
    "that",
    "he",
    "she",
    "they",
    "we",
    "you",
    "i",
    "paris",
    "france",
    "london",
    "city",
    "capital",
    "what",
    "where",
    "who",
    "weather",
    "sunny",
    "rain",
    "today",
    "tomorrow",
    "good",
    "bad",
    "great",
    "movie",
    "film",
    "book",
    "music",
    "sport",
    "politics",
    "science",
    "love",
    "hate",
    "happy",
    "sad",
    "john",
    "mary",
    "berlin",
    "germany",
    "lives",
    "works",
    "visit",
    "visited",
    "new",
    "york",
    "hello",
    "world",
    "example",
    "text",
    "classification",
    "topic",
    "about",
]
_PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##est"]
_LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
_PUNCT = list(".,!?;:'\"-()")
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TOKEN_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
NLI_LABELS = ["contradiction", "neutral", "entailment"]
SENTIMENT_LABELS = ["NEGATIVE", "POSITIVE"]


def _wordpiece_vocab() -> list[str]:
    vocab = list(_BERT_SPECIALS)
    for token in [*_WORDS, *_PIECES, *_LETTERS, *[f"##{c}" for c in _LETTERS], *_PUNCT]:
        if token not in vocab:
            vocab.append(token)
    return vocab


def _bert_tokenizer() -> Any:
    from transformers import BertTokenizerFast

    vocab = {token: index for index, token in enumerate(_wordpiece_vocab())}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=128)


def _bert_config(**extra: Any) -> Any:
    from transformers import BertConfig

    sizes: dict[str, Any] = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        # Wider than BERT's 0.02, so random logits differ clearly and rankings are not near-ties.
        "initializer_range": 0.5,
    }
    return BertConfig(vocab_size=len(_wordpiece_vocab()), **{**sizes, **extra})


def _labels(names: list[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def _save(model: Any, tokenizer: Any, out: Path) -> Path:
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_bert(out: Path, head: str, seed: int = 0, **sizes: Any) -> Path:
    """A BERT-like model with a tiny WordPiece vocab.

    head: "sequence" (sentiment labels), "nli" (entailment/neutral/contradiction, for zero-shot),
    "token" (BIO person/location labels), "masked" (masked LM), "base" (bare encoder).
    sizes: BertConfig overrides (e.g. hidden_size=256 for a small benchmark model).
    """
    import torch
    import transformers as tf

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _bert_tokenizer()
    if head == "sequence":
        model = tf.BertForSequenceClassification(_bert_config(**_labels(SENTIMENT_LABELS), **sizes))
    elif head == "nli":
        model = tf.BertForSequenceClassification(_bert_config(**_labels(NLI_LABELS), **sizes))
    elif head == "token":
        model = tf.BertForTokenClassification(_bert_config(**_labels(TOKEN_LABELS), **sizes))
    elif head == "masked":
        model = tf.BertForMaskedLM(_bert_config(**sizes))
    elif head == "base":
        model = tf.BertModel(_bert_config(**sizes), add_pooling_layer=False)
    else:
        raise ValueError(f"unknown head {head!r}")
    return _save(model, tokenizer, out)


# A minimal ChatML template, like SmolLM2's, so chat inputs work on the tiny causal LM.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_level_tokenizer() -> Any:
    """A byte-level BPE tokenizer: 256 byte symbols plus merges spelling the vocabulary words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab: dict[str, int] = {}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    for symbol in sorted(byte_symbols):
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in [*_WORDS, "user", "assistant", "system"]:
        current = "Ġ"
        for char in word:
            merged = current + char
            if merged not in vocab:
                merges.append((current, char))
                vocab[merged] = len(vocab)
            current = merged
    model = models.BPE(vocab=vocab, merges=merges)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=256,
    )
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def build_tiny_causal_lm(out: Path, seed: int = 0) -> Path:
    """A tiny Llama-like causal LM with a byte-level BPE tokenizer and a ChatML chat template."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    # Random weights rarely emit the end token; a small budget keeps tests fast. Greedy, as the server's
    # embedded chat model is configured.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=12,
    )
    return _save(model, tokenizer, out)
