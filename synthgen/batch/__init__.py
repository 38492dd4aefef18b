"""Batch mode: the same plan, ids and store as online mode, through a Batch API or files.

    files     request lines split at the API's limits (50,000 requests, 200 MB per file)
    records   the store's record of each batch, written before each step that costs money
    ingest    output and error lines into the store, exactly once, by fault class
    runner    `generate --batch`: submit, poll with backoff, ingest, re-queue, re-attach
    control   `synthgen batch status` and `synthgen batch cancel`
    offline   `synthgen batch write` (files for `vllm run-batch`) and `synthgen batch ingest`

The HTTP side (files and batches endpoints, each line mapped to an Answer or a fault)
lives in `backends/openai_batch.py`; nothing here speaks HTTP or reads a status code.
"""
