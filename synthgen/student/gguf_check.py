"""Did the student survive the trip to GGUF? Checked on the file, then on the file served.

    tokenizer      every token id of the student's vocabulary names the same token in the
                   GGUF, and the served model tokenizes each check prompt to the same ids
    chat template  the GGUF carries the student's template, and llama-server renders each
                   check prompt to the same text as transformers
    greedy         from the same prompt ids, llama-server's greedy tokens against
                   transformers' greedy tokens on the float32 student: identical, or the
                   number of leading tokens they share (quantization moves near-ties, so a
                   difference is reported, not raised)

A lost template or a different tokenizer is an error: the file would be served wrongly
with no other sign. The server is the bundled teacher's launcher, so what is checked is
what `synthgen teacher start --model FILE.gguf` serves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .deps import StudentError


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The fields of a GGUF file the check needs (gguf-py reads them without loading tensors)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        return None if f is None else f.contents()

    return {
        "chat_template": field("tokenizer.chat_template"),
        "tokens": field("tokenizer.ggml.tokens") or [],
        "bos_token_id": field("tokenizer.ggml.bos_token_id"),
        "eos_token_id": field("tokenizer.ggml.eos_token_id"),
        "architecture": field("general.architecture"),
        "block_count": next((f.contents() for k, f in reader.fields.items() if k.endswith(".block_count")),
                            None),
    }


def vocabulary_problems(meta: dict[str, Any], tok: Any) -> list[str]:
    """Token ids whose token differs between the student's tokenizer and the GGUF."""
    tokens = meta["tokens"]
    vocab = tok.get_vocab()
    wrong = [(i, t) for t, i in vocab.items() if i >= len(tokens) or tokens[i] != t]
    if not wrong:
        return []
    i, t = min(wrong)
    found = tokens[i] if i < len(tokens) else "nothing"
    return [f"{len(wrong)} of {len(vocab)} token ids differ "
            f"(id {i}: {t!r} in the student, {found!r} in the GGUF)"]


def _strip_end(ids: Sequence[int], ends: set[int]) -> list[int]:
    out = list(ids)
    while out and out[-1] in ends:
        out.pop()
    return out


def _shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def hf_greedy(model: Any, tok: Any, ids: list[int], max_new_tokens: int, ends: set[int]) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            eos_token_id=sorted(ends) or None,
        )
    return [int(t) for t in out[0, len(ids) :]]


def end_ids(model: Any, tok: Any) -> set[int]:
    """The ids a turn can end on: the tokenizer's EOS and the generation config's."""
    ends = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends.update(gen if isinstance(gen, list) else [gen] if gen is not None else [])
    return {int(e) for e in ends}


def check_gguf(
    path: Path,
    model: Any,
    tok: Any,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int,
    threads: int | None,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Check `path` against the student (model, tok); raise on a lost tokenizer or template."""
    from ..teacher import start_teacher
    from .llamacpp import LlamaCppClient

    meta = gguf_metadata(path)
    problems = vocabulary_problems(meta, tok)
    if not meta["chat_template"]:
        problems.append("the GGUF has no chat template")
    elif meta["chat_template"] != tok.chat_template:
        problems.append("the GGUF's chat template is not the student's")
    report: dict[str, Any] = {
        "gguf": str(path),
        "size_bytes": path.stat().st_size,
        "architecture": meta["architecture"],
        "layers": meta["block_count"],
        "vocabulary": "same" if not problems or "token ids differ" not in problems[0] else problems[0],
        "chat_template_in_file": bool(meta["chat_template"]) and meta["chat_template"] == tok.chat_template,
    }
    if problems:
        raise StudentError(f"{path}: the export lost what serving needs: {'; '.join(problems)}")
    echo(f"check: tokenizer ({len(tok.get_vocab())} tokens) and chat template are in the file")
    if not prompts:
        return report
    ends = end_ids(model, tok)
    results = []
    echo(f"check: serving {path.name} with llama-server, {len(prompts)} prompts x "
         f"{max_new_tokens} greedy tokens")
    with start_teacher("local", model=str(path), threads=threads, parallel=1, ctx_size=2048,
                       announce=None) as served, LlamaCppClient(served.base_urls[0]) as client:
        for messages in prompts:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False) and ids[:1] != [
                    tok.bos_token_id]:
                ids = [tok.bos_token_id, *ids]
            served_text = client.apply_template(messages)
            served_ids = client.tokenize(text)
            hf = _strip_end(hf_greedy(model, tok, ids, max_new_tokens, ends), ends)
            reply = client.complete(ids, max_new_tokens)
            gg = _strip_end([int(t) for t in reply.get("tokens") or []], ends)
            results.append({
                "prompt": messages[-1]["content"][:80],
                "template_same": served_text == text,
                "tokens_same": served_ids == ids,
                "greedy_same": hf == gg,
                "shared_prefix": _shared_prefix(hf, gg),
                "hf_tokens": len(hf),
                "gguf_tokens": len(gg),
                "hf_text": tok.decode(hf),
                "gguf_text": tok.decode(gg),
            })
    report["prompts"] = results
    report["template_same"] = sum(r["template_same"] for r in results)
    report["tokens_same"] = sum(r["tokens_same"] for r in results)
    report["greedy_same"] = sum(r["greedy_same"] for r in results)
    report["checked"] = len(results)
    if report["template_same"] < len(results) or report["tokens_same"] < len(results):
        bad = next(r for r in results if not (r["template_same"] and r["tokens_same"]))
        what = "chat template" if not bad["template_same"] else "tokenizer"
        raise StudentError(
            f"{path}: llama-server's {what} does not match the student's on prompt {bad['prompt']!r}; "
            "the file would be served differently from how the student was trained"
        )
    return report


def summary(report: dict[str, Any]) -> str:
    """The check in a few lines, for the CLI."""
    lines = [
        f"{report['gguf']}: {report['size_bytes'] / 1e6:.1f} MB, {report['quant']}, "
        f"{report['architecture']} with {report['layers']} layers"
        + (", LoRA merged" if report.get("merged_lora") else ""),
        f"tokenizer: {report['vocabulary']}; chat template: "
        + ("in the file" if report["chat_template_in_file"] else "missing"),
    ]
    if report.get("checked"):
        n = report["checked"]
        lines.append(
            f"served by llama-server on {n} {report['prompts_from']}: chat template rendered the same "
            f"{report['template_same']}/{n}, tokenized the same {report['tokens_same']}/{n}, "
            f"greedy answer identical to transformers {report['greedy_same']}/{n}"
        )
        for r in report["prompts"]:
            if not r["greedy_same"]:
                lines.append(
                    f"  differs on {r['prompt']!r}: the first {r['shared_prefix']} tokens agree "
                    f"(transformers {r['hf_tokens']}, GGUF {r['gguf_tokens']} tokens)\n"
                    f"    transformers: {r['hf_text'][:120]!r}\n    GGUF:         {r['gguf_text'][:120]!r}"
                )
    return "\n".join(lines)
