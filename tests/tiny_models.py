"""Tiny random models for the CPU tests of scoring and on-policy distillation (seconds each).

A byte-level BPE tokenizer of a few hundred tokens trained here on a few sentences (no
download), with SmolLM2's ChatML template and its special tokens, and randomly initialized
two-layer Llamas on it: one stands in for the teacher, one for the student. With a vocabulary
this small the teacher's top-K can cover all of it, so a bucketed divergence can be checked
against the exact one. `other_tokenizer` makes a different vocabulary (a mismatched student).
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = [
    "The quick brown fox jumps over the lazy dog. Count from one to ten: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.",
    "You are a helpful assistant. Give one tip for learning to cook: taste as you go.",
    "What is 7 + 5? It is 12. What is 9 times 3? It is 27. Name three colours: red, green, blue.",
    "user assistant system Hello! How are you today? I am fine, thank you. Write a short poem.",
]


def make_tokenizer(directory: Path, vocab_size: int = 300, text: list[str] | None = None):
    """Train and save a small ChatML tokenizer; returns the loaded fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator((text or TEXT) * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(directory))
    return tok


def make_model(directory: Path, tokenizer, seed: int, layers: int = 2, hidden: int = 32):
    """A random Llama on `tokenizer`, saved with it to `directory`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper than the init's near-uniform logits, still far from one-hot
        model.lm_head.weight.mul_(4.0)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return model


def pair(root: Path) -> tuple[Path, Path]:
    """(teacher dir, student dir): two random models sharing one tokenizer."""
    tok = make_tokenizer(root / "tok")
    teacher, student = root / "teacher", root / "student"
    make_model(teacher, tok, seed=1, layers=2)
    make_model(student, tok, seed=2, layers=1)
    return teacher, student


def other_tokenizer(directory: Path):
    """A tokenizer of another vocabulary (other size, other merges)."""
    return make_tokenizer(directory, vocab_size=280, text=[t[::-1] for t in TEXT])


def store_answers(db: Path, answers: list[dict]) -> list[str]:
    """Store answers as a run would (a request and its response each); returns their ids.

    Each answer: messages, text, finish_reason (default stop), logprobs (the store's layout)
    and model (default "teacher")."""
    import hashlib

    import orjson

    from synthgen.store import connect
    from synthgen.store.commit import commit
    from synthgen.types import Answer

    con = connect(db)
    ids = []
    try:
        run = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchone()[0]
        con.execute("INSERT INTO runs (run_id, status, started_at, model, config) VALUES "
                    "(?, 'done', now(), 'teacher', '{\"logprobs_mode\": \"raw\"}')", [run])
        rows = []
        for i, a in enumerate(answers):
            messages = orjson.dumps(a["messages"], option=orjson.OPT_SORT_KEYS).decode()  # as planned
            rid = hashlib.md5(f"{run}:{i}:{messages}:{a['text']}".encode()).hexdigest()
            con.execute("INSERT INTO requests VALUES (?, ?, ?, 0, ?, ?, '{}', NULL, now())",
                        [rid, run, i, a.get("model", "teacher"), messages])
            rows.append((rid, 0, Answer(a["text"], a.get("finish_reason", "stop"), 5, 5,
                                        a.get("model", "teacher"), a.get("logprobs"), "test"), 1.0, 1))
            ids.append(rid)
        commit(con, run, rows, [])
    finally:
        con.close()
    return ids
