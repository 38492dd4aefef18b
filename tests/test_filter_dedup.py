"""Dedup: exact and near duplicates (MinHash-LSH, re-checked by Jaccard) found among
planted copies, with precision and recall reported; benchmark leaks caught by n-grams."""

from __future__ import annotations

import json
import random

import duckdb
from conftest import synthgen
from teacher_server import write_jsonl

import synthgen as sg
from synthgen.recipes.filters import check_params, dedup


def rows_of(texts: dict[str, str]) -> list[dict]:
    return [{"request_id": rid, "response": text} for rid, text in texts.items()]


def test_minhash_finds_planted_near_duplicates_with_precision_and_recall(tmp_path, capsys):
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(3000)]
    texts: dict[str, str] = {}
    truth: set[str] = set()
    for i in range(300):
        words = [rng.choice(vocab) for _ in range(40)]
        texts[f"base{i:03d}"] = " ".join(words)
        if i % 3 == 0:  # a near copy: one word changed near the end (Jaccard of 3-shingles ~0.9)
            near = list(words)
            near[-1] = rng.choice(vocab)
            texts[f"near{i:03d}"] = " ".join(near)
        if i % 5 == 0:  # a loose relative: a third of it rewritten, not a duplicate
            loose = [rng.choice(vocab) if j % 3 == 0 else w for j, w in enumerate(words)]
            texts[f"loose{i:03d}"] = " ".join(loose)
        if i % 7 == 0:  # the same text, shouted and punctuated
            texts[f"exact{i:03d}"] = " ".join(words).upper() + "!!"
    params = check_params("dedup", {}, tmp_path)
    shingled = {rid: dedup.shingles(t, params["shingle"]) for rid, t in texts.items()}
    for rid in texts:
        if rid.startswith("near"):
            base = "base" + rid[4:]
            if dedup.jaccard(shingled[rid], shingled[base]) >= params["threshold"]:
                truth.add(rid)
    out = dedup.run(rows_of(texts), params)
    near = {r.request_id: r.other for r in out.removed if r.rule == "near-duplicate"}
    exact = {r.request_id: r.other for r in out.removed if r.rule == "exact"}
    assert exact == {f"exact{i:03d}": f"base{i:03d}" for i in range(0, 300, 7)}
    true_positives = set(near) & truth
    precision = len(true_positives) / len(near)
    recall = len(true_positives) / len(truth)
    with capsys.disabled():
        print(f"\nMinHash-LSH (Jaccard 0.9, candidates at 0.8, 128 permutations, 3-word shingles): "
              f"{len(truth)} planted "
              f"near duplicates, {len(near)} removed: precision {precision:.3f}, recall {recall:.3f}")
    assert len(truth) >= 90 and precision == 1.0 and recall >= 0.9
    assert all(other == "base" + rid[4:] for rid, other in near.items())
    assert not any(rid.startswith("loose") for rid in near)  # Jaccard well under 0.9


def test_decontamination_catches_planted_benchmark_overlaps(tmp_path):
    bench = tmp_path / "bench.jsonl"
    questions = [
        "Natalia sold clips to 48 of her friends in April and then she sold half as many clips in May",
        "Weng earns 12 dollars an hour for babysitting and yesterday she did 50 minutes of babysitting",
        "What is the capital city of the country that hosted the 2016 summer games",  # 15 words
        "Which planet is known as the red planet",  # 8 words: counts whole
        "Is it true",  # too short to count
    ]
    write_jsonl(bench, [{"question": q, "answer": "x"} for q in questions])
    rng = random.Random(3)
    filler = " ".join(f"f{rng.randint(0, 999)}" for _ in range(20))
    texts = {
        "leak_long": f"Here is a task. {questions[0]}. How many clips did she sell?",
        "leak_13": "so " + " ".join(questions[1].split()[2:15]) + " and more",  # exactly 13 words shared
        "leak_short": f"Quiz: which planet is known as the Red Planet? {filler}",
        "near_miss": " ".join(questions[1].split()[2:14]) + " " + filler,  # only 12 words in a row
        "common": f"is it true that {filler}",
        "clean": filler,
    }
    params = check_params("dedup", {"benchmarks": [str(bench)], "near": False}, tmp_path)
    out = dedup.run(rows_of(texts), params)
    got = {r.request_id: r.detail for r in out.removed}
    assert set(got) == {"leak_long", "leak_13", "leak_short"}
    assert got["leak_13"].startswith("13-gram shared with bench.jsonl:2")
    assert got["leak_short"].startswith("8-gram shared with bench.jsonl:4")


def test_the_dedup_recipe_filters_a_store_and_records_each_collision(teacher, tmp_path):
    prompts = [f"Tell me a fact about the number {i} and why it matters to people" for i in range(8)]
    prompts += [prompts[0] + " today", prompts[1].upper()]  # near and exact copies of the answers
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    db = tmp_path / "c.duckdb"
    sg.generate(input=tmp_path / "in.jsonl", db=db, model="m", base_urls=[teacher.base_url])
    write_jsonl(tmp_path / "bench.jsonl",
                [{"prompt": "a fact about the number 5 and why it matters to people"}])
    result = synthgen("run", "dedup", "--db", db, "--set", f"benchmarks=[{tmp_path / 'bench.jsonl'}]",
                      "--set", "threshold=0.8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(db), read_only=True)
    removed = con.execute("SELECT c.messages->>'$[0].content', s.rule, o.messages->>'$[0].content' "
                          "FROM stage_rows s JOIN corpus c USING (request_id) "
                          "LEFT JOIN corpus o ON o.request_id = s.other_request_id "
                          "WHERE s.stage = 'deduped' AND NOT s.kept ORDER BY 1").fetchall()
    kept = con.execute("SELECT count(*) FROM deduped").fetchone()[0]
    con.close()
    assert removed == sorted([
        (prompts[8], "dedup:near-duplicate", prompts[0]),
        (prompts[9], "dedup:exact", prompts[1]),
        (prompts[5], "dedup:contaminated", None),
    ])
    assert kept == 7 and "deduped: 10 rows, 7 kept" in result.stderr
    assert json.loads(synthgen("status", "--db", db, "--json").stdout.splitlines()[0])["stage"] is None
