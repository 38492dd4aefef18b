"""The student: train and evaluate a model on the stored corpus.

Small files, one idea each:

    deps.py      the train extra: imported lazily, one clear error when it is missing
    rows.py      SQL over the store -> conversations, and the deterministic held-out split
    render.py    one conversation -> (input_ids, labels) in the student's chat template
    guards.py    checks that fail loudly before training (masking, EOS, BOS, length)
    presets.py   students: `tiny`, a local Hugging Face directory, a GGUF file
    kd.py        sparse KL on the teacher's top-K plus a tail bucket
    targets.py   teacher logprobs -> per-position top-K targets; tokenizer compatibility
    trainer.py   SFTTrainer subclass with the KD loss, collator, progress callback
    train.py     the training run: config, output directory, resume
    evaluate.py  held-out metrics for trained and untrained students, written to `evals`
    rouge.py     ROUGE-L (longest common subsequence), no dependency
    log.py       progress to the caller's callback or the `synthgen.student` logger
    cli.py       `synthgen train` and `synthgen eval`: the only place that prints

Nothing here is imported by the engine: torch and transformers are imported inside
functions or in modules only the student CLI imports.
"""
