"""Storage throughput: embedded put/get, with and without encryption, against raw sha256.

For 1 MiB to 1 GiB of random bytes, measured side by side in one run (best of 3-60 interleaved reps):
  sha256      hashlib.sha256 over the bytes: the ceiling, since every put and get hashes them
  cid         the kubo CID alone (chunking, dag-pb encoding, sha256 per block), nothing written
  write       the same bytes written to one file in the same folder (no fsync)
  put         EmbeddedStore.put into a fresh store, fsync off: the CPU cost of a put
  put-durable the same with fsync on (the default) on the disk (PM_BENCH_DIR, default .): bounded by it
All but put-durable keep their stores in /dev/shm (tmpfs) where there is one: on a shared VM the
disk's write-back otherwise throttles whichever run happens to follow another's writes.
  get         EmbeddedStore.get, every block read and verified
  enc-put     put(encrypt_checkpoint_stream(...)) (fsync off): AES-GCM streamed into the chunker
  dec-get     decrypt_checkpoint_stream(key, get_pieces(cid)): blocks verified and decrypted as read
Targets: put >= 50% of sha256 throughput; encryption adds <= 30% to put and to get time.
Ratios are given from wall time and, in brackets, from this process's CPU time (robust to other
processes competing for the cores; durable put waits on the disk, so it is judged on wall only).
Then the fixed CPU cost of a put (`fixed_costs`: the blocks of a 1 MiB put with no bytes in them).
Writes bench/results/storage.json and prints a table.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.backends.openssl import backend as openssl

from offchain.storage.crypto import StageKey, decrypt_checkpoint_stream, encrypt_checkpoint_stream
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.unixfs import Profile, file_cid

MiB = 1 << 20
SIZES_MIB = [1, 16, 64, 256, 1024]
REPS = {1: 60, 16: 9, 64: 6, 256: 4, 1024: 3}
"""A 1 MiB operation takes ~1 ms, and on a shared machine a rep's CPU time swings by a few hundred
us: best of 15 gave the encrypted put +13% to +30% over the plain one in three runs, best of 60
+9% to +18% (same code, same hour)."""
FIXED_REPS = 200
RESULTS = Path(__file__).parent / "results" / "storage.json"


def measure(size_mib: int, scratch: Path, disk: Path) -> dict[str, float]:
    """Best-of-N seconds per operation, the reps interleaved so that load from other processes
    hits every operation alike and the ratios stay side by side. Each put goes to a fresh store
    (a gc before each put would be unfair: here a put right after mass deletes takes ~1.5x the
    CPU time), removed once timed so that 1 GiB runs fit in memory."""
    data = os.urandom(size_mib * MiB)
    key = StageKey.generate(model_id=1, stage=0)
    cid = EmbeddedStore(scratch / "get").put(data)
    enc_cid = EmbeddedStore(scratch / "get").put(encrypt_checkpoint_stream(key, data))
    reader = EmbeddedStore(scratch / "get")
    assert reader.get(cid) == data and decrypt_checkpoint_stream(key, reader.get_pieces(enc_cid)) == data
    places = (scratch / f"tmp{index}" for index in itertools.count())

    def fresh(where: Path, fsync: bool) -> Callable[[], EmbeddedStore]:
        return lambda: EmbeddedStore(where / next(places).name, fsync=fsync)

    def remove(target: object) -> None:
        path = target.folder if isinstance(target, EmbeddedStore) else target
        if isinstance(path, Path):
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    operations: dict[str, tuple[Callable[[], object], Callable[[Any], object]]] = {
        "sha256": (lambda: None, lambda _: hashlib.sha256(data).digest()),
        "cid": (lambda: None, lambda _: file_cid(data)),
        "write": (lambda: next(places), lambda path: path.write_bytes(data)),
        "put": (fresh(scratch, fsync=False), lambda store: store.put(data)),
        "enc-put": (
            fresh(scratch, fsync=False),
            lambda store: store.put(encrypt_checkpoint_stream(key, data)),
        ),
        "get": (lambda: None, lambda _: reader.get(cid)),
        "dec-get": (lambda: None, lambda _: decrypt_checkpoint_stream(key, reader.get_pieces(enc_cid))),
        # last: its disk writes otherwise slow whichever operation follows it (measured: enc-put +60%
        # of CPU at 1 MiB right after it, +35% elsewhere)
        "put-durable": (fresh(disk, fsync=True), lambda store: store.put(data)),
    }
    seconds = dict.fromkeys(operations, float("inf"))
    cpu = dict.fromkeys(operations, float("inf"))
    for _ in range(REPS[size_mib]):
        for name, (setup, run) in operations.items():
            prepared = setup()
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            run(prepared)
            cpu[name] = min(cpu[name], time.process_time() - cpu_start)
            seconds[name] = min(seconds[name], time.perf_counter() - wall_start)
            remove(prepared)
    row: dict[str, float] = {"size_mib": size_mib, "load_average_1min": round(os.getloadavg()[0], 2)}
    row.update({f"{name}_MBps": round(size_mib * MiB / 1e6 / s, 1) for name, s in seconds.items()})
    row["put_vs_sha256"] = round(seconds["sha256"] / seconds["put"], 3)
    # a put must hash and write every byte; it overlaps the two (writer thread), so the slower of
    # the two baselines bounds it on this machine
    row["put_ceiling_vs_sha256"] = round(seconds["sha256"] / max(seconds["sha256"], seconds["write"]), 3)
    row["put_durable_vs_sha256"] = round(seconds["sha256"] / seconds["put-durable"], 3)
    row["encryption_adds_to_put"] = round(seconds["enc-put"] / seconds["put"] - 1, 3)
    row["encryption_adds_to_get"] = round(seconds["dec-get"] / seconds["get"] - 1, 3)
    # The same ratios from CPU time (user + system of this process): on a shared machine they
    # are not inflated by time spent waiting for a core. Durable put waits on the disk: wall only.
    row["cpu_put_vs_sha256"] = round(cpu["sha256"] / cpu["put"], 3)
    row["cpu_encryption_adds_to_put"] = round(cpu["enc-put"] / cpu["put"] - 1, 3)
    row["cpu_encryption_adds_to_get"] = round(cpu["dec-get"] / cpu["get"] - 1, 3)
    return row


def fixed_costs(scratch: Path) -> dict[str, float]:
    """CPU microseconds of a put whose bytes cost nothing: 64-byte chunks, so a 256-byte put has the
    blocks of a 1 MiB put (4 leaves + root), and its encryption those of an encrypted one (the
    41 bytes of header and tag make a fifth leaf) plus the cipher set-up. What remains is the
    per-put and per-block work: file creates, renames, the existence check, the pin, the lock."""
    tiny = Profile(chunk_size=64)
    key = StageKey.generate(model_id=1, stage=0)
    stores = (EmbeddedStore(scratch / f"fixed{i}", fsync=False, profile=tiny) for i in itertools.count())
    blobs: dict[str, Callable[[], object]] = {
        "put_1_block": lambda: os.urandom(64),
        "put_5_blocks": lambda: os.urandom(256),
        "enc_put_6_blocks": lambda: encrypt_checkpoint_stream(key, os.urandom(256), piece_size=64),
    }
    best = dict.fromkeys(blobs, float("inf"))
    for _ in range(FIXED_REPS):
        for name, blob in blobs.items():
            store, data = next(stores), blob()
            start = time.process_time()
            store.put(data)
            best[name] = min(best[name], time.process_time() - start)
            shutil.rmtree(store.folder)
    return {f"{name}_cpu_us": round(seconds * 1e6, 1) for name, seconds in best.items()}


def main() -> None:
    load_before = round(os.getloadavg()[0], 2)
    memory = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    scratch = Path(tempfile.mkdtemp(prefix="pm-bench-storage-", dir=memory))
    disk = Path(tempfile.mkdtemp(prefix="pm-bench-storage-", dir=os.environ.get("PM_BENCH_DIR", ".")))
    try:
        rows = [measure(size, scratch / str(size), disk / str(size)) for size in SIZES_MIB]
        fixed = fixed_costs(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
    targets = {"put_vs_sha256_min": 0.5, "encryption_adds_max": 0.3}
    report = {
        "benchmark": "storage",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "openssl": openssl.openssl_version_text(),
            "store_folder": f"{scratch.parent} (put-durable: {disk.parent})",
            "load_average_1min_before": load_before,
            "load_average_1min_after": round(os.getloadavg()[0], 2),
        },
        "targets": targets,
        "met": {
            f"{clock}{name}": all(ok(r[f"{clock}{name}"]) for r in rows)
            for clock in ("", "cpu_")
            for name, ok in [
                ("put_vs_sha256", lambda v: v >= targets["put_vs_sha256_min"]),
                ("encryption_adds_to_put", lambda v: v <= targets["encryption_adds_max"]),
                ("encryption_adds_to_get", lambda v: v <= targets["encryption_adds_max"]),
            ]
        },
        "checks": [check(rows, *spec) for spec in CHECKS],
        "fixed_costs": fixed,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows))
    print(f"fixed costs (CPU us, no bytes to hash or write): {fixed}")
    print(f"targets met: {report['met']}  -> {RESULTS}")


CHECKS = [
    ("put throughput / sha256 throughput", "put_vs_sha256", ">= 0.5", lambda v: v >= 0.5, min),
    ("time encryption adds to a put", "encryption_adds_to_put", "<= +30%", lambda v: v <= 0.3, max),
    ("time decryption adds to a get", "encryption_adds_to_get", "<= +30%", lambda v: v <= 0.3, max),
]


def check(
    rows: list[dict[str, float]], what: str, key: str, target: str, ok: Callable, worst: Callable
) -> dict:
    """One target over every size, in the shape bench/report.py collects: met when every size
    meets it on the wall clock; the worst size's wall and CPU figures beside it."""
    bad = worst(rows, key=lambda row: row[key])
    return {
        "operation": f"{what}, 1 MiB-1 GiB (wall)",
        "target": target,
        "target_met": all(ok(row[key]) for row in rows),
        "worst_wall": bad[key],
        "worst_size_mib": bad["size_mib"],
        "cpu_at_that_size": bad[f"cpu_{key}"],
    }


def table(rows: list[dict[str, float]]) -> str:
    columns = ["sha256", "cid", "write", "put", "put-durable", "get", "enc-put", "dec-get"]
    lines = [
        "| MiB | "
        + " | ".join(f"{c} MB/s" for c in columns)
        + " | put/sha256 (cpu) | ceiling | enc adds to put (cpu) | dec adds to get (cpu) |",
        "|---:" * (len(columns) + 5) + "|",
    ]
    for r in rows:
        cells = [f"{r[f'{c}_MBps']:.0f}" for c in columns]
        ratios = [
            f"{r['put_vs_sha256']:.2f} ({r['cpu_put_vs_sha256']:.2f})",
            f"{r['put_ceiling_vs_sha256']:.2f}",
            f"{r['encryption_adds_to_put']:+.0%} ({r['cpu_encryption_adds_to_put']:+.0%})",
            f"{r['encryption_adds_to_get']:+.0%} ({r['cpu_encryption_adds_to_get']:+.0%})",
        ]
        lines.append(f"| {r['size_mib']} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
