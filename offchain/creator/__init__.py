"""The model creator: turning a trained model back into one artefact anyone can run.

export.py (gather every stage's checkpoint, off-chain from a state folder or on-chain with every
stage key, and write a Hugging Face folder), commands.py (`pm model export`).
"""
