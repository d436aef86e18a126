"""Training data from the user's own files: a layer under the roles, beside model/ (no torch).

    prepare.prepare(inputs, PrepareOptions(vocab_size=...), out, store) -> Prepared   # pm data prepare
    dataset.Dataset(store, manifest_cid)        # a stored data set, every byte CID-verified
    sampler.train_batch(dataset, seed, round, step, micro_batch, rows, context) -> Batch
    sampler.validation_batches(dataset, rows, context, count) -> [Batch]

Modules: documents (text/jsonl/parquet inputs), tokenizer (byte-level BPE), shards (token ids on
disk), manifest (the stored description), prepare, dataset, sampler, shipped (the repo's corpus
and `open_dataset`), errors, commands (`pm data`). Provenance checks on traces live in
offchain/proofs/provenance.py (they need the trace records).
"""
