"""The model: spec, Llama-family pipeline stages (transformers modules), compute profiles,
checkpoints, token wire format and tokenizer, codecs, the stage trainer, generation, export."""
