"""Checkpoints and traces on IPFS: kubo-compatible CIDs, two backends, CAR, encryption at rest.

What the rest of the code calls (import from the submodules; this package imports nothing so
`pm --help` stays fast):

    from offchain.storage.store import Store, open_store
    store = open_store(ipfs_api=None, folder=".pm/store")   # or ipfs_api="http://127.0.0.1:5001"
    cid = store.put(blob)            # the CID `ipfs add` prints for blob (CIDv0, 256 KiB, balanced)
    blob = store.get(cid)            # every block verified against its CID, else BlockCorrupted
    store.has(cid); store.pin(cid); store.unpin(cid); store.pins()
    store.export_car(cid, file);  store.import_car(file) -> roots

    from offchain.storage.crypto import (StageKey, encrypt_checkpoint, decrypt_checkpoint,
        generate_encryption_keypair, public_key_of, seal_key, open_sealed_key)
    key = StageKey.generate(model_id, stage)        # first member of a stage, once
    cid = store.put(encrypt_checkpoint(key, state_bytes))
    state_bytes = decrypt_checkpoint(key, store.get(cid))   # DecryptionError on wrong key/tamper
    private, public = generate_encryption_keypair()  # public (32 B) = WorkLedger.join encryptionKey
    sealed = seal_key(newcomer_public, key); key = open_sealed_key(newcomer_private, sealed)

    from offchain.storage.unixfs import file_cid     # a CID without storing anything

Modules: cids (binary CIDs, varints), unixfs (dag-pb/UnixFS DAG builder and reader), embedded
(the folder store), kubo + spool (Kubo RPC backend), car (CAR v1), crypto, store (protocol),
errors (StorageError and friends, all `UserError`s), commands (`pm store`).
"""
